"""ESS sites: registration, the collector's data views, slot proofs and supply estimates."""
