"""The market's matching mechanisms as pure logic: no database, web framework or chain in here.

types.py: orders, fills, book levels and the money rules of a fill; continuous.py: the continuous
pay-as-bid book; auction.py: the uniform-price call auction; pairing.py: pairing an auction's allocations
into fills without self-trades."""
