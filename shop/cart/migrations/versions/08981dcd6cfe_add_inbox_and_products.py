"""add inbox and products

Revision ID: 08981dcd6cfe
Revises: 5cee06d690da
Create Date: 2026-12-05 01:33:43.537556
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "08981dcd6cfe"
down_revision: str | None = "5cee06d690da"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cart_inbox",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_cart_inbox")),
    )
    op.create_table(
        "cart_products",
        sa.Column("product_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("price_amount", sa.Integer(), nullable=True),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("product_id", name=op.f("pk_cart_products")),
    )


def downgrade() -> None:
    op.drop_table("cart_products")
    op.drop_table("cart_inbox")
