"""The services topology: one deployable per bounded context, a database each.

Each ``services/<context>/app.py`` mounts that context's router unchanged (the same one the
monolith mounts), applies only its own migrations, and binds its ports to HTTP adapters
(``bindings/http.py``) that call the other services through resilient upstreams.
"""
