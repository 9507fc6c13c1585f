"""The service's long-lived parts, built once at start-up and passed explicitly (no global managers)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from eth_account.signers.local import LocalAccount
from sqlalchemy.engine import Engine
from sqlmodel import Session
from web3 import Web3
from web3.contract import Contract

from app.core import clock
from app.core.config import Settings
from app.core.db import make_engine
from contracts.artifacts import load_artifact
from contracts.deploy import Deployment, load_deployment
from wallet.chain import check_chain_id, connect
from wallet.relayer import Relayer
from wallet.service_key import service_account

log = logging.getLogger(__name__)


class NotDeployed(RuntimeError):
    pass


@dataclass
class Context:
    settings: Settings
    engine: Engine
    w3: Web3
    account: LocalAccount
    relayer: Relayer
    deployment: Deployment
    coin: Contract
    contracts: dict[str, Contract] = field(default_factory=dict)  # every deployed contract by name
    extras: dict[str, Any] = field(default_factory=dict)
    service_secrets: dict[str, bytes] = field(default_factory=dict)  # opened once (app/wallets/pins.py)

    @property
    def chain_id(self) -> int:
        return self.deployment.chain_id

    def commit_background(self, session: Session) -> None:
        """Commits a background worker's transaction, fenced by the background lease when this process
        holds it (several API processes, docs/architecture.md): once another process leads, it raises
        ``LeaseLost`` instead of writing beside the new leader."""
        fence = self.extras.get("background_fence")
        if fence is not None:
            fence(session)
        session.commit()

    def close(self) -> None:
        self.relayer.stop()
        self.engine.dispose()


def build_context(settings: Settings, *, engine: Engine | None = None) -> Context:
    """Connects to the chain, refuses a wrong chain id, loads the deployment; raises if anything is off."""
    clock.configure_from(settings)
    w3 = connect(settings.chain_urls)
    chain_id = check_chain_id(w3, settings.expected_chain_id)
    deployment = load_deployment(settings.deployment_dir, chain_id)
    if deployment is None:
        raise NotDeployed(
            f"no deployment for chain {chain_id} in {settings.deployment_dir}: run `essx deploy --network "
            f"{settings.chain}`"
        )
    account = service_account(
        is_local=settings.is_local,
        keystore=settings.service_keystore,
        password=(
            settings.service_keystore_password.get_secret_value()
            if settings.service_keystore_password
            else None
        ),
        password_file=settings.service_keystore_password_file,
    )
    engine = engine or make_engine(settings.sqlalchemy_url)
    relayer = Relayer(
        engine,
        w3,
        account,
        chain_id,
        replace_after=settings.tx_timeout_seconds,
        confirmations=settings.confirmations,
    )
    contracts = {
        name: w3.eth.contract(address=Web3.to_checksum_address(address), abi=load_artifact(name).abi)
        for name, address in deployment.contracts.items()
    }
    return Context(settings, engine, w3, account, relayer, deployment, contracts["EnergyCoin"], contracts)
