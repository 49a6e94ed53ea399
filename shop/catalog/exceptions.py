"""Catalog's errors."""

from shop.kernel.errors import Conflict, NotFound


class ProductNotFound(NotFound):
    slug = "product-not-found"
    title = "Product not found"


class CategoryNotFound(NotFound):
    slug = "category-not-found"
    title = "Category not found"


class CategoryExists(Conflict):
    slug = "category-exists"
    title = "Category already exists"


class SkuExists(Conflict):
    slug = "sku-exists"
    title = "SKU already exists"
