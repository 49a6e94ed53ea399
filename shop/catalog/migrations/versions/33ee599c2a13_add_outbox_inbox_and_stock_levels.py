"""add outbox, inbox and stock levels

Revision ID: 33ee599c2a13
Revises: 0101226a774d
Create Date: 2026-12-05 01:33:42.832236
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "33ee599c2a13"
down_revision: str | None = "0101226a774d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "catalog_inbox",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_catalog_inbox")),
    )
    op.create_table(
        "catalog_outbox",
        sa.Column("position", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("aggregate_id", sa.String(length=100), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("traceparent", sa.String(length=55), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("position", name=op.f("pk_catalog_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_catalog_outbox_event_id")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("catalog_outbox", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_catalog_outbox_published_at"), ["published_at"], unique=False
        )

    op.create_table(
        "catalog_stock_levels",
        sa.Column("product_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("on_hand", sa.Integer(), nullable=False),
        sa.Column("reserved", sa.Integer(), nullable=False),
        sa.Column("available", sa.Integer(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("product_id", name=op.f("pk_catalog_stock_levels")),
    )


def downgrade() -> None:
    op.drop_table("catalog_stock_levels")
    with op.batch_alter_table("catalog_outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_catalog_outbox_published_at"))

    op.drop_table("catalog_outbox")
    op.drop_table("catalog_inbox")
