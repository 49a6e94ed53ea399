"""Identity: customers and admins, password login, and the JWTs everyone else verifies."""
