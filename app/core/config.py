"""One typed settings object, read from ESSX_* environment variables and an optional .env file."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, PrivateAttr, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.core.db import private_dir, write_private
from ess_collector.netpolicy import DEFAULT_SITE_NETWORKS_TEXT, IPNetwork, parse_networks
from wallet.localchain import LOCAL_CHAIN_ID

PLACEHOLDER = "change-me"
PROJECT_ROOT = Path(__file__).resolve().parents[2]

NETWORKS: dict[str, tuple[int, list[str]]] = {
    "local": (LOCAL_CHAIN_ID, []),
    "kairos": (1001, ["https://public-en-kairos.node.kaia.io"]),
    "mainnet": (8217, ["https://public-en.node.kaia.io"]),
}

Network = Literal["local", "kairos", "mainnet", "custom"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ESSX_", env_file=".env", extra="ignore")

    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str = ""  # empty: SQLite file in data_dir
    # API worker processes of `essx run`; background workers run in one of them (a database lease)
    workers: int = Field(1, ge=1, le=64)

    # Chain
    chain: Network = "local"
    rpc_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list
    )  # tried in order, failing over to the next
    chain_id: int | None = None  # expected chain id; defaults from the network
    local_chain_port: int = 8545
    local_block_time: float = 1.0  # seconds; 0 = automine
    # The RPC URL browser wallets are offered (wallet_addEthereumChain): default the network's public
    # endpoint, or the local anvil; never ESSX_RPC_URLS, which may carry an API key.
    wallet_rpc_url: str | None = None
    deployments_dir: Path | None = None
    confirmations: int = 1
    tx_timeout_seconds: float = 30.0
    max_fee_gwei: int = 3000  # no fee bump above this (Kaia's base fee is at most 750 gwei)

    # Secrets
    jwt_secret: SecretStr = SecretStr(PLACEHOLDER)
    _local_secrets: dict[str, str] = PrivateAttr(default_factory=dict)  # local-secrets.json, once read
    wallet_master_key: SecretStr = SecretStr(PLACEHOLDER)
    service_keystore: Path | None = None  # encrypted keystore (v3 / Klaytn v4) of the service account
    service_keystore_password: SecretStr | None = None
    service_keystore_password_file: Path | None = None

    # Tokens and users
    access_token_minutes: int = Field(15, ge=1, le=1440)
    refresh_token_days: int = 14
    # Wrong passwords per account and client before each further one waits 1 s, 2 s, 4 s ... (capped):
    # the owner is never locked out from elsewhere (docs: app/users/throttle.py)
    login_backoff_after: int = Field(3, ge=0, le=100)
    login_backoff_max_seconds: int = Field(300, ge=1, le=86_400)
    # One client's wrong passwords over all accounts in a window, against one address trying many accounts
    login_client_max_failures: int = Field(100, ge=1)
    login_window_minutes: int = Field(15, ge=1, le=1440)
    # Proxies whose X-Forwarded-For is believed (comma-separated IPs or CIDRs); empty: no header is
    trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = Field(default_factory=list)
    approval_grant: str = "0"  # coins minted to a prosumer on approval (decimal string)
    token_name: str = "Energy Coin"
    token_symbol: str = "ENC"

    # Operations
    indexer_interval_seconds: float = 1.0
    indexer_batch_blocks: int = 2000
    relayer_min_balance: str = "1"  # native coin, decimal string; below it /readyz reports an alert
    log_json: bool = True

    # Requests
    max_body_bytes: int = Field(1_048_576, ge=1024)  # larger bodies get 413 before they are read

    # ESS collector (docs/collector.md)
    slot_minutes: int = Field(15, ge=5, le=60)  # must divide a day, so slots align to UTC midnight
    poll_interval_seconds: float = Field(5.0, ge=0.2)  # wall seconds; 1 s and more in production
    anchor_grace_seconds: float = Field(60.0, ge=0)
    collector_enabled: bool = False  # run the collector inside the API process (`essx run` turns it on)
    collector_timeout_seconds: float = Field(1.5, gt=0)  # per device and try
    collector_max_backoff_seconds: float = Field(60.0, ge=1)
    collector_comm_lost_polls: int = Field(3, ge=1)
    collector_stale_polls: int = Field(3, ge=1)
    collector_max_gap_seconds: float = Field(60.0, ge=1)
    collector_complete_ratio: float = Field(0.9, gt=0, le=1)
    collector_lease_seconds: float = Field(15.0, ge=3)
    collector_job_seconds: float = Field(10.0, ge=1)  # cadence of aggregation, anchoring and rewards
    site_max_grid_w: int = Field(25_000, gt=0)
    # battery power (charge and discharge) in % of its capacity per hour: caps sells per slot (0.5 C)
    site_battery_power_pct: int = Field(50, ge=1, le=1000)
    site_utc_offset_hours: float = 9.0  # local time of the sites, for the clear-sky PV curve
    site_probe_timeout_seconds: float = Field(1.0, gt=0)  # one read when a site is registered
    # CIDR networks (comma-separated) sites may be in: every address a site's host resolves to must be
    # inside, at registration and at each connection of the collector (docs/collector.md)
    site_networks: str = DEFAULT_SITE_NETWORKS_TEXT
    site_registrations_per_hour: int = Field(10, ge=1)  # per user; admins are not limited
    demo_sites: int = Field(3, ge=0)  # `essx run`: simulated sites started and registered on first start
    # default: the ports of the last run if free, else ports the system picks (app/sites/demo.py)
    demo_sites_base_port: int | None = Field(None, ge=1024, le=65000)
    # set by `essx run` when its simulated sites could not start; /readyz then reports it (not ready)
    demo_sites_failure: str = ""
    production_reward_per_kwh: str = "0"  # coins per kWh of anchored PV minted to the owner; 0 = off

    # Energy time (common/clock.py): simulated = clock_start + clock_speed x (wall - clock_anchor).
    # Unset in production (the wall clock); `essx demo` sets all three for every process it starts.
    clock_speed: float = Field(1.0, gt=0, le=100_000)
    clock_start: datetime | None = None
    clock_anchor: float | None = None  # Unix wall time at which energy time was clock_start

    # Market (docs/market.md)
    gate_closure_minutes: int = Field(5, ge=0, le=30)
    market_horizon_hours: int = Field(24, ge=1, le=168)
    market_mechanism: Literal["continuous", "call"] = "continuous"
    tariff_file: Path | None = None  # JSON tariff schedule; default: Korea's residential tariff
    market_refund_timeout_seconds: int = Field(86_400, ge=3600)  # buyer may reclaim unsettled escrow after
    settlement_penalty_bps: int = Field(0, ge=0, le=10_000)

    @field_validator("slot_minutes")
    @classmethod
    def _slot_divides_day(cls, v: int) -> int:
        if 1440 % v:
            raise ValueError("ESSX_SLOT_MINUTES must divide a day (5, 6, 10, 12, 15, 20, 30, 60, ...)")
        return v

    @field_validator("site_networks")
    @classmethod
    def _cidr_list(cls, v: str) -> str:
        parse_networks(v)  # a clear error at start-up rather than at the first registration
        return v

    @field_validator("rpc_urls", mode="before")
    @classmethod
    def _split_urls(cls, v: object) -> object:
        if isinstance(v, str):  # "a,b" as the README shows, or a JSON list
            text = v.strip()
            if text.startswith("["):
                return json.loads(text)
            return [u.strip() for u in text.split(",") if u.strip()]
        return v

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, v: object) -> object:
        if isinstance(v, str):
            return [ip_network(p.strip(), strict=False) for p in v.split(",") if p.strip()]
        return v

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.chain == "custom" and not self.rpc_urls:
            raise ValueError("ESSX_CHAIN=custom needs ESSX_RPC_URLS")
        if self.chain == "custom" and self.chain_id is None:
            raise ValueError("ESSX_CHAIN=custom needs ESSX_CHAIN_ID")
        if not self.is_local:
            for name in ("jwt_secret", "wallet_master_key"):
                value: SecretStr = getattr(self, name)
                if value.get_secret_value() in ("", PLACEHOLDER):
                    raise ValueError(f"ESSX_{name.upper()} must be set outside local development")
            if self.service_keystore is None:
                raise ValueError(
                    "ESSX_SERVICE_KEYSTORE must name an encrypted keystore outside local development"
                )
        return self

    @property
    def is_local(self) -> bool:
        return self.chain == "local"

    @property
    def expected_chain_id(self) -> int:
        if self.chain_id is not None:
            return self.chain_id
        return NETWORKS[self.chain][0]

    @property
    def chain_urls(self) -> list[str]:
        if self.rpc_urls:
            return self.rpc_urls
        if self.is_local:
            return [f"http://127.0.0.1:{self.local_chain_port}"]
        return NETWORKS[self.chain][1]

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'essx.db').resolve()}"

    @property
    def deployment_dir(self) -> Path:
        """Where deployments/<chain_id>.json lives. The local chain lives in the data folder, so does
        its deployment record: two local instances never share one file."""
        if self.deployments_dir is not None:
            return self.deployments_dir
        if self.is_local:
            return self.data_dir / "deployments"
        return PROJECT_ROOT / "contracts" / "deployments"

    def secret(self, name: str) -> str:
        """A configured secret; on the local chain a placeholder is replaced by a random value kept in
        the data folder, so development needs no set-up and two local instances never share one."""
        value: str = getattr(self, name).get_secret_value()
        if value not in ("", PLACEHOLDER):
            return value
        if not self.is_local:  # unreachable: the validator refuses placeholders outside local
            raise ValueError(f"ESSX_{name.upper()} is not set")
        cached = self._local_secrets.get(name)
        if cached is not None:  # read once: the JWT secret is needed on every request
            return cached
        with self._local_secrets_file() as stored:
            if name not in stored:
                stored[name] = secrets.token_hex(32)
            value = str(stored[name])
        self._local_secrets[name] = value
        return value

    def store_local_secret(self, name: str, value: str) -> None:
        """Replaces a local secret in the data folder (and in memory)."""
        with self._local_secrets_file() as stored:
            stored[name] = value
        self._local_secrets[name] = value

    @contextmanager
    def _local_secrets_file(self) -> Iterator[dict[str, str]]:
        """local-secrets.json read, changed and written under an exclusive lock, replaced atomically: two
        processes starting together agree on one secret, and no reader ever sees a half-written file."""
        path = self.data_dir / "local-secrets.json"
        private_dir(path.parent)
        lock_fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            stored: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
            before = dict(stored)
            yield stored
            if stored != before:
                partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
                write_private(partial, json.dumps(stored))
                os.replace(partial, path)
        finally:
            os.close(lock_fd)  # closing the descriptor releases the lock

    @property
    def site_network_list(self) -> tuple[IPNetwork, ...]:
        return parse_networks(self.site_networks)

    @property
    def chain_state_file(self) -> Path:
        return self.data_dir / "chain" / "anvil-state.json"


@lru_cache
def get_settings() -> Settings:
    return Settings()
