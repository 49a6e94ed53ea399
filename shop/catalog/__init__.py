"""Catalog: categories and products with their prices; the read-heavy leaf of the shop."""
