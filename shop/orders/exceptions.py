"""Orders' errors."""

from shop.kernel.errors import BadRequest, Conflict, NotFound, ShopError, Unprocessable


class OrderNotFound(NotFound):
    slug = "order-not-found"
    title = "Order not found"


class CartEmpty(Conflict):
    slug = "cart-empty"
    title = "Cart empty"


class OutOfStock(Conflict):
    slug = "out-of-stock"
    title = "Out of stock"


class PaymentDeclined(ShopError):
    status = 402
    slug = "payment-declined"
    title = "Payment declined"


class PaymentTimeout(ShopError):
    status = 504
    slug = "payment-timeout"
    title = "Payment timed out"


class CheckoutInterrupted(Conflict):
    """A final answer (the order is rejected, nothing charged): 409, not a 5xx that would
    invite the client to retry a key whose outcome will never change."""

    slug = "checkout-interrupted"
    title = "Checkout interrupted"


class OrderNotCancellable(Conflict):
    slug = "order-not-cancellable"
    title = "Order not cancellable"


class IdempotencyKeyMissing(BadRequest):
    slug = "idempotency-key-missing"
    title = "Idempotency-Key header missing"


class IdempotencyKeyInFlight(Conflict):
    slug = "idempotency-key-in-flight"
    title = "Request in progress"
    headers = {"Retry-After": "1"}


class IdempotencyKeyReused(Unprocessable):
    slug = "idempotency-key-reused"
    title = "Idempotency-Key reused"


class CheckoutInProgress(Conflict):
    slug = "checkout-in-progress"
    title = "Another checkout in progress"
    headers = {"Retry-After": "1"}


class OrderLimitExceeded(Conflict):
    slug = "order-limit-exceeded"
    title = "Order limit exceeded"
