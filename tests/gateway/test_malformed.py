"""An upstream that answers something unusable is a 502 (bad gateway), never a 500."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from shop.kernel.errors import install_error_handlers
from tests.gateway.support import Keys, asgi, build, echo_app, gateway_client, write_topology

pytestmark = pytest.mark.anyio

ROUTES = {"/.well-known": "identity", "/cart": "cart"}


def _identity(body: bytes) -> FastAPI:
    """An identity whose JWKS is ``body``, served as JSON."""
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/.well-known/jwks.json")
    async def jwks() -> Response:
        return Response(body, media_type="application/json")

    return app


@pytest.mark.parametrize(
    "body",
    [b"<html>502 Bad Gateway</html>", b'{"keys": ', b"[1, 2]", b'{"keys": 7}', b"null"],
    ids=["html", "cut", "a list", "keys not a list", "null"],
)
async def test_a_jwks_that_is_not_one_is_a_bad_gateway(
    tmp_path: Path, keys: Keys, body: bytes
) -> None:
    cart, seen = echo_app("cart")
    transports = {"identity": asgi(_identity(body)), "cart": asgi(cart)}
    app = build(write_topology(tmp_path, ROUTES), transports)
    async with gateway_client(app) as client:
        response = await client.get(
            "/cart", headers={"Authorization": f"Bearer {keys.token()}", "X-Request-ID": "r-1"}
        )
    assert response.status_code == 502, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/bad-gateway"
    assert response.headers["x-request-id"] == "r-1"
    assert seen.count == 0


def _service(name: str, document: Any) -> FastAPI:
    app = FastAPI(title=name, openapi_url=None)

    @app.get("/openapi.json")
    async def openapi() -> JSONResponse:
        return JSONResponse(document)

    return app


@pytest.mark.parametrize(
    "document",
    [[], {"paths": []}, {"paths": {"/cart": "x"}}, {"components": {"schemas": 3}}],
    ids=["a list", "paths a list", "an item not an object", "components wrong"],
)
async def test_an_openapi_document_of_the_wrong_shape_is_left_out(
    tmp_path: Path, document: Any
) -> None:
    good = {"openapi": "3.1.0", "paths": {"/.well-known/jwks.json": {"get": {"summary": "k"}}}}
    transports = {
        "identity": asgi(_service("identity", good)),
        "cart": asgi(_service("cart", document)),
    }
    app = build(write_topology(tmp_path, ROUTES), transports)
    async with gateway_client(app) as client:
        response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["x-openapi-missing"] == "cart"
    assert "/.well-known/jwks.json" in response.json()["paths"]
