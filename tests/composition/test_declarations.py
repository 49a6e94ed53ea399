"""The contexts' declarations fit together: checked statically, without serving anything."""

from __future__ import annotations

from pathlib import Path

from bindings.registry import BINDINGS
from composition.backfill import ASKS
from composition.contexts import declared
from shop.kernel.migrations import CONTEXTS as STREAMS
from shop.kernel.topology import load

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_under_shop_but_the_kernel_declares_a_context() -> None:
    packages = sorted(
        path.parent.name
        for path in (ROOT / "shop").glob("*/__init__.py")
        if path.parent.name != "kernel"
    )
    assert sorted(declared()) == packages


def test_every_context_has_a_migration_stream() -> None:
    assert sorted(declared()) == sorted(STREAMS)


def test_every_port_a_context_needs_is_bound_to_another_declared_context() -> None:
    for context in declared().values():
        for port in context.needs:
            binding = BINDINGS.get(port)
            assert binding is not None, f"{context.name} needs {port.__qualname__}: no binding"
            assert binding.provider in declared(), binding
            assert binding.provider != context.name, binding


def test_no_two_contexts_claim_one_public_prefix() -> None:
    owners: dict[str, str] = {}
    for context in declared().values():
        assert context.prefixes, f"{context.name} declares no public prefix"
        for prefix in context.prefixes:
            assert prefix.startswith("/"), prefix
            assert not prefix.endswith("/"), prefix
            assert prefix not in owners, f"{prefix}: {owners.get(prefix)} and {context.name}"
            owners[prefix] = context.name


def test_every_public_route_lies_under_its_contexts_prefixes() -> None:
    for context in declared().values():
        for route in context.router.routes:
            path = getattr(route, "path", "")
            assert any(
                path == prefix or path.startswith(prefix + "/") for prefix in context.prefixes
            ), f"{context.name}: {path} is outside {context.prefixes}"


def test_every_topology_names_only_declared_contexts_and_serves_each_once() -> None:
    for path in sorted((ROOT / "topologies").glob("*.toml")) + sorted(
        (ROOT / "docker").glob("topology-*.toml")
    ):
        topology = load(path)
        served = [name for spec in topology.services.values() for name in spec.contexts]
        assert sorted(served) == sorted(declared()), path.name


def test_every_read_model_can_be_backfilled_and_verified() -> None:
    """A consumer's read model of a provider: the provider declares its snapshot and outbox,
    and the backfill knows how to ask the port the model answers (to compare it)."""
    for context in declared().values():
        for port in context.read_models:
            provider = declared()[BINDINGS[port].provider]
            assert provider.snapshot is not None, provider.name
            assert provider.outbox is not None, provider.name
            assert context.inbox is not None, context.name
            assert port in ASKS, port
