"""Registration, login, the caller's profile and the JWKS."""

from __future__ import annotations

import time
import uuid
from datetime import datetime

import httpx2
import jwt
import pytest

from tests.contract.helpers import (
    Target,
    User,
    assert_problem,
    assert_unauthorized,
    assert_validation_error,
    bearer,
    expect,
    is_uuid,
    login,
    new_customer,
    register,
    request_token,
    token_claims,
    token_header,
    unique,
    unique_email,
)

pytestmark = pytest.mark.anyio


def _parse_timestamp(value: object) -> datetime:
    assert isinstance(value, str), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_register_returns_the_new_customer(client: httpx2.AsyncClient) -> None:
    email = unique_email("reg")
    resp = await register(client, email, "correct horse battery", "Grace Hopper")
    user = expect(resp, 201)
    assert set(user) == {"id", "email", "name", "role", "created_at"}, user
    assert is_uuid(user["id"])
    assert user["email"] == email
    assert user["name"] == "Grace Hopper"
    assert user["role"] == "customer"
    _parse_timestamp(user["created_at"])
    assert "password" not in resp.text
    assert "correct horse battery" not in resp.text


async def test_register_same_email_is_email_taken(client: httpx2.AsyncClient) -> None:
    email = unique_email("dup")
    expect(await register(client, email, "password-one", "First"), 201)
    assert_problem(await register(client, email, "password-two", "Second"), 409, "email-taken")


async def test_register_email_is_case_insensitive(client: httpx2.AsyncClient) -> None:
    local = unique("Case-")
    expect(await register(client, f"{local}@Example.com", "password-one", "First"), 201)
    resp = await register(client, f"{local.lower()}@EXAMPLE.COM", "password-two", "Second")
    assert_problem(resp, 409, "email-taken")


@pytest.mark.parametrize(
    "override",
    [
        {"email": "not-an-email"},
        {"email": ""},
        {"password": "short77"},
        {"password": "x" * 129},
        {"name": ""},
        {"name": "n" * 101},
        {"email": None},
    ],
    ids=[
        "bad-email",
        "empty-email",
        "password-7-chars",
        "password-129-chars",
        "empty-name",
        "name-101-chars",
        "null-email",
    ],
)
async def test_register_rejects_invalid_fields(
    client: httpx2.AsyncClient, override: dict[str, object]
) -> None:
    body: dict[str, object] = {
        "email": unique_email("invalid"),
        "password": "long-enough-password",
        "name": "Valid Name",
    }
    body.update(override)
    assert_validation_error(await client.post("/auth/register", json=body))


@pytest.mark.parametrize("missing", ["email", "password", "name"])
async def test_register_rejects_missing_fields(client: httpx2.AsyncClient, missing: str) -> None:
    body = {"email": unique_email("missing"), "password": "long-enough-password", "name": "N"}
    del body[missing]
    assert_validation_error(await client.post("/auth/register", json=body))


async def test_register_password_length_bounds_are_inclusive(client: httpx2.AsyncClient) -> None:
    expect(await register(client, unique_email("min"), "x" * 8, "Eight"), 201)
    expect(await register(client, unique_email("max"), "y" * 128, "N" * 100), 201)


