"""erase unkeyed request fingerprints

They were a plain SHA-256 of the checkout body, card number included: with the last four
digits and an issuer prefix known, the card could be found by trying about 10^5 numbers.
Fingerprints are a keyed HMAC from now on; the old ones are erased, and an order with an
empty fingerprint replays its answer without comparing bodies. Nothing brings them back.

Revision ID: 8226fc27f039
Revises: 65b241821eb5
Create Date: 2026-12-04 21:27:15.895391
"""

from collections.abc import Sequence

from alembic import op

revision: str = "8226fc27f039"
down_revision: str | None = "65b241821eb5"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("UPDATE orders_orders SET request_hash = ''")


def downgrade() -> None:
    pass  # the erased fingerprints are gone for good; keyed ones stay valid hex strings
