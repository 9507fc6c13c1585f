"""The public book's levels kept in memory (`app/market/levels.py`) against the GROUP BY they replace,
read between random placements, cancels, direct offers and matching passes, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.market import engine, levels
from tests.market.test_live_book import SLOTS, matching_pass, place_and_cancel, users


class _Ctx(SimpleNamespace):
    """What the matcher and the levels need of a Context."""


def test_the_kept_levels_answer_what_a_group_by_answers(clean_db: Engine) -> None:
    rng = random.Random(7)
    owners = users(clean_db, 5)
    ctx: Any = _Ctx(market_books=None, public_levels=None)
    kept = levels.for_context(ctx)
    assert levels.for_context(ctx) is kept
    for round_no in range(10):
        place_and_cancel(clean_db, rng, owners, placed=rng.randrange(1, 20), cancelled=rng.randrange(0, 4))
        if round_no % 2:
            matching_pass(clean_db, ctx)  # fills change open quantities and statuses
        for slot in SLOTS:
            with Session(clean_db) as s:
                want = engine.book_levels(s, slot)
                assert want["bids"] or want["asks"] or round_no == 0
                assert kept.read(s.connection(), slot) == want, f"round {round_no}"
    with Session(clean_db) as s:  # a reader that starts afresh (another process) agrees
        assert [levels.PublicLevels().read(s.connection(), slot) for slot in SLOTS] == [
            kept.read(s.connection(), slot) for slot in SLOTS
        ]
