"""charge claims: until when the request that claimed a pending key holds it

A charge now claims its key (a ``pending`` row) before the card processor is asked; the
claim runs out at ``claim_expires_at``, after which the next charge with the key takes over.

Revision ID: e2470eb14e26
Revises: f85af19d5ade
Create Date: 2026-12-04 21:44:42.620044
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "e2470eb14e26"
down_revision: str | None = "f85af19d5ade"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payments_payments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("claim_expires_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("payments_payments", schema=None) as batch_op:
        batch_op.drop_column("claim_expires_at")
