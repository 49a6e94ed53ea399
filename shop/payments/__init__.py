"""Payments: a fake card processor inside the shop, charges and refunds."""
