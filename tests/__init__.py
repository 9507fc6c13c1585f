import wallet  # noqa: F401  (first, as in the service: it puts back the recursion limit py_ecc raises on import)
