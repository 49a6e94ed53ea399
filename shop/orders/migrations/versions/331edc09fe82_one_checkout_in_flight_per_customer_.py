"""one checkout in flight per customer; confirmation time

A partial unique index lets a customer have one pending order at a time (checkouts are
short; recovery finishes the ones a crash left). The index cannot be built while a customer
has two pending orders: let recovery finish them first. ``confirmed_at`` dates the
cancellation window; orders confirmed before it existed use ``updated_at``.

Revision ID: 331edc09fe82
Revises: 8226fc27f039
Create Date: 2026-12-04 21:29:12.359681
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "331edc09fe82"
down_revision: str | None = "8226fc27f039"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders_orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(
            "uq_orders_orders_one_pending_per_user",
            ["user_id"],
            unique=True,
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("orders_orders", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_orders_orders_one_pending_per_user",
            sqlite_where=sa.text("status = 'pending'"),
            postgresql_where=sa.text("status = 'pending'"),
        )
        batch_op.drop_column("confirmed_at")
