from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import Session, select

from app.audit.models import AuditEntry
from app.audit.service import verify
from app.context import Context
from app.indexer.models import TransferEvent
from app.indexer.service import catch_up, reindex
from contracts.deploy import AlreadyDeployed, deploy
from tests.api.helpers import admin_headers, idem


def _mint(client: TestClient, admin: dict[str, str], to: str, amount: str) -> None:
    r = client.post("/api/v1/admin/coin/mint", json={"to": to, "amount": amount}, headers={**admin, **idem()})
    assert r.status_code == 200, r.text


def test_indexer_is_idempotent_and_rebuilds_from_the_chain(
    client: TestClient, ctx: Context, dev_accounts
) -> None:
    admin = admin_headers(client, ctx)
    to = dev_accounts[1].address
    for amount in ("1", "2", "3"):
        _mint(client, admin, to, amount)
    catch_up(ctx)
    catch_up(ctx)  # a second pass stores nothing twice
    with Session(ctx.engine) as s:
        events = s.exec(select(TransferEvent).where(TransferEvent.to_address == to)).all()
    assert sorted(e.value for e in events) == [10**18, 2 * 10**18, 3 * 10**18]
    assert reindex(ctx) >= 3
    with Session(ctx.engine) as s:
        again = s.exec(select(TransferEvent).where(TransferEvent.to_address == to)).all()
    assert sorted((e.tx_hash, e.log_index) for e in again) == sorted((e.tx_hash, e.log_index) for e in events)
    page = client.get(f"/api/v1/accounts/{to}/transfers?limit=2", headers=admin).json()
    assert [t["value"] for t in page["items"]] == ["3", "2"]  # newest first


def test_audit_chain_detects_tampering(client: TestClient, ctx: Context, dev_accounts) -> None:
    admin = admin_headers(client, ctx)
    _mint(client, admin, dev_accounts[1].address, "1")
    _mint(client, admin, dev_accounts[1].address, "2")
    with Session(ctx.engine) as s:
        assert verify(s) == (True, None)
        first = s.exec(select(AuditEntry).order_by(AuditEntry.seq)).first()
        assert first is not None
        s.exec(update(AuditEntry).where(AuditEntry.seq == first.seq).values(outcome="forged"))  # type: ignore[call-overload]
        s.commit()
        assert verify(s) == (False, first.seq)
    body = client.get("/api/v1/admin/audit", headers=admin).json()
    assert body["chain_intact"] is False


def test_a_second_deployment_never_happens_silently(ctx: Context, dev_accounts, tmp_path: Path) -> None:
    directory = ctx.settings.deployment_dir
    with pytest.raises(AlreadyDeployed, match="already deployed"):
        deploy(
            ctx.w3, dev_accounts[0], network="local", directory=directory, token_name="E", token_symbol="E"
        )
    fresh = deploy(
        ctx.w3, dev_accounts[0], network="local", directory=tmp_path, token_name="E", token_symbol="E"
    )
    assert (tmp_path / "31337.json").exists() and fresh.contracts["EnergyCoin"] != ctx.coin.address
