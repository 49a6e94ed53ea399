"""The shopper benchmark (``python -m bench``) and the Locust runner (bench.loadtest)."""
