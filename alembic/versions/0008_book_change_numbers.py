"""book: change numbers on orders, so the market worker's in-memory book catches up incrementally;
an index for what a site already offers in a slot

Revision ID: book_change_numbers
Revises: perf_service_secrets
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "book_change_numbers"
down_revision: str | None = "perf_service_secrets"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "market_changes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("last_no", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("change_no", sa.BigInteger(), nullable=True))
        batch_op.create_index(batch_op.f("ix_orders_change_no"), ["change_no"], unique=False)
        batch_op.create_index("ix_orders_site_slot", ["site_id", "slot_start"], unique=False)
    # seq comes from the counter from now on: start it above every seq given so far
    op.execute("INSERT INTO market_changes (id, last_no) SELECT 1, COALESCE(MAX(seq), 0) FROM orders")


def downgrade() -> None:
    with op.batch_alter_table("orders", schema=None) as batch_op:
        batch_op.drop_index("ix_orders_site_slot")
        batch_op.drop_index(batch_op.f("ix_orders_change_no"))
        batch_op.drop_column("change_no")
    op.drop_table("market_changes")
