"""The integration events payments publishes (recorded in ``payments_outbox``)."""

from __future__ import annotations

import uuid

from shop.kernel.events import Event


class PaymentCaptured(Event):
    """A charge went through: the amount (integer minor units of ``currency``) is taken.
    The aggregate is the payment."""

    TYPE = "payments.PaymentCaptured"

    payment_id: uuid.UUID
    order_id: uuid.UUID
    amount: int
    currency: str


class PaymentRefunded(Event):
    """A captured charge was refunded in full. The aggregate is the payment."""

    TYPE = "payments.PaymentRefunded"

    payment_id: uuid.UUID
    order_id: uuid.UUID
    amount: int
    currency: str
