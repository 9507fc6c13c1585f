"""Crash points for the crash-safety tests: ESSX_CRASH_AT=name kills the process there, abruptly.

The tests start a real service process with this variable and check that a restart finishes the work
exactly once. In normal runs the variable is unset and this is a dictionary lookup.
"""

from __future__ import annotations

import os


def crash_point(name: str) -> None:
    if os.environ.get("ESSX_CRASH_AT") == name:
        os._exit(137)  # like SIGKILL: no cleanup, no flush, no finally blocks
