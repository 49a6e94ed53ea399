"""The shop domain: one package per bounded context plus a small shared kernel.

Nothing in here knows how it is deployed; ``monolith`` and ``services`` compose it.
"""
