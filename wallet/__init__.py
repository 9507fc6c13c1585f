"""Chain access, keys, signing and relaying (see the README's map).

py_ecc, which eth-keyfile imports (and so eth-account and web3), raises the interpreter's recursion limit to
100,000 when it is first imported, for the whole process. Deep recursion then overflows the C stack and
kills the process (SIGSEGV) instead of raising RecursionError. It is imported here first and the limit put
back; nothing we use needs it (py_ecc's BLS code serves eth-keyfile's EIP-2335 keystores only, which we
never read or write). Our other packages import this one before any Ethereum library.
"""

import sys as _sys

_limit = _sys.getrecursionlimit()
import py_ecc  # noqa: E402, F401

_sys.setrecursionlimit(_limit)
