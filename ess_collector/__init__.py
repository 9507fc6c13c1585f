"""The ESS collector: Modbus polling, validation, slot energies and anchoring."""

import wallet  # noqa: F401  (first: it puts back the recursion limit py_ecc raises on import)