async def test_register_rejects_a_non_json_body(client: httpx2.AsyncClient) -> None:
    resp = await client.post(
        "/auth/register", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert_validation_error(resp)


async def test_token_returns_a_bearer_access_token(client: httpx2.AsyncClient) -> None:
    email = unique_email("tok")
    expect(await register(client, email, "token-password", "Tok"), 201)
    resp = await request_token(client, email, "token-password")
    body = expect(resp, 200)
    assert set(body) >= {"access_token", "token_type", "expires_in"}, body
    assert body["token_type"].lower() == "bearer"
    assert isinstance(body["expires_in"], int)
    assert body["expires_in"] > 0
    assert isinstance(body["access_token"], str)
    assert body["access_token"].count(".") == 2


async def test_token_with_wrong_password_is_unauthorized(client: httpx2.AsyncClient) -> None:
    email = unique_email("wrongpw")
    expect(await register(client, email, "right-password", "W"), 201)
    assert_problem(await request_token(client, email, "wrong-password"), 401, "unauthorized")


async def test_token_with_unknown_email_is_unauthorized(client: httpx2.AsyncClient) -> None:
    resp = await request_token(client, unique_email("ghost"), "whatever-password")
    assert_problem(resp, 401, "unauthorized")


async def test_token_requires_the_form_fields(client: httpx2.AsyncClient) -> None:
    resp = await client.post("/auth/token", data={"username": unique_email("nopw")})
    assert_validation_error(resp)


async def test_users_me_returns_the_caller(client: httpx2.AsyncClient) -> None:
    customer = await new_customer(client)
    me = expect(await client.get("/users/me", headers=customer.headers), 200)
    assert me["id"] == customer.id
    assert me["email"] == customer.email
    assert me["name"] == customer.name
    assert me["role"] == "customer"
    _parse_timestamp(me["created_at"])


async def test_users_me_without_token_is_unauthorized(client: httpx2.AsyncClient) -> None:
    assert_unauthorized(await client.get("/users/me"))


async def test_two_customers_see_themselves(client: httpx2.AsyncClient) -> None:
    alice = await new_customer(client, "alice")
    bob = await new_customer(client, "bob")
    assert expect(await client.get("/users/me", headers=alice.headers), 200)["id"] == alice.id
    assert expect(await client.get("/users/me", headers=bob.headers), 200)["id"] == bob.id
    assert alice.id != bob.id


async def test_admin_is_seeded_with_role_admin(client: httpx2.AsyncClient, admin: User) -> None:
    me = expect(await client.get("/users/me", headers=admin.headers), 200)
    assert me["role"] == "admin"
    assert me["id"] == admin.id


async def test_jwks_publishes_an_ed25519_signing_key(client: httpx2.AsyncClient) -> None:
    jwks = expect(await client.get("/.well-known/jwks.json"), 200)
    keys = jwks["keys"]
    assert isinstance(keys, list)
    assert keys
    for key in keys:
        assert key["kty"] == "OKP"
        assert key["crv"] == "Ed25519"
        assert key["alg"] == "EdDSA"
        assert key["use"] == "sig"
        assert isinstance(key["kid"], str)
        assert key["kid"]
        assert isinstance(key["x"], str)
        assert key["x"]
        assert "d" not in key, "the JWKS must not leak the private key"
    assert len({key["kid"] for key in keys}) == len(keys)


async def test_access_token_verifies_against_the_jwks(
    client: httpx2.AsyncClient, target: Target
) -> None:
    customer = await new_customer(client)
    header = token_header(customer.token)
    assert header["alg"] == "EdDSA"
    jwks = expect(await client.get("/.well-known/jwks.json"), 200)
    by_kid = {key["kid"]: key for key in jwks["keys"]}
    assert header.get("kid") in by_kid, header

    public_key = jwt.PyJWK(by_kid[header["kid"]])
    claims = jwt.decode(
        customer.token,
        key=public_key,
        algorithms=["EdDSA"],
        audience=target.audience,
        issuer=target.issuer,
    )
    assert claims["sub"] == customer.id
    assert claims["role"] == "customer"
    assert claims["iss"] == target.issuer
    assert claims["aud"] == target.audience or target.audience in claims["aud"]
    now = time.time()
    assert claims["iat"] <= now + 5
    assert claims["exp"] > now


async def test_admin_token_carries_role_admin(client: httpx2.AsyncClient, admin: User) -> None:
    claims = token_claims(admin.token)
    assert claims["role"] == "admin"
    assert claims["sub"] == admin.id


async def test_register_with_role_admin_is_rejected_and_creates_nothing(
    client: httpx2.AsyncClient,
) -> None:
    email = unique_email("escalate")
    resp = await client.post(
        "/auth/register",
        json={"email": email, "password": "escalate-pw", "name": "Mallory", "role": "admin"},
    )
    assert_validation_error(resp)
    # nothing was created: the credentials do not work and the email is still free
    assert_problem(await request_token(client, email, "escalate-pw"), 401, "unauthorized")
    user = expect(await register(client, email, "escalate-pw", "Mallory"), 201)
    assert user["role"] == "customer"
    token = await login(client, email, "escalate-pw")
    me = expect(await client.get("/users/me", headers=bearer(token)), 200)
    assert me["role"] == "customer"
    assert token_claims(token)["role"] == "customer"


async def test_register_with_id_is_rejected(client: httpx2.AsyncClient) -> None:
    email = unique_email("withid")
    resp = await client.post(
        "/auth/register",
        json={"email": email, "password": "with-id-pw", "name": "Id", "id": str(uuid.uuid4())},
    )
    assert_validation_error(resp)
    assert_problem(await request_token(client, email, "with-id-pw"), 401, "unauthorized")


async def test_emails_are_stored_and_compared_lower_case(client: httpx2.AsyncClient) -> None:
    local = unique("Mixed.Case-")
    user = expect(await register(client, f"{local}@Example.COM", "mixed-case-pw", "Mixed"), 201)
    assert user["email"] == f"{local.lower()}@example.com"

    token = await login(client, f"{local.upper()}@EXAMPLE.COM", "mixed-case-pw")
    me = expect(await client.get("/users/me", headers=bearer(token)), 200)
    assert me["id"] == user["id"]
    assert me["email"] == f"{local.lower()}@example.com"


@pytest.mark.parametrize(
    "name",
    [" Ada", "Ada ", "Ada\nLovelace", "Ada\tLovelace", "\u00a0", "Ada\x00"],
    ids=["leading-space", "trailing-space", "newline", "tab", "nbsp-only", "nul"],
)
async def test_register_name_must_be_visible_edged_without_controls(
    client: httpx2.AsyncClient, name: str
) -> None:
    email = unique_email("badname")
    assert_validation_error(await register(client, email, "bad-name-password", name))
    assert_problem(await request_token(client, email, "bad-name-password"), 401, "unauthorized")


async def test_register_name_may_hold_inner_spaces(client: httpx2.AsyncClient) -> None:
    user = expect(
        await register(client, unique_email("spaced"), "spaced-password", "Ada  King Lovelace"), 201
    )
    assert user["name"] == "Ada  King Lovelace"
