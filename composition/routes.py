"""The gateway's route table, derived: each context's public prefixes, to whoever serves it.

A topology says only which service serves which contexts; the contexts' declarations say
which public paths are theirs. Together they give the table the gateway routes by, so a
context that moves between services takes its paths along with no route to edit.
"""

from __future__ import annotations

from composition.contexts import pick
from shop.kernel.topology import Topology


def routes(topology: Topology) -> tuple[tuple[str, str], ...]:
    """``(prefix, service)`` for every public prefix of every context ``topology`` serves."""
    table = [
        (prefix, spec.name)
        for spec in topology.services.values()
        for context in pick(spec.contexts, where=f"{topology.name}: service {spec.name}")
        for prefix in context.prefixes
    ]
    return tuple(sorted(table, key=lambda route: (-len(route[0]), route[0])))
