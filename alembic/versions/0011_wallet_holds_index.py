"""orders: an index for a wallet's authorised escrows (the spending check of every buy order and transfer
sums them; without it each check scanned every order)

Revision ID: wallet_holds_index
Revises: site_battery_power
"""

from collections.abc import Sequence

from alembic import op

revision: str = "wallet_holds_index"
down_revision: str | None = "site_battery_power"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.create_index("ix_orders_wallet_escrow", ["wallet_address", "escrow_status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_wallet_escrow")
