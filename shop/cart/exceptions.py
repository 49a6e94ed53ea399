"""Cart's errors."""

from shop.kernel.errors import Conflict, NotFound


class ProductNotFound(NotFound):
    slug = "product-not-found"
    title = "Product not found"


class CartFull(Conflict):
    slug = "cart-full"
    title = "Cart full"
