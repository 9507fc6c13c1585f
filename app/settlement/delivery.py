"""How much of each trade was delivered: pure arithmetic on metered slot energies.

delivered = the contracted quantity, limited by what the seller's site exported and what the buyer's site
imported in the slot, shared pro rata over each party's trades of the slot. A buyer without a site counts
as having imported what they bought. Integer Wh, rounded down: nobody is paid for energy not measured.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass


@dataclass(frozen=True)
class TradeTerms:
    trade_id: str
    quantity_wh: int
    seller_site: int | None
    buyer_site: int | None  # None: a consumer without a site


def _shares(trades: list[TradeTerms], key: str, measured: dict[int, int]) -> dict[str, int]:
    by_site: dict[int, list[TradeTerms]] = defaultdict(list)
    out: dict[str, int] = {}
    for t in trades:
        site = getattr(t, key)
        if site is None:
            out[t.trade_id] = t.quantity_wh
        else:
            by_site[site].append(t)
    for site, items in by_site.items():
        contracted = sum(t.quantity_wh for t in items)
        available = min(measured.get(site, 0), contracted)
        for t in items:
            out[t.trade_id] = t.quantity_wh * available // contracted if contracted else 0
    return out


def delivered_wh(
    trades: list[TradeTerms], exported: dict[int, int], imported: dict[int, int]
) -> dict[str, int]:
    seller = _shares(trades, "seller_site", exported)
    buyer = _shares(trades, "buyer_site", imported)
    return {t.trade_id: min(seller[t.trade_id], buyer[t.trade_id], t.quantity_wh) for t in trades}


def settlement_amounts(
    quantity_wh: int, price: int, delivered: int, penalty_bps: int
) -> tuple[int, int, int]:
    """(to seller, to buyer, penalty): the contract's `settlementAmounts`, reproduced exactly."""
    value = quantity_wh * price // 1000
    earned = delivered * price // 1000
    penalty = (value - earned) * penalty_bps // 10_000
    penalty = min(penalty, earned)
    to_seller = earned - penalty
    return to_seller, value - to_seller, penalty
