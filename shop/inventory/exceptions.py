"""Inventory's errors."""

from shop.kernel.errors import Conflict, NotFound


class InventoryItemNotFound(NotFound):
    slug = "inventory-item-not-found"
    title = "No stock recorded"


class ProductNotFound(NotFound):
    slug = "product-not-found"
    title = "Product not found"


class OutOfStock(Conflict):
    slug = "out-of-stock"
    title = "Out of stock"


class ReservationClosed(Conflict):
    slug = "reservation-closed"
    title = "Reservation closed"


class StockBelowReserved(Conflict):
    slug = "stock-below-reserved"
    title = "Stock below reserved units"
