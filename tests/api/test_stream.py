from __future__ import annotations

from eth_account import Account
from fastapi.testclient import TestClient

from app.context import Context
from tests.api.helpers import admin_headers, idem
from tests.api.wallet_helpers import PIN, fund, user_with_custodial_wallet, wait_final


def _events(client: TestClient, headers: dict[str, str], **params: object) -> list[tuple[int, str]]:
    r = client.get("/api/v1/stream", params={"once": True, **params}, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    out = []
    for block in r.text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":")
        )
        if "id" in fields:
            out.append((int(fields["id"]), fields["event"]))
    return out


def test_stream_delivers_own_events_and_resumes_after_last_event_id(client: TestClient, ctx: Context) -> None:
    admin = admin_headers(client, ctx)
    _u, headers, addr = user_with_custodial_wallet(client)
    fund(client, admin, addr, "1")
    t = client.post(
        "/api/v1/transfers",
        json={"to": Account.create().address, "amount": "1"},
        headers={**headers, **idem()},
    )
    client.post(f"/api/v1/transfers/{t.json()['id']}/authorize", json={"pin": PIN}, headers=headers)
    assert wait_final(client, headers, t.json()["id"])["status"] == "confirmed"
    events = _events(client, headers, last_event_id=0)
    assert [k for _, k in events] == ["transfer.step"] * 7
    ids = [i for i, _ in events]
    assert ids == sorted(ids)
    # reconnecting with Last-Event-ID gets exactly what came after it
    rest = _events(client, {**headers, "Last-Event-ID": str(ids[2])})
    assert [i for i, _ in rest] == ids[3:]
    # the token may come in the query string (EventSource cannot set headers)
    token = headers["Authorization"].removeprefix("Bearer ")
    assert [i for i, _ in _events(client, {}, access_token=token, last_event_id=ids[-2])] == ids[-1:]
    # nobody else sees these events
    _o, other, _ = user_with_custodial_wallet(client)
    assert _events(client, other, last_event_id=0) == []


def test_stream_needs_a_token(client: TestClient) -> None:
    assert client.get("/api/v1/stream?once=true").status_code == 401
    assert client.get("/api/v1/stream?once=true&access_token=nonsense").status_code == 401
