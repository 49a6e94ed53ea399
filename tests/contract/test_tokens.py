"""Bearer tokens: everything but a genuine, current token of ours is 401 unauthorized."""

from __future__ import annotations

import hashlib
import hmac
import time

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.contract.helpers import (
    Target,
    User,
    assert_unauthorized,
    b64url,
    b64url_decode,
    b64url_json,
    bearer,
    claims_for,
    expect,
    new_customer,
    sign_eddsa,
    token_claims,
    token_header,
    unique,
    unsigned_token,
)

pytestmark = pytest.mark.anyio

PROTECTED = ["/users/me", "/cart", "/orders", "/payments"]


async def _assert_rejected(client: httpx2.AsyncClient, token: str, path: str = "/users/me") -> None:
    assert_unauthorized(await client.get(path, headers=bearer(token)))


def _kid(user: User) -> str:
    kid = token_header(user.token).get("kid")
    assert isinstance(kid, str), "access tokens carry a kid"
    return kid


async def test_a_token_signed_with_the_server_key_is_accepted(
    client: httpx2.AsyncClient, target: Target
) -> None:
    """Control: a token crafted here the way the server does it works, so the rejections
    below are due to the one thing each of them breaks."""
    customer = await new_customer(client)
    token = sign_eddsa(claims_for(target, customer), target.signing_key(), _kid(customer))
    me = expect(await client.get("/users/me", headers=bearer(token)), 200)
    assert me["id"] == customer.id
    expect(await client.get("/cart", headers=bearer(token)), 200)


@pytest.mark.parametrize("path", PROTECTED)
async def test_missing_authorization_header(client: httpx2.AsyncClient, path: str) -> None:
    assert_unauthorized(await client.get(path))


@pytest.mark.parametrize(
    "authorization",
    ["Bearer", "Bearer not-a-jwt", "Bearer a.b.c", "Basic dXNlcjpwYXNz", "garbage"],
)
async def test_malformed_authorization_header(
    client: httpx2.AsyncClient, authorization: str
) -> None:
    resp = await client.get("/users/me", headers={"Authorization": authorization})
    assert_unauthorized(resp)


@pytest.mark.parametrize("path", ["/users/me", "/cart"])
async def test_signature_by_another_key_with_the_same_kid(
    client: httpx2.AsyncClient, target: Target, path: str
) -> None:
    customer = await new_customer(client)
    forged = sign_eddsa(claims_for(target, customer), Ed25519PrivateKey.generate(), _kid(customer))
    await _assert_rejected(client, forged, path)


@pytest.mark.parametrize("path", ["/users/me", "/cart"])
async def test_alg_none_token(client: httpx2.AsyncClient, target: Target, path: str) -> None:
    customer = await new_customer(client)
    await _assert_rejected(
        client, unsigned_token(claims_for(target, customer), _kid(customer)), path
    )


async def test_alg_none_token_with_the_original_signature(
    client: httpx2.AsyncClient, target: Target
) -> None:
    customer = await new_customer(client)
    _, payload, signature = customer.token.split(".")
    header = b64url_json({"alg": "none", "typ": "JWT", "kid": _kid(customer)})
    await _assert_rejected(client, f"{header}.{payload}.{signature}")


async def test_hs256_signed_with_the_public_key(client: httpx2.AsyncClient, target: Target) -> None:
    """Algorithm confusion: HMAC keyed with the published public key."""
    customer = await new_customer(client)
    kid = _kid(customer)
    jwks = expect(await client.get("/.well-known/jwks.json"), 200)
    public_x = next(key["x"] for key in jwks["keys"] if key["kid"] == kid)
    signing_input = (
        f"{b64url_json({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}."
        f"{b64url_json(claims_for(target, customer))}"
    )
    for secret in (public_x.encode(), b64url_decode(public_x)):
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        await _assert_rejected(client, f"{signing_input}.{b64url(mac)}")


