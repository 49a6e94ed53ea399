"""Inventory: stock on hand, reservations for checkouts, and their commit or release."""
