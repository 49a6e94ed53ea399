"""The gateway's route table, derived from the contexts' prefixes and the topology."""

from __future__ import annotations

import pytest

from composition.gateway import create_app
from composition.routes import routes
from gateway.settings import GatewaySettings
from shop.kernel.topology import TopologyError, load, parse

pytestmark = pytest.mark.anyio

EXPECTED = {
    "/auth/token": "identity",
    "/users/me": "identity",
    "/.well-known/jwks.json": "identity",
    "/categories": "catalog",
    "/products/1": "catalog",
    "/inventory/1": "inventory",
    "/cart/items/1": "cart",
    "/orders/x/cancel": "orders",
    "/payments": "payments",
}


async def test_the_shipped_services_topology_routes_the_public_api() -> None:
    table = create_app(GatewaySettings()).state.gateway.routes
    assert {path: table.service(path) for path in EXPECTED} == EXPECTED
    assert table.service("/internal/x") is None


def test_a_kata_step_sends_the_paths_of_what_left_to_its_service_and_the_rest_to_the_monolith() -> (
    None
):
    table = dict(routes(load("topologies/kata-04-inventory.toml")))
    assert table["/inventory"] == "inventory"
    assert table["/products"] == "catalog"
    assert table["/.well-known"] == "identity"
    assert {table[prefix] for prefix in ("/cart", "/orders", "/payments")} == {"monolith"}


def test_gateway_routes_setting_replaces_the_derived_table() -> None:
    settings = GatewaySettings(routes={"/products": "catalog"})
    table = create_app(settings).state.gateway.routes
    assert table.service("/products/1") == "catalog"
    assert table.service("/orders") is None


def test_a_topology_that_names_paths_is_refused_with_the_reason() -> None:
    data = {
        "name": "old",
        "services": {"monolith": {"app": "monolith.app:create_app", "port": 8100}},
        "routes": {"/products": "monolith"},
    }
    with pytest.raises(TopologyError, match=r"remove its \[routes\] table"):
        parse(data)
