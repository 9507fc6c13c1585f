"""sites: the battery's charge and discharge power limits, as the owner declares them (issue 15)

Revision ID: site_battery_power
Revises: trading_profiles
Create Date: 2026-12-06 03:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "site_battery_power"
down_revision: str | None = "trading_profiles"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.add_column(sa.Column("max_charge_w", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("max_discharge_w", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sites", schema=None) as batch_op:
        batch_op.drop_column("max_discharge_w")
        batch_op.drop_column("max_charge_w")
