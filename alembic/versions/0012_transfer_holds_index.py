"""transfers: an index for a wallet's transfers by status (the spending check of every transfer and buy
order sums the wallet's authorised transfers; with only the from_address index it read every transfer the
wallet ever sent). It replaces that index (its first column serves every lookup by sender), so a transfer's
inserts and status changes keep one index to maintain, not two.

Revision ID: transfer_holds_index
Revises: wallet_holds_index
"""

from collections.abc import Sequence

from alembic import op

revision: str = "transfer_holds_index"
down_revision: str | None = "wallet_holds_index"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("transfers", schema=None) as batch_op:
        batch_op.create_index("ix_transfers_from_status", ["from_address", "status"], unique=False)
        batch_op.drop_index("ix_transfers_from_address")


def downgrade() -> None:
    with op.batch_alter_table("transfers", schema=None) as batch_op:
        batch_op.create_index("ix_transfers_from_address", ["from_address"], unique=False)
        batch_op.drop_index("ix_transfers_from_status")
