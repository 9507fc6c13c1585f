"""Crash points for the crash-safety tests: ESSX_CRASH_AT=name kills the process there, abruptly.

The tests start a real service process with this variable and check that a restart finishes the work
exactly once. In normal runs the variable is unset and this is a dictionary lookup.
"""

from wallet.relayer import crash_point

__all__ = ["crash_point"]
