from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.market.tariff import COIN, DEFAULT, TariffSchedule


def test_band_follows_time_of_use_and_season() -> None:
    winter_noon_kst = datetime(2026, 1, 10, 3, 0, tzinfo=UTC)  # 12:00 in Seoul
    winter_night_kst = datetime(2026, 1, 10, 15, 0, tzinfo=UTC)  # 00:00 in Seoul
    assert DEFAULT.period(winter_noon_kst).name == "peak"
    assert DEFAULT.period(winter_night_kst).name == "off_peak"
    assert DEFAULT.floor(winter_noon_kst) == 115 * COIN > DEFAULT.floor(winter_night_kst) == 85 * COIN
    assert DEFAULT.ceiling(winter_noon_kst) == 3073 * COIN // 10
    for when in (winter_noon_kst, winter_night_kst):
        assert DEFAULT.floor(when) < DEFAULT.ceiling(when)


def test_progressive_tiers_with_wider_summer_tiers() -> None:
    january = datetime(2026, 1, 10, tzinfo=UTC)
    july = datetime(2026, 7, 10, tzinfo=UTC)
    assert DEFAULT.retail_price(january, 150) == 120 * COIN
    assert DEFAULT.retail_price(january, 250) == 2146 * COIN // 10
    assert DEFAULT.retail_price(july, 250) == 120 * COIN  # summer: tier 1 goes to 300 kWh
    assert DEFAULT.tier_index(january, 401) == 3


def test_schedules_are_validated() -> None:
    good = {
        "tiers": [{"up_to_kwh": 100, "price": 10}, {"up_to_kwh": None, "price": 20}],
        "periods": [{"name": "all", "start_hour": 0, "end_hour": 0, "feed_in_price": 5}],
    }
    assert TariffSchedule.from_json(good).floor(datetime(2026, 1, 1, tzinfo=UTC)) == 5
    with pytest.raises(ValueError, match="24 hours"):
        TariffSchedule.from_json(
            {**good, "periods": [{"name": "day", "start_hour": 8, "end_hour": 20, "feed_in_price": 5}]}
        )
    with pytest.raises(ValueError, match="below every retail"):
        TariffSchedule.from_json(
            {**good, "periods": [{"name": "all", "start_hour": 0, "end_hour": 0, "feed_in_price": 15}]}
        )
