"""Shared kernel: the few technical pieces every context and deployable uses.

Database helpers, settings base, problem+json errors, JWT verification, pagination, money
and port binding. It must never import a bounded context.
"""
