"""The composition root: any deployable built from the contexts' declarations and a topology.

- :mod:`composition.contexts` finds every context's declaration (``shop/<name>/context.py``);
- :mod:`composition.app` builds a FastAPI app serving some of them on one database, binding
  each port they need in process or over HTTP to wherever its provider runs;
- :mod:`composition.routes` derives the gateway's route table from the same declarations;
- :mod:`composition.backfill` builds a read model from its provider's snapshot, verified.

``monolith.app`` and ``services.app`` are thin entry points over it.
"""
