"""The small rules on their own: header policies, path checks and settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.headers import connection_tokens
from gateway.routing import Routes, has_dot_segment, is_internal
from gateway.settings import GatewaySettings
from shop.kernel.correlation import child_traceparent, request_id, traceparent
from tests.gateway.support import asgi, echo_app, gateway_client, write_topology

pytestmark = pytest.mark.anyio

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(
    "incoming",
    [
        f"00-{TRACE}-00f067aa0ba902b7-01",
        f" 00-{TRACE}-00f067aa0ba902b7-00 ",
        f"01-{TRACE}-00f067aa0ba902b7-01-future-field",
        f"cc-{TRACE}-00f067aa0ba902b7-09",
    ],
)
def test_traceparent_keeps_the_trace_and_flags(incoming: str) -> None:
    _, trace, parent, flags = incoming.strip().split("-")[:4]
    forwarded = child_traceparent(traceparent(incoming.encode()))
    assert re.fullmatch(rf"00-{trace}-[0-9a-f]{{16}}-{flags}", forwarded)
    assert forwarded.split("-")[2] != parent


@pytest.mark.parametrize(
    "incoming",
    [
        None,
        "",
        "garbage",
        f"ff-{TRACE}-00f067aa0ba902b7-01",
        f"00-{'0' * 32}-00f067aa0ba902b7-01",
        f"00-{TRACE}-{'0' * 16}-01",
        f"00-{TRACE.upper()}-00f067aa0ba902b7-01",
        f"00-{TRACE}-00f067aa0ba902b7-01-extra",
        f"00-{TRACE[:-1]}-00f067aa0ba902b7-01",
    ],
)
def test_an_invalid_traceparent_starts_a_new_trace(incoming: str | None) -> None:
    assert traceparent(None if incoming is None else incoming.encode()) is None
    forwarded = child_traceparent(traceparent(None if incoming is None else incoming.encode()))
    assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-00", forwarded)
    assert TRACE not in forwarded


@pytest.mark.parametrize(
    ("incoming", "kept"),
    [("abc-123", True), ("x" * 128, True), ("x" * 129, False), ("a b", False), ("é", False)],
)
def test_request_id(incoming: str, kept: bool) -> None:
    assert (request_id(incoming.encode()) == incoming) is kept
    assert re.fullmatch(r"[0-9a-f]{32}", request_id(None))


def test_connection_tokens() -> None:
    assert connection_tokens(b"Keep-Alive, X-Hop ,,close") == {b"keep-alive", b"x-hop", b"close"}


@pytest.mark.parametrize(
    ("path", "internal"),
    [
        ("/internal", True),
        ("/internal/x", True),
        ("//internal/x", True),
        ("/INTERNAL", True),
        ("/internals", False),
        ("/products/internal", False),
        ("/", False),
    ],
)
def test_is_internal(path: str, internal: bool) -> None:
    assert is_internal(path) is internal


@pytest.mark.parametrize(
    ("path", "dotted"),
    [
        ("/a/../b", True),
        ("/a/./b", True),
        ("/a/..", True),
        ("/a/.well", False),
        ("/.well-known/jwks.json", False),
        ("/a/b", False),
        ("/a/...", False),
    ],
)
def test_has_dot_segment(path: str, dotted: bool) -> None:
    assert has_dot_segment(path) is dotted


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOP_TOPOLOGY", "topologies/other.toml")
    monkeypatch.setenv("SHOP_REPLICAS", "catalog=2")
    monkeypatch.setenv("GATEWAY_READ_TIMEOUT_SECONDS", "3.5")
    settings = GatewaySettings()
    assert settings.topology == Path("topologies/other.toml")
    assert settings.replicas == "catalog=2"
    assert settings.read_timeout_seconds == 3.5
    assert (settings.issuer, settings.audience) == ("shopkata", "shopkata")


def test_settings_defaults_and_bad_values() -> None:
    settings = GatewaySettings()
    assert settings.topology == Path("topologies/services.toml")
    with pytest.raises(ValidationError):
        GatewaySettings(replicas="catalog")


async def test_an_explicit_replicas_setting_applies(tmp_path: Path) -> None:
    from tests.gateway.support import build

    app = build(write_topology(tmp_path, {"/products": "catalog"}), {}, replicas="catalog=4")
    assert len(app.state.gateway.upstreams["catalog"].replicas) == 4


async def test_its_lifespan_closes_the_upstream_clients(tmp_path: Path) -> None:
    from tests.gateway.support import build

    catalog, _ = echo_app("catalog")
    app = build(write_topology(tmp_path, {"/products": "catalog"}), {"catalog": asgi(catalog)})
    async with gateway_client(app) as client:
        assert (await client.get("/products/1")).status_code == 200
    with pytest.raises(RuntimeError, match="closed"):
        await app.state.gateway.upstreams["catalog"].request("GET", "/x", idempotent=True)


def test_routes_take_the_longest_whole_segment_prefix() -> None:
    routes = Routes([("/a", "one"), ("/a/b", "two"), ("/", "root")])
    assert routes.service("/a/b/c") == "two"
    assert routes.service("/a/bc") == "one"
    assert routes.service("/ab") == "root"
    lookup = routes.bind({"one": 1, "two": 2, "root": 0})
    assert [lookup(p) for p in ("/a/b", "/a", "/x")] == [2, 1, 0]
    single = Routes([("/a", "one"), ("/b", "two")]).bind({"one": 1, "two": 2})
    assert [single(p) for p in ("/a/x", "/b", "/bc", "", "/")] == [1, 2, None, None, None]
    with pytest.raises(ValueError, match="start with /"):
        Routes([("a", "one")])
