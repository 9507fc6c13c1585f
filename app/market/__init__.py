"""Orders, escrows, matching and trades for delivery slots (the pure matching library is matching/)."""
