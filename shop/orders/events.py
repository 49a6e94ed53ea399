"""The integration events orders publishes (recorded in ``orders_outbox``)."""

from __future__ import annotations

import uuid

from shop.kernel.events import Event

CANCEL_REQUESTED = "cancel-requested"
"""The reason of a cancelled order: its owner (or an admin) asked for it."""


class OrderStatusChanged(Event):
    """An order's status now: ``pending`` when placed, then ``confirmed`` or ``rejected`` when
    its checkout ends, ``cancelled`` when a cancellation completes. The aggregate is the
    order. ``reason`` says why an order was rejected (the problem's slug its checkout
    answered: ``out-of-stock``, ``payment-declined``...) or cancelled; else None."""

    TYPE = "orders.OrderStatusChanged"

    order_id: uuid.UUID
    user_id: uuid.UUID
    status: str
    reason: str | None = None
