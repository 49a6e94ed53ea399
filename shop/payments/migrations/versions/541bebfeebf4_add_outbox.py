"""add outbox

Revision ID: 541bebfeebf4
Revises: e2470eb14e26
Create Date: 2026-12-05 01:33:44.997556
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "541bebfeebf4"
down_revision: str | None = "e2470eb14e26"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "payments_outbox",
        sa.Column("position", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("aggregate_id", sa.String(length=100), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("traceparent", sa.String(length=55), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("position", name=op.f("pk_payments_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_payments_outbox_event_id")),
        sqlite_autoincrement=True,
    )
    with op.batch_alter_table("payments_outbox", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_payments_outbox_published_at"), ["published_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("payments_outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payments_outbox_published_at"))

    op.drop_table("payments_outbox")
