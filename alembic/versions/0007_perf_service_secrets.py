"""service secrets: the PIN pepper, sealed under the master key

PINs are checked with HMAC-SHA-256 under this pepper (docs/security.md); existing Argon2id PIN hashes
stay valid and are replaced on their next successful check.

Revision ID: perf_service_secrets
Revises: supply_dispatch_commands
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import common.dbtypes

revision: str = "perf_service_secrets"
down_revision: str | None = "supply_dispatch_commands"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "service_secrets",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("sealed", sa.Text(), nullable=False),
        sa.Column("created_at", common.dbtypes.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("service_secrets")
