"""dispatch commands: one row per site and slot, the battery command for what the site sold and its check

Revision ID: supply_dispatch_commands
Revises: 0005
Create Date: 2026-12-06 01:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import common.dbtypes

revision: str = "supply_dispatch_commands"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "dispatch_commands",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.Column("slot_start", common.dbtypes.UTCDateTime(timezone=True), nullable=False),
        sa.Column("issued_at", common.dbtypes.UTCDateTime(timezone=True), nullable=False),
        sa.Column("until", common.dbtypes.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sold_wh", sa.Integer(), nullable=False),
        sa.Column("expected_pv_wh", sa.Integer(), nullable=False),
        sa.Column("expected_load_wh", sa.Integer(), nullable=False),
        sa.Column("mode", sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True),
        sa.Column("battery_w", sa.Integer(), nullable=False),
        sa.Column("shortfall_wh", sa.Integer(), nullable=False),
        sa.Column("write_status", sqlmodel.sql.sqltypes.AutoString(length=12), nullable=True),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("detail", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column("battery_wh", sa.Integer(), nullable=True),
        sa.Column("export_wh", sa.Integer(), nullable=True),
        sa.Column("checked_at", common.dbtypes.UTCDateTime(timezone=True), nullable=True),
        sa.Column("released_at", common.dbtypes.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("site_id", "slot_start", name="uq_dispatch_site_slot"),
    )
    with op.batch_alter_table("dispatch_commands", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dispatch_commands_site_id"), ["site_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("dispatch_commands", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dispatch_commands_site_id"))
    op.drop_table("dispatch_commands")
