"""Payments' errors and the fake processor's outcomes."""

from shop.kernel.errors import Conflict, NotFound


class PaymentNotFound(NotFound):
    slug = "payment-not-found"
    title = "Payment not found"


class ProcessorTimeout(Exception):
    """The card processor did not answer in time."""


class PaymentInFlight(Conflict):
    slug = "payment-in-flight"
    title = "Payment in progress"
