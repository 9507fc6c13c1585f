"""Solidity sources, build artefacts and deployment."""

import wallet  # noqa: F401  (first: it puts back the recursion limit py_ecc raises on import)
