"""Orders: checkout (an orchestrated saga over cart, catalog, inventory and payments),
order history and cancellation."""
