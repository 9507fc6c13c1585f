"""The service's long-lived parts, built once at start-up and passed explicitly (no global managers)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from eth_account.signers.local import LocalAccount
from sqlalchemy.engine import Engine
from sqlmodel import Session
from web3 import Web3
from web3.contract import Contract

from app.core.config import Settings
from app.core.db import make_engine
from common import clock
from contracts.artifacts import load_artifact
from contracts.deploy import Deployment, load_deployment
from wallet.chain import check_chain_id, connect
from wallet.purposes import TxPurpose
from wallet.relayer import Relayer
from wallet.service_key import service_account
from wallet.signer import LocalSigner

if TYPE_CHECKING:
    from app.market.rules import MarketRules
    from app.users.models import User
    from app.wallets.models import Wallet

log = logging.getLogger(__name__)


class NotDeployed(RuntimeError):
    pass


class BalanceRead(NamedTuple):
    """One eth_call of a wallet's coin balance. `read_before`: wall time taken before the call, so every
    spend mined after the read is recorded by us after it (app/spending/holds.py); `at`: monotonic time
    of the answer, for its age."""

    value: int
    read_before: datetime
    at: float


@dataclass
class ChainCache:
    """What this process read from the chain and may reuse: static for the coin's name and metadata,
    (value, monotonic time it was read) for what changes."""

    coin_static: dict[str, Any] = field(default_factory=dict)  # name, symbol, decimals
    coin_name: str | None = None
    paused: tuple[bool, float] | None = None
    chain_now: tuple[int, float] | None = None
    coin_info: tuple[Any, float] | None = None  # (CoinInfo, read at): GET /coin's answer (app/coin)
    # checksum address -> its latest balance read (app/coin/service.py balance_now, the only writer)
    balances: dict[str, BalanceRead] = field(default_factory=dict)
    minter_seen: float | None = None  # monotonic time the relayer was last seen holding the minter role


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
    cache: ChainCache = field(default_factory=ChainCache)
    market_rules: MarketRules | None = None  # built from the settings on first use
    # Set while this process holds the background lease (app/main.py): fences background commits.
    background_fence: Callable[[Session], None] | None = None
    # The batcher's wake-up when a batcher may run in this process; None: authorisations batch inline.
    batcher_wake: threading.Event | None = None
    market_wake: threading.Event = field(default_factory=threading.Event)
    transfer_batch_lock: threading.Lock = field(default_factory=threading.Lock)
    market_lock: threading.RLock = field(default_factory=threading.RLock)
    trading_last_pass: tuple[float, datetime] | None = None  # app/trading/agent.py: (monotonic, energy time)
    trading_resume_after: int = 0  # app/trading/agent.py: the last user of a pass cut short by a gate closure
    trading_gate_seen: datetime | None = None  # app/trading/agent.py: the latest gate closure it let pass
    market_books: Any = None  # app/market/book.py's LiveBooks, in the process holding the background lease
    public_levels: Any = None  # app/market/levels.py's PublicLevels: the book's public price levels
    # slot start -> (monotonic time read, its book levels): app/market/engine.py's recent_book_levels
    market_levels: dict[datetime, tuple[float, Any]] = field(default_factory=dict)
    service_secrets: dict[str, bytes] = field(default_factory=dict)  # opened once (app/wallets/pins.py)
    # What follows a wallet's creation or linking in the caller's transaction: paying a pending approval
    # grant (app/coin/grants.py, wired by app/main.py; the wallets domain sits below the coin's).
    on_wallet_added: Callable[[Context, Session, User, Wallet], object] | None = None

    @property
    def chain_id(self) -> int:
        return self.deployment.chain_id

    def wallet_added(self, session: Session, user: User, wallet: Wallet) -> None:
        if self.on_wallet_added is None:  # a grant must not be skipped silently
            raise RuntimeError("Context.on_wallet_added is not wired (app/main.py create_app does it)")
        self.on_wallet_added(self, session, user, wallet)

    def commit_background(self, session: Session) -> None:
        """Commits a background worker's transaction, fenced by the background lease when this process
        holds it (several API processes, docs/architecture.md): once another process leads, it raises
        ``LeaseLost`` instead of writing beside the new leader."""
        if self.background_fence is not None:
            self.background_fence(session)
        session.commit()

    def close(self) -> None:
        self.relayer.stop()
        self.engine.dispose()


def build_context(
    settings: Settings, *, engine: Engine | None = None, relay_kinds: frozenset[TxPurpose] | None = None
) -> Context:
    """Connects to the chain, refuses a wrong chain id, loads the deployment; raises if anything is off.
    ``relay_kinds``: the purpose kinds this process's relayer acts on (None: all, the service)."""
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
    # The relayer signs through the Signer interface; the local signer wraps the service key.
    signer = LocalSigner(account, chain_id=chain_id, allowed_contracts=deployment.contracts.values())
    relayer = Relayer(
        engine,
        w3,
        signer,
        chain_id,
        replace_after=settings.tx_timeout_seconds,
        max_fee=settings.max_fee_gwei * 10**9,
        confirmations=settings.confirmations,
        kinds=relay_kinds,
    )
    contracts = {
        name: w3.eth.contract(address=Web3.to_checksum_address(address), abi=load_artifact(name).abi)
        for name, address in deployment.contracts.items()
    }
    return Context(settings, engine, w3, account, relayer, deployment, contracts["EnergyCoin"], contracts)
