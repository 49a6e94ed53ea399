"""Cart: each customer's lines of products and quantities, priced from the catalog."""
