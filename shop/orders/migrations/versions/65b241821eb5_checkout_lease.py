"""checkout lease: who runs an order's saga, and until when

Revision ID: 65b241821eb5
Revises: d40576f60953
Create Date: 2026-12-04 21:17:49.267455
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "65b241821eb5"
down_revision: str | None = "d40576f60953"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("orders_orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lease_owner", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("orders_orders", schema=None) as batch_op:
        batch_op.drop_column("lease_expires_at")
        batch_op.drop_column("lease_owner")
