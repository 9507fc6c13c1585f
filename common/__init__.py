"""The bottom layer: generic parts that wallet/, ess_collector/ and app/ share; it imports none of them."""
