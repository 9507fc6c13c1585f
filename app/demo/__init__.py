"""`essx demo`: a simulated community trading for a day, through the public API (docs/demo.md)."""