@pytest.mark.parametrize("path", ["/users/me", "/cart"])
async def test_expired_token(client: httpx2.AsyncClient, target: Target, path: str) -> None:
    customer = await new_customer(client)
    now = int(time.time())
    claims = claims_for(target, customer, iat=now - 7200, exp=now - 3600)
    await _assert_rejected(client, sign_eddsa(claims, target.signing_key(), _kid(customer)), path)


async def test_token_without_exp(client: httpx2.AsyncClient, target: Target) -> None:
    customer = await new_customer(client)
    claims = claims_for(target, customer)
    del claims["exp"]
    await _assert_rejected(client, sign_eddsa(claims, target.signing_key(), _kid(customer)))


@pytest.mark.parametrize("path", ["/users/me", "/cart"])
async def test_wrong_audience(client: httpx2.AsyncClient, target: Target, path: str) -> None:
    customer = await new_customer(client)
    claims = claims_for(target, customer, aud=unique("other-audience-"))
    await _assert_rejected(client, sign_eddsa(claims, target.signing_key(), _kid(customer)), path)


async def test_missing_audience(client: httpx2.AsyncClient, target: Target) -> None:
    customer = await new_customer(client)
    claims = claims_for(target, customer)
    del claims["aud"]
    await _assert_rejected(client, sign_eddsa(claims, target.signing_key(), _kid(customer)))


@pytest.mark.parametrize("path", ["/users/me", "/cart"])
async def test_wrong_issuer(client: httpx2.AsyncClient, target: Target, path: str) -> None:
    customer = await new_customer(client)
    claims = claims_for(target, customer, iss=unique("https://evil.example/"))
    await _assert_rejected(client, sign_eddsa(claims, target.signing_key(), _kid(customer)), path)


async def test_unknown_kid(client: httpx2.AsyncClient, target: Target) -> None:
    customer = await new_customer(client)
    token = sign_eddsa(claims_for(target, customer), target.signing_key(), unique("kid-"))
    await _assert_rejected(client, token)


async def test_token_without_kid(client: httpx2.AsyncClient, target: Target) -> None:
    customer = await new_customer(client)
    signing_input = (
        f"{b64url_json({'alg': 'EdDSA', 'typ': 'at+jwt'})}."
        f"{b64url_json(claims_for(target, customer))}"
    )
    signature = target.signing_key().sign(signing_input.encode())
    await _assert_rejected(client, f"{signing_input}.{b64url(signature)}")


async def test_issued_tokens_are_typed_as_access_tokens(client: httpx2.AsyncClient) -> None:
    customer = await new_customer(client)
    assert token_header(customer.token).get("typ") == "at+jwt"


@pytest.mark.parametrize("typ", [None, "JWT", "id_token+jwt"], ids=["no-typ", "JWT", "id-token"])
@pytest.mark.parametrize("path", PROTECTED)
async def test_a_token_that_is_not_typed_at_jwt(
    client: httpx2.AsyncClient, target: Target, typ: str | None, path: str
) -> None:
    customer = await new_customer(client)
    token = sign_eddsa(claims_for(target, customer), target.signing_key(), _kid(customer), typ)
    await _assert_rejected(client, token, path)


async def test_role_escalation_by_editing_the_payload(
    client: httpx2.AsyncClient, target: Target
) -> None:
    customer = await new_customer(client)
    header, _, signature = customer.token.split(".")
    claims = token_claims(customer.token)
    assert claims["role"] == "customer"
    claims["role"] = "admin"
    escalated = f"{header}.{b64url_json(claims)}.{signature}"

    await _assert_rejected(client, escalated)
    resp = await client.post(
        "/categories",
        json={"slug": unique("esc-"), "name": "Escalated"},
        headers=bearer(escalated),
    )
    assert_unauthorized(resp)


async def test_truncated_signature(client: httpx2.AsyncClient) -> None:
    customer = await new_customer(client)
    await _assert_rejected(client, customer.token[:-4])


async def test_genuine_token_still_works_after_forgeries(client: httpx2.AsyncClient) -> None:
    customer = await new_customer(client)
    await _assert_rejected(client, customer.token + "x")
    assert expect(await client.get("/users/me", headers=customer.headers), 200)["id"] == customer.id
