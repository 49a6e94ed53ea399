"""The token check at the edge: what a service would refuse never reaches one."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.auth import EdgeAuth
from shop.kernel.errors import Unauthorized
from tests.gateway.support import (
    AUDIENCE,
    ISSUER,
    Keys,
    Switch,
    asgi,
    b64url,
    build,
    echo_app,
    gateway_client,
    header,
    identity_app,
    write_topology,
)

pytestmark = pytest.mark.anyio

ROUTES = {"/auth": "identity", "/.well-known": "identity", "/cart": "cart"}


@pytest.fixture
def upstreams(keys: Keys) -> dict[str, Any]:
    identity, identity_seen = identity_app(keys)
    cart, cart_seen = echo_app("cart")
    return {"identity": (identity, identity_seen), "cart": (cart, cart_seen)}


@pytest.fixture
def app(tmp_path: Path, upstreams: dict[str, Any]) -> Any:
    transports = {name: asgi(upstream) for name, (upstream, _) in upstreams.items()}
    return build(write_topology(tmp_path, ROUTES), transports)


def _resign(token: str, header_patch: dict[str, Any], payload_patch: dict[str, Any]) -> str:
    """The token with header/payload fields changed and its original signature kept."""
    head, payload, signature = token.split(".")

    def patch(part: str, changes: dict[str, Any]) -> str:
        data = json.loads(jwt.utils.base64url_decode(part))
        data.update(changes)
        return b64url(json.dumps(data).encode())

    return ".".join([patch(head, header_patch), patch(payload, payload_patch), signature])


def _bad_tokens(keys: Keys) -> dict[str, str]:
    now = int(time.time())
    valid = keys.token()
    claims = jwt.decode(valid, options={"verify_signature": False})
    none_header = b64url(json.dumps({"alg": "none", "typ": "JWT", "kid": keys.kid}).encode())
    stranger = Ed25519PrivateKey.generate()
    return {
        "tampered": _resign(valid, {}, {"role": "admin"}),
        "bad signature": valid[:-4] + ("AAAA" if not valid.endswith("AAAA") else "BBBB"),
        "expired": keys.token(iat=now - 3600, exp=now - 60),
        "wrong audience": keys.token(aud="another-shop"),
        "wrong issuer": keys.token(iss="someone-else"),
        "alg none": f"{none_header}.{b64url(json.dumps(claims).encode())}.",
        "alg HS256": jwt.encode(claims, "s" * 32, algorithm="HS256", headers={"kid": keys.kid}),
        "unknown key": jwt.encode(claims, stranger, algorithm="EdDSA", headers={"kid": "other"}),
        "signed by another key": jwt.encode(
            claims, stranger, algorithm="EdDSA", headers={"kid": keys.kid}
        ),
        "no subject": keys.token(sub=None),
        "no expiry": keys.token(exp=None),
        "not a uuid subject": keys.token(sub="42"),
        "unknown role": keys.token(role="superuser"),
        "malformed": "not.a.jwt",
        "no typ": jwt.encode(claims, keys.private, algorithm="EdDSA", headers={"typ": None}),
        "typ JWT": jwt.encode(
            claims, keys.private, algorithm="EdDSA", headers={"kid": keys.kid, "typ": "JWT"}
        ),
    }


BAD = list(_bad_tokens(Keys()))


async def test_a_valid_token_passes_with_the_header_unchanged(
    app: Any, upstreams: dict[str, Any], keys: Keys
) -> None:
    token = keys.token()
    async with gateway_client(app) as client:
        response = await client.get("/cart", headers={"Authorization": f"Bearer {token}"})
        again = await client.get("/cart", headers={"Authorization": f"bearer {token}"})
    assert response.status_code == 200
    assert again.status_code == 200
    assert header(upstreams["cart"][1].last, "authorization") == [f"bearer {token}"]
    # The JWKS is fetched once, through the topology's route for /.well-known.
    jwks_fetches = [r for r in upstreams["identity"][1].requests if "jwks" in r["path"]]
    assert len(jwks_fetches) == 1


@pytest.mark.parametrize("case", BAD)
async def test_a_bad_token_is_refused_at_the_edge(
    app: Any, upstreams: dict[str, Any], keys: Keys, case: str
) -> None:
    token = _bad_tokens(keys)[case]
    async with gateway_client(app) as client:
        response = await client.get("/cart", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "/problems/unauthorized"
    assert problem["status"] == 401
    assert upstreams["cart"][1].count == 0


@pytest.mark.parametrize(
    "value", ["Basic YWRhOnNlY3JldA==", "Bearer", "Bearer ", "Token abc", "", "bearer\tx"]
)
async def test_an_authorization_header_that_is_not_a_bearer_token_is_refused(
    app: Any, upstreams: dict[str, Any], value: str
) -> None:
    async with gateway_client(app) as client:
        response = await client.get("/cart", headers={"Authorization": value})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert upstreams["cart"][1].count == 0


async def test_no_authorization_passes_through(app: Any, upstreams: dict[str, Any]) -> None:
    async with gateway_client(app) as client:
        response = await client.post("/auth/token", data={"username": "a", "password": "b"})
    assert response.status_code == 201
    assert header(upstreams["identity"][1].last, "authorization") == []
    # No token, no reason to fetch keys.
    assert all("jwks" not in r["path"] for r in upstreams["identity"][1].requests)


async def test_tokens_cannot_be_checked_while_identity_is_down_then_can(
    tmp_path: Path, keys: Keys
) -> None:
    identity, _ = identity_app(keys)
    cart, cart_seen = echo_app("cart")
    switch = Switch(asgi(identity), down=True)
    app = build(write_topology(tmp_path, ROUTES), {"identity": switch, "cart": asgi(cart)})
    headers = {"Authorization": f"Bearer {keys.token()}"}
    async with gateway_client(app) as client:
        down = await client.get("/cart", headers=headers)
        switch.down = False
        # Not 30 s of 401s for an outage at start-up: the next token fetches the keys.
        up = await client.get("/cart", headers=headers)
    assert down.status_code == 503
    assert down.json()["type"] == "/problems/service-unavailable"
    assert up.status_code == 200
    assert cart_seen.count == 1


async def test_a_verified_token_is_remembered_and_a_tampered_one_is_not(
    app: Any, upstreams: dict[str, Any], keys: Keys
) -> None:
    token = keys.token()
    tampered = _resign(token, {}, {"role": "admin"})
    async with gateway_client(app) as client:
        statuses = [
            (await client.get("/cart", headers={"Authorization": f"Bearer {token}"})).status_code
            for _ in range(3)
        ]
        forged = await client.get("/cart", headers={"Authorization": f"Bearer {tampered}"})
    assert statuses == [200] * 3
    assert forged.status_code == 401
    assert app.state.gateway.auth.verifications == 2
    assert upstreams["cart"][1].count == 3


async def test_a_remembered_token_is_verified_again_once_it_expires(keys: Keys) -> None:
    now = [1_000_000.0]

    async def load() -> dict[str, Any]:
        return keys.jwks()

    auth = EdgeAuth(
        load, issuer=ISSUER, audience=AUDIENCE, remember_seconds=60, clock=lambda: now[0]
    )
    issued = int(time.time())
    short = keys.token(exp=issued + 30)
    long = keys.token(exp=issued + 3600)
    now[0] = issued
    await auth.check(f"Bearer {short}")
    await auth.check(f"Bearer {long}")
    now[0] = issued + 29
    await auth.check(f"Bearer {short}")
    await auth.check(f"Bearer {long}")
    assert auth.verifications == 2
    # Past its expiry the short token goes back to the verifier (and is refused there
    # once the verifier's own clock agrees); the long one is re-verified after 60 s.
    now[0] = issued + 61
    await auth.check(f"Bearer {long}")
    assert auth.verifications == 3
    now[0] = issued + 31
    await auth.check(f"Bearer {short}")
    assert auth.verifications == 4


async def test_a_remembered_token_is_refused_once_its_key_leaves_the_jwks(keys: Keys) -> None:
    """Key retirement: the verifier loads the JWKS again after ``jwks_max_age_seconds``, and
    a remembered token whose key is gone is refused at once, not after remember_seconds."""
    published = [keys.jwks()]

    async def load() -> dict[str, Any]:
        return published[0]

    auth = EdgeAuth(
        load, issuer=ISSUER, audience=AUDIENCE, remember_seconds=60, jwks_max_age_seconds=0.05
    )
    token = keys.token()
    await auth.check(f"Bearer {token}")
    await auth.check(f"Bearer {token}")
    assert auth.verifications == 1
    published[0] = Keys().jwks()  # rotated, then the old key retired
    deadline = time.monotonic() + 5
    while True:
        try:
            await auth.check(f"Bearer {token}")
        except Unauthorized:
            break
        assert time.monotonic() < deadline, "a token of a retired key is still accepted"
        await anyio.sleep(0.02)


async def test_remembered_tokens_are_bounded(keys: Keys) -> None:
    async def load() -> dict[str, Any]:
        return keys.jwks()

    auth = EdgeAuth(load, issuer=ISSUER, audience=AUDIENCE, remember_tokens=2)
    tokens = [keys.token(jti=str(n)) for n in range(3)]
    for token in tokens:
        await auth.check(f"Bearer {token}")
    await auth.check(f"Bearer {tokens[2]}")
    await auth.check(f"Bearer {tokens[0]}")
    # The oldest was forgotten to make room: verified again; the newest was remembered.
    assert auth.verifications == 4


async def test_remembering_can_be_turned_off(tmp_path: Path, keys: Keys) -> None:
    cart, _ = echo_app("cart")
    identity, _ = identity_app(keys)
    app = build(
        write_topology(tmp_path, ROUTES),
        {"identity": asgi(identity), "cart": asgi(cart)},
        verified_token_ttl_seconds=0,
    )
    headers = {"Authorization": f"Bearer {keys.token()}"}
    async with gateway_client(app) as client:
        statuses = [(await client.get("/cart", headers=headers)).status_code for _ in range(3)]
    assert statuses == [200] * 3
    assert app.state.gateway.auth.verifications == 3


async def test_several_authorization_headers_never_reach_a_service(
    app: Any, upstreams: dict[str, Any], keys: Keys
) -> None:
    seen = upstreams["cart"][1]
    headers = [("authorization", f"Bearer {keys.token()}"), ("authorization", "Bearer x.y.z")]
    async with gateway_client(app) as client:
        response = await client.get("/cart", headers=[*headers, ("x-request-id", "two-auth")])
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/bad-request"
    assert response.headers["x-request-id"] == "two-auth"
    assert seen.count == 0
