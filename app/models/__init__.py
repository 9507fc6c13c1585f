"""All tables, imported in one place so Alembic and the app see the same metadata."""

from app.models.audit import AuditEntry, AuditHead
from app.models.coin import CoinOperation, IndexerCheckpoint, TransferEvent
from app.models.event import UserEvent
from app.models.idempotency import IdempotencyRecord
from app.models.market import Order, Trade
from app.models.site import (
    JobLease,
    LedgerSlot,
    ProductionReward,
    Site,
    SiteEvent,
    SiteFault,
    SiteReading,
    SlotEnergy,
)
from app.models.transfer import LinkChallenge, Transfer, TransferStep, UserTotp
from app.models.user import LoginThrottle, RefreshToken, RevokedTokenFamily, Role, User, UserStatus
from app.models.wallet import Wallet
from app.trading.models import AgentActivity, AgentOrder, TradingProfile  # noqa: F401  (registers the tables)
from wallet.models import NonceCounter, OutgoingTx, TxAttempt

__all__ = [
    "AuditEntry",
    "AuditHead",
    "CoinOperation",
    "IdempotencyRecord",
    "IndexerCheckpoint",
    "JobLease",
    "LedgerSlot",
    "LinkChallenge",
    "LoginThrottle",
    "NonceCounter",
    "Order",
    "OutgoingTx",
    "ProductionReward",
    "RefreshToken",
    "RevokedTokenFamily",
    "Role",
    "Site",
    "SiteEvent",
    "SiteFault",
    "SiteReading",
    "SlotEnergy",
    "Trade",
    "Transfer",
    "TransferEvent",
    "TransferStep",
    "TxAttempt",
    "User",
    "UserEvent",
    "UserStatus",
    "UserTotp",
    "Wallet",
]
