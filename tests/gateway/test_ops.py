"""The gateway's own endpoints: /healthz, /readyz, /openapi.json (merged) and /docs."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, FastAPI, Header
from pydantic import BaseModel

from gateway.openapi import merge_documents
from shop.kernel.errors import install_error_handlers, problems
from shop.kernel.ops import router as ops_router
from tests.gateway.support import (
    BASE_PORT,
    ByPort,
    Switch,
    asgi,
    build,
    echo_app,
    gateway_client,
    write_topology,
)

pytestmark = pytest.mark.anyio


# --- /healthz and /readyz -----------------------------------------------------------------


async def test_healthz(tmp_path: Path) -> None:
    # Alive even when every upstream is down: liveness is about the process only.
    switch = Switch(asgi(echo_app("catalog")[0]), down=True)
    app = build(write_topology(tmp_path, {"/products": "catalog"}), {"catalog": switch})
    async with gateway_client(app) as client:
        response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert switch.attempts == 0


async def test_readyz_reports_the_upstreams_together(tmp_path: Path) -> None:
    identity, _ = echo_app("identity")
    catalog, _ = echo_app("catalog")
    topology = write_topology(tmp_path, {"/auth": "identity", "/products": "catalog"})
    app = build(topology, {"identity": asgi(identity), "catalog": asgi(catalog)})
    async with gateway_client(app) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200
    # Public: no service is named (each service's own /readyz, on its own port, has more).
    assert response.json() == {"status": "ready", "checks": {"upstreams": "ok"}}


async def test_readyz_names_the_upstreams_that_are_down_only_in_the_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    identity, _ = echo_app("identity")
    catalog, _ = echo_app("catalog", ready=False)
    cart = Switch(asgi(echo_app("cart")[0]), down=True)
    topology = write_topology(
        tmp_path, {"/auth": "identity", "/products": "catalog", "/cart": "cart"}
    )
    app = build(topology, {"identity": asgi(identity), "catalog": asgi(catalog), "cart": cart})
    with caplog.at_level(logging.WARNING, logger="gateway"):
        async with gateway_client(app) as client:
            response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "/problems/service-unavailable"
    assert problem["detail"] == "Not ready: an upstream service is unavailable."
    for internal in ("identity", "catalog", "cart", "Upstream", "Error", "answered"):
        assert internal not in response.text, response.text
    logged = [r.getMessage() for r in caplog.records if r.name == "gateway"]
    logged = [line for line in logged if line.startswith("not ready")]
    assert any("catalog" in line and "answered 503" in line for line in logged), logged
    assert any("cart" in line and "unreachable" in line for line in logged), logged
    assert not any("identity" in line for line in logged), logged


async def test_readyz_fans_out_at_most_once_per_cache_period(tmp_path: Path) -> None:
    catalog = Switch(asgi(echo_app("catalog")[0]))
    cart = Switch(asgi(echo_app("cart")[0]), down=True)
    topology = write_topology(tmp_path, {"/products": "catalog", "/cart": "cart"})
    app = build(
        topology,
        {"catalog": catalog, "cart": cart},
        readiness_cache_seconds=60,
        breaker_threshold=1,
    )
    async with gateway_client(app) as client:
        statuses = await asyncio.gather(*(client.get("/readyz") for _ in range(20)))
        statuses += [await client.get("/readyz") for _ in range(20)]
        # Proxied requests meanwhile go their own way (readiness never opens a circuit).
        proxied = await client.get("/products/1")
    assert {response.status_code for response in statuses} == {503}
    assert catalog.attempts == 2  # one readiness check, one proxied request
    assert cart.attempts == 1
    assert proxied.status_code == 200


async def test_readyz_is_ok_while_one_replica_serves(tmp_path: Path) -> None:
    live, _ = echo_app("catalog-0")
    dead = Switch(asgi(echo_app("catalog-1")[0]), down=True)
    topology = write_topology(tmp_path, {"/products": "catalog"}, {"catalog": BASE_PORT})
    transport = ByPort({BASE_PORT: asgi(live), BASE_PORT + 1: dead})
    app = build(topology, {"catalog": transport}, replicas="catalog=2")
    async with gateway_client(app) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200
    assert dead.attempts == 1


async def test_the_gateways_own_paths_answer_405_for_other_methods(tmp_path: Path) -> None:
    app = build(write_topology(tmp_path, {"/products": "catalog"}), {})
    async with gateway_client(app) as client:
        response = await client.post("/healthz")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET"
    assert response.json()["type"] == "/problems/method-not-allowed"


# --- the merged OpenAPI document ----------------------------------------------------------


class Money(BaseModel):
    amount: int
    currency: str


class ProductRead(BaseModel):
    id: int
    name: str
    price: Money


class CartLine(BaseModel):
    product_id: int
    unit_price: Money


class Token(BaseModel):
    access_token: str


class InternalUser(BaseModel):
    id: str


def _service(title: str, *routers: APIRouter) -> FastAPI:
    app = FastAPI(title=title, version="9.9.9")
    install_error_handlers(app)
    app.include_router(ops_router)
    for router in routers:
        app.include_router(router)
    return app


def _catalog() -> FastAPI:
    router = APIRouter(tags=["catalog"])

    @router.get("/products/{product_id}", response_model=ProductRead, responses=problems(404))
    async def get_product(product_id: int) -> ProductRead:
        """One product."""
        return ProductRead(id=product_id, name="teapot", price=Money(amount=1, currency="EUR"))

    return _service("catalog", router)


def _cart() -> FastAPI:
    router = APIRouter(tags=["cart"])

    @router.put("/cart/items/{product_id}", response_model=list[CartLine])
    async def put_line(product_id: int, line: CartLine) -> list[CartLine]:
        """Set a line."""
        return [line]

    # A path another service owns: not this service's to document through the gateway.
    @router.get("/products/{product_id}")
    async def shadow(product_id: int) -> dict[str, int]:
        return {"id": product_id}

    return _service("cart", router)


def _identity() -> FastAPI:
    router = APIRouter(tags=["identity"])

    @router.post("/auth/token", response_model=Token, responses=problems(401))
    async def token() -> Token:
        """Log in."""
        return Token(access_token="t")

    @router.get("/internal/users/{user_id}", response_model=InternalUser)
    async def internal_user(
        user_id: str, x_shop_internal_token: Annotated[str, Header()]
    ) -> InternalUser:
        """Service-to-service only."""
        return InternalUser(id=user_id)

    return _service("identity", router)


def _documents() -> dict[str, FastAPI]:
    return {"identity": _identity(), "catalog": _catalog(), "cart": _cart()}


OPENAPI_ROUTES = {"/auth": "identity", "/products": "catalog", "/cart": "cart"}


async def test_openapi_is_the_union_of_the_services_documents(tmp_path: Path) -> None:
    services = _documents()
    transports = {name: asgi(app) for name, app in services.items()}
    app = build(write_topology(tmp_path, OPENAPI_ROUTES), transports)
    async with gateway_client(app) as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert "x-openapi-missing" not in response.headers
    document = response.json()
    assert document["info"] == {
        "title": "shopkata",
        "summary": "An online shop: identity, catalog, inventory, cart, orders, payments.",
        "version": "0.1.0",
    }
    assert document["openapi"] == services["catalog"].openapi()["openapi"]
    assert list(document["paths"]) == [
        "/healthz",
        "/readyz",
        "/auth/token",
        "/products/{product_id}",
        "/cart/items/{product_id}",
    ]
    # Each operation and schema is the owner's, unchanged.
    for path, owner in [
        ("/auth/token", "identity"),
        ("/products/{product_id}", "catalog"),
        ("/cart/items/{product_id}", "cart"),
        ("/readyz", "identity"),
    ]:
        assert document["paths"][path] == services[owner].openapi()["paths"][path]
    schemas = document["components"]["schemas"]
    for service in services.values():
        for name, schema in service.openapi()["components"]["schemas"].items():
            if name != "InternalUser":
                assert schemas[name] == schema
    # Nothing of /internal, not even the schemas only it used.
    assert "InternalUser" not in schemas
    assert not any(path.startswith("/internal") for path in document["paths"])


async def test_openapi_while_a_service_is_down_then_back(tmp_path: Path) -> None:
    services = _documents()
    cart = Switch(asgi(services["cart"]), down=True)
    transports = {"identity": asgi(services["identity"]), "catalog": asgi(services["catalog"])}
    app = build(
        write_topology(tmp_path, OPENAPI_ROUTES), {**transports, "cart": cart}, breaker_threshold=9
    )
    async with gateway_client(app) as client:
        partial = await client.get("/openapi.json")
        cart.down = False
        complete = await client.get("/openapi.json")
        cart.down = True
        cached = await client.get("/openapi.json")
    # Served without what could not be had, said in a header, and not kept.
    assert partial.status_code == 200
    assert partial.headers["x-openapi-missing"] == "cart"
    assert "/cart/items/{product_id}" not in partial.json()["paths"]
    assert "/cart/items/{product_id}" in complete.json()["paths"]
    assert "x-openapi-missing" not in complete.headers
    # A complete document is reused.
    assert cached.json() == complete.json()


async def test_openapi_of_a_gateway_whose_services_document_no_ops_paths(tmp_path: Path) -> None:
    bare, _ = echo_app("catalog")  # the echo documents only its catch-all
    app = build(write_topology(tmp_path, {"/products": "catalog"}), {"catalog": asgi(bare)})
    async with gateway_client(app) as client:
        document = (await client.get("/openapi.json")).json()
    assert {"/healthz", "/readyz"} <= set(document["paths"])
    assert {"Health", "Readiness"} <= set(document["components"]["schemas"])


async def test_docs_serve_swagger_ui_on_the_merged_document(tmp_path: Path) -> None:
    app = build(write_topology(tmp_path, {"/products": "catalog"}), {})
    async with gateway_client(app) as client:
        docs = await client.get("/docs")
        redirect = await client.get("/docs/oauth2-redirect")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in docs.text
    assert "swagger-ui" in docs.text
    assert redirect.status_code == 200


def _owner(routes: dict[str, str]) -> Any:
    def owner(path: str) -> str | None:
        for prefix in sorted(routes, key=len, reverse=True):
            if path == prefix or path.startswith(prefix + "/"):
                return routes[prefix]
        return None

    return owner


def test_merge_reports_conflicts_and_keeps_the_first() -> None:
    ref = {"$ref": "#/components/schemas/Money"}
    first: dict[str, Any] = {
        "openapi": "3.1.0",
        "paths": {"/a": {"get": {"operationId": "a", "responses": {"200": {"schema": ref}}}}},
        "components": {"schemas": {"Money": {"type": "object"}, "Orphan": {"type": "string"}}},
    }
    second: dict[str, Any] = {
        "openapi": "3.1.0",
        "paths": {"/b": {"get": {"operationId": "b", "responses": {"200": {"schema": ref}}}}},
        "components": {"schemas": {"Money": {"type": "integer"}}},
    }
    merged = merge_documents(
        [("one", first), ("two", second)],
        owner=_owner({"/a": "one", "/b": "two"}),
        info={"title": "t", "version": "1"},
    )
    assert merged.document["paths"] == {"/a": first["paths"]["/a"], "/b": second["paths"]["/b"]}
    assert merged.document["components"]["schemas"] == {"Money": {"type": "object"}}
    assert merged.conflicts == [
        "components.schemas.Money: two differs from one; kept one's",
    ]


def test_merge_keeps_schemas_reached_only_through_other_schemas() -> None:
    document = {
        "paths": {"/a": {"get": {"x": {"$ref": "#/components/schemas/Outer"}}}},
        "components": {
            "schemas": {
                "Outer": {"properties": {"inner": {"$ref": "#/components/schemas/Inner"}}},
                "Inner": {"items": [{"$ref": "#/components/schemas/Leaf"}]},
                "Leaf": {"type": "string"},
                "Unused": {"type": "string"},
            },
            "securitySchemes": {"HTTPBearer": {"type": "http", "scheme": "bearer"}},
        },
    }
    merged = merge_documents([("one", document)], owner=_owner({"/a": "one"}), info={})
    assert set(merged.document["components"]["schemas"]) == {"Outer", "Inner", "Leaf"}
    assert merged.document["components"]["securitySchemes"] == {
        "HTTPBearer": {"type": "http", "scheme": "bearer"}
    }
    assert merged.conflicts == []
