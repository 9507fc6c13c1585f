# ruff: noqa: F401  (imported for their tables)
"""Every table module, imported in one place so Alembic, the migration test and the app see the same
metadata (`SQLModel.metadata`). A new table module is added here (tests/test_migrations.py checks)."""

import app.audit.models
import app.coin.models
import app.events.models
import app.idempotency.models
import app.indexer.models
import app.market.models
import app.trading.models
import app.transfers.models
import app.users.models
import app.wallets.models
import common.lease
import ess_collector.dispatch_records
import ess_collector.models
import wallet.models
