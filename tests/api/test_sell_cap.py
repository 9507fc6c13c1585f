"""The market's cap on sell orders through the API: a site's battery sells each Wh once, within its power."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.context import Context
from app.core.security import utcnow
from app.market.service import rules
from tests.api.helpers import admin_headers, idem
from tests.api.market_helpers import charge_battery, prosumer_with_site


def _seller(client: TestClient, ctx: Context) -> tuple[dict[str, str], int]:
    """A prosumer whose 10 kWh battery holds 90 % (reserve 10 %) and whose PV is negligible (1 W), so
    each slot's expected load (the default 500 W, 125 Wh) comes from the battery."""
    _user, headers, site_id, _address = prosumer_with_site(
        client, admin_headers(client, ctx), pv_nameplate_w=1
    )
    charge_battery(ctx, site_id)
    return headers, site_id


def _sell(client: TestClient, headers: dict[str, str], site_id: int, slot: str, wh: int):  # type: ignore[no-untyped-def]
    order = {"side": "sell", "slot_start": slot, "quantity_wh": wh, "limit_price": "150", "site_id": site_id}
    return client.post("/api/v1/orders", json=order, headers={**headers, **idem()})


def _slots(ctx: Context) -> list[str]:
    r = rules(ctx)
    first = r.slot_of(utcnow()) + 2 * r.slot
    return [(first + k * r.slot).isoformat() for k in range(3)]


def test_a_sell_never_exceeds_the_battery_power_in_its_slot(client: TestClient, ctx: Context) -> None:
    """At 0.5 C the 10 kWh battery gives 5 kW, 1,250 Wh a 15-minute slot; the household takes 125 Wh."""
    headers, site_id = _seller(client, ctx)
    a, b, _ = _slots(ctx)
    assert _sell(client, headers, site_id, a, 1000).status_code == 201
    too_much = _sell(client, headers, site_id, a, 126)
    assert too_much.status_code == 422, too_much.text
    err = too_much.json()
    assert err["error"] == "ExceedsSupply"
    assert "at most 125 Wh more" in err["detail"] and "1000 Wh it already sells" in err["detail"]
    assert _sell(client, headers, site_id, a, 125).status_code == 201
    assert _sell(client, headers, site_id, b, 1125).status_code == 201  # the next slot has its own power


def test_energy_sold_in_one_slot_is_not_sold_again(
    client: TestClient, ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With power no limit (10 C), the first slot can take the whole battery above its reserve after the
    household's load of the slots before it and losses; then the next slots can sell nothing, and a sell
    in a later slot keeps its energy from the earlier one. The old estimate allowed 8 kWh in each."""
    monkeypatch.setattr(ctx.settings, "site_battery_power_pct", 1000)
    headers, site_id = _seller(client, ctx)
    a, b, c = _slots(ctx)
    # stored 9,000 Wh less two slots' load (2 x 132 Wh drawn) = 8,736; down to 1,000 at 95 %: 7,349 out,
    # 125 of them to the household
    assert _sell(client, headers, site_id, a, 7225).json()["error"] == "ExceedsSupply"
    assert _sell(client, headers, site_id, a, 7224).status_code == 201
    refused = _sell(client, headers, site_id, b, 1)
    assert refused.status_code == 422 and "at most 0 Wh more" in refused.json()["detail"]
    assert _sell(client, headers, site_id, c, 1).status_code == 422


def test_a_later_sell_keeps_its_energy_from_an_earlier_slot(
    client: TestClient, ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ctx.settings, "site_battery_power_pct", 1000)
    headers, site_id = _seller(client, ctx)
    a, _, c = _slots(ctx)
    first = _sell(client, headers, site_id, c, 6900)
    assert first.status_code == 201, first.text
    left = _sell(client, headers, site_id, a, 1000)
    assert left.status_code == 422, left.text
    assert _sell(client, headers, site_id, a, 50).status_code == 201  # what c leaves: about 73 Wh
