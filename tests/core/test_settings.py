from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.config import Settings
from wallet.chain import ChainIdMismatch, check_chain_id, connect


def test_placeholder_secrets_refused_outside_local(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="JWT_SECRET"):
        Settings(chain="kairos", data_dir=tmp_path)
    with pytest.raises(ValidationError, match="SERVICE_KEYSTORE"):
        Settings(chain="kairos", jwt_secret="x" * 40, wallet_master_key="y" * 40, data_dir=tmp_path)  # type: ignore[arg-type]


def test_local_placeholder_becomes_a_random_secret_kept_in_the_data_folder(tmp_path: Path) -> None:
    a = Settings(data_dir=tmp_path).secret("jwt_secret")
    assert len(a) == 64 and a == Settings(data_dir=tmp_path).secret("jwt_secret")
    assert Settings(data_dir=tmp_path / "other").secret("jwt_secret") != a


def test_network_defaults_and_custom() -> None:
    assert (
        Settings(
            chain="kairos", jwt_secret="x" * 40, wallet_master_key="y", service_keystore="k.json"
        ).expected_chain_id
        == 1001
    )  # type: ignore[arg-type]
    s = Settings(
        chain="custom",
        rpc_urls="http://a:1, http://b:2",
        chain_id=8217,
        jwt_secret="x" * 40,
        wallet_master_key="y",
        service_keystore="k.json",
    )  # type: ignore[arg-type]
    assert s.chain_urls == ["http://a:1", "http://b:2"] and s.expected_chain_id == 8217


def test_wrong_chain_id_is_refused(anvil_url: str) -> None:
    with pytest.raises(ChainIdMismatch):
        check_chain_id(connect([anvil_url]), 1001)


def test_rpc_failover_to_the_next_url(anvil_url: str) -> None:
    w3 = connect(["http://127.0.0.1:9", anvil_url], timeout=2)
    assert w3.eth.chain_id == 31337


def test_rpc_urls_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's comma-separated form, read from the environment (pydantic-settings would decode it as
    JSON first and refuse it), and a JSON list."""
    monkeypatch.setenv("ESSX_RPC_URLS", "http://a:1, http://b:2")
    assert Settings().rpc_urls == ["http://a:1", "http://b:2"]
    monkeypatch.setenv("ESSX_RPC_URLS", '["http://c:3"]')
    assert Settings().rpc_urls == ["http://c:3"]
