"""The collector's site tables (site.py), until they move next to the collector."""
