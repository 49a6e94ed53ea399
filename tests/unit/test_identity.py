"""Identity: the signing key and its JWKS, token issuing, password hashing, and the
kernel's TokenVerifier that every deployable uses on those tokens."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import jwt
import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr, ValidationError

from shop.identity.schemas import UserCreate
from shop.identity.service import Passwords, normalise_email, password_hasher
from shop.identity.settings import IdentitySettings
from shop.identity.tokens import (
    SigningKey,
    TokenIssuer,
    generate_private_key_pem,
    write_key_file,
)
from shop.kernel.errors import ServiceUnavailable, Unauthorized
from shop.kernel.security import Principal, Role, TokenVerifier

pytestmark = pytest.mark.anyio

ISSUER = "shop-issuer"
AUDIENCE = "shop-audience"

# RFC 8037, appendix A: an Ed25519 key and (A.3) its RFC 7638 thumbprint.
RFC8037_D = "nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"
RFC8037_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
RFC8037_THUMBPRINT = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def pem_of(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def thumbprint(x: str) -> str:
    """RFC 7638 for an OKP key: SHA-256 of the required members, sorted, no whitespace."""
    canonical = '{"crv":"Ed25519","kty":"OKP","x":"' + x + '"}'
    return b64url(hashlib.sha256(canonical.encode("utf-8")).digest())


# --------------------------------------------------------------------------- signing key


def test_the_kid_is_the_rfc_7638_thumbprint_of_the_rfc_8037_key() -> None:
    key = Ed25519PrivateKey.from_private_bytes(b64url_decode(RFC8037_D))

    signing_key = SigningKey.from_pem(pem_of(key))

    assert signing_key.jwk["x"] == RFC8037_X
    assert signing_key.kid == RFC8037_THUMBPRINT


def test_the_kid_of_a_fresh_key_is_its_thumbprint() -> None:
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    signing_key = SigningKey.from_pem(pem_of(key))

    assert signing_key.jwk["x"] == b64url(raw)
    assert signing_key.kid == thumbprint(b64url(raw))
    assert SigningKey.from_pem(pem_of(key)).kid == signing_key.kid
    assert SigningKey.from_pem(generate_private_key_pem()).kid != signing_key.kid


def test_the_jwks_publishes_the_public_key_only() -> None:
    signing_key = SigningKey.from_pem(generate_private_key_pem())

    document = signing_key.jwks()

    assert list(document) == ["keys"]
    (jwk,) = document["keys"]
    assert jwk == {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": signing_key.jwk["x"],
        "kid": signing_key.kid,
        "alg": "EdDSA",
        "use": "sig",
    }
    assert "d" not in jwk
    assert len(b64url_decode(jwk["x"])) == 32
    jwk["kid"] = "tampered"  # the document is a copy
    assert signing_key.jwks()["keys"][0]["kid"] == signing_key.kid
    # A standard JWK library reads it as the key that checks our signatures.
    public = jwt.PyJWK(signing_key.jwks()["keys"][0])
    token = jwt.encode({"a": 1}, signing_key.private_key, algorithm="EdDSA")
    assert jwt.decode(token, public, algorithms=["EdDSA"]) == {"a": 1}


def test_a_non_ed25519_key_is_refused() -> None:
    pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode("ascii")
    )
    with pytest.raises(ValueError, match="Ed25519"):
        SigningKey.from_pem(pem)


def test_the_key_comes_from_the_pem_setting_first_then_the_file(tmp_path: Path) -> None:
    file_pem, inline_pem = generate_private_key_pem(), generate_private_key_pem()
    key_file = tmp_path / "key.pem"
    key_file.write_text(file_pem, encoding="ascii")
    key_file.chmod(0o600)

    from_file = SigningKey.from_settings(IdentitySettings(signing_key_file=key_file))
    inline = SigningKey.from_settings(
        IdentitySettings(signing_key_file=key_file, signing_key_pem=SecretStr(inline_pem))
    )

    assert from_file.kid == SigningKey.from_pem(file_pem).kid
    assert inline.kid == SigningKey.from_pem(inline_pem).kid
    with pytest.raises(RuntimeError, match="no signing key"):
        SigningKey.from_settings(IdentitySettings(signing_key_file=tmp_path / "missing.pem"))


def test_write_key_file_creates_a_private_file_once(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "jwt.pem"

    assert write_key_file(path) is True
    first = path.read_text()
    assert write_key_file(path) is False

    assert path.read_text() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert SigningKey.from_pem(first).kid


# --------------------------------------------------------------------------- issuing


def test_issued_tokens_carry_the_documented_claims() -> None:
    signing_key = SigningKey.from_pem(generate_private_key_pem())
    issuer = TokenIssuer(key=signing_key, issuer=ISSUER, audience=AUDIENCE, ttl_seconds=600)
    user_id = uuid.uuid4()

    before = int(time.time())
    token = issuer.issue(user_id, Role.ADMIN)
    after = int(time.time())

    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA"
    assert header["kid"] == signing_key.kid
    public = signing_key.private_key.public_key()
    claims = jwt.decode(token, public, algorithms=["EdDSA"], audience=AUDIENCE, issuer=ISSUER)
    assert claims["sub"] == str(user_id)
    assert claims["role"] == "admin"
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE
    assert before <= claims["iat"] <= after
    assert claims["exp"] == claims["iat"] + 600
    assert (
        claims["jti"]
        != jwt.decode(
            issuer.issue(user_id, Role.ADMIN), public, algorithms=["EdDSA"], audience=AUDIENCE
        )["jti"]
    )


# --------------------------------------------------------------------------- verification


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class JwksSource:
    """The JWKS the verifier loads, counting the loads."""

    def __init__(self, *keys: SigningKey, delay: float = 0.0) -> None:
        self.keys = list(keys)
        self.loads = 0
        self.delay = delay

    async def __call__(self) -> dict[str, Any]:
        self.loads += 1
        if self.delay:
            await anyio.sleep(self.delay)
        return {"keys": [key.jwk for key in self.keys]}


def new_key() -> SigningKey:
    return SigningKey.from_pem(generate_private_key_pem())


def claims_for(user_id: uuid.UUID | None = None, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "sub": str(user_id or uuid.uuid4()),
        "role": "customer",
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "exp": now + 300,
    }
    for name, value in changes.items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims


def sign(
    key: SigningKey, claims: dict[str, Any], *, kid: str | None = None, typ: str | None = "at+jwt"
) -> str:
    return jwt.encode(
        claims, key.private_key, algorithm="EdDSA", headers={"kid": kid or key.kid, "typ": typ}
    )


def craft(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A JWT assembled by hand, for what no library would sign."""
    head = b64url(json.dumps(header).encode())
    body = b64url(json.dumps(claims).encode())
    return f"{head}.{body}.{b64url(signature)}"


def verifier_for(source: JwksSource, clock: Clock | None = None) -> TokenVerifier:
    return TokenVerifier(
        source,
        issuer=ISSUER,
        audience=AUDIENCE,
        min_refresh_seconds=30.0,
        clock=clock or Clock(),
    )


async def test_a_valid_token_gives_its_principal() -> None:
    key = new_key()
    verifier = verifier_for(JwksSource(key))
    user_id = uuid.uuid4()

    customer = await verifier.verify(sign(key, claims_for(user_id)))
    boss = await verifier.verify(sign(key, claims_for(user_id, role="admin")))

    assert customer == Principal(user_id=user_id, role=Role.CUSTOMER)
    assert not customer.is_admin
    assert boss.role is Role.ADMIN
    assert boss.is_admin


async def test_tokens_from_the_issuer_verify_through_its_own_jwks() -> None:
    key = new_key()
    issuer = TokenIssuer(key=key, issuer=ISSUER, audience=AUDIENCE, ttl_seconds=60)

    async def jwks() -> dict[str, Any]:
        return key.jwks()

    verifier = TokenVerifier(jwks, issuer=ISSUER, audience=AUDIENCE)
    user_id = uuid.uuid4()

    principal = await verifier.verify(issuer.issue(user_id, Role.CUSTOMER))

    assert principal == Principal(user_id=user_id, role=Role.CUSTOMER)


def tampered(key: SigningKey) -> str:
    head, _, signature = sign(key, claims_for()).split(".")
    body = b64url(json.dumps(claims_for(role="admin")).encode())
    return f"{head}.{body}.{signature}"


BAD_TOKENS: dict[str, Callable[[SigningKey], str]] = {
    "expired": lambda key: sign(
        key, claims_for(iat=int(time.time()) - 700, exp=int(time.time()) - 60)
    ),
    "wrong-audience": lambda key: sign(key, claims_for(aud="another-shop")),
    "wrong-issuer": lambda key: sign(key, claims_for(iss="https://evil.example")),
    "no-sub": lambda key: sign(key, claims_for(sub=None)),
    "sub-not-a-uuid": lambda key: sign(key, claims_for(sub="42")),
    "no-role": lambda key: sign(key, claims_for(role=None)),
    "unknown-role": lambda key: sign(key, claims_for(role="root")),
    "no-exp": lambda key: sign(key, claims_for(exp=None)),
    "no-aud": lambda key: sign(key, claims_for(aud=None)),
    "no-iss": lambda key: sign(key, claims_for(iss=None)),
    "tampered-claims": tampered,
    "signed-by-another-key-under-our-kid": lambda key: sign(new_key(), claims_for(), kid=key.kid),
    "alg-none": lambda key: craft({"alg": "none", "typ": "JWT", "kid": key.kid}, claims_for()),
    "alg-none-with-signature": lambda key: craft(
        {"alg": "none", "kid": key.kid}, claims_for(), b"sig"
    ),
    "no-kid": lambda key: jwt.encode(
        claims_for(), key.private_key, algorithm="EdDSA", headers={"typ": "at+jwt"}
    ),
    "no-typ": lambda key: sign(key, claims_for(), typ=None),
    "typ-jwt": lambda key: sign(key, claims_for(), typ="JWT"),
    "typ-id-token": lambda key: sign(key, claims_for(), typ="id_token+jwt"),
    "empty-kid": lambda key: craft({"alg": "EdDSA", "kid": ""}, claims_for(), b"x" * 64),
    "malformed": lambda key: "not.a.jwt",
    "garbage": lambda key: "garbage",
}


@pytest.mark.parametrize("case", sorted(BAD_TOKENS))
async def test_a_bad_token_is_unauthorized(case: str) -> None:
    key = new_key()
    verifier = verifier_for(JwksSource(key))

    with pytest.raises(Unauthorized) as caught:
        await verifier.verify(BAD_TOKENS[case](key))

    assert caught.value.status == 401
    assert caught.value.headers == {"WWW-Authenticate": "Bearer"}


async def test_hs256_signed_with_the_public_key_is_refused() -> None:
    """Algorithm confusion: an HMAC keyed by what the JWKS publishes must not pass."""
    key = new_key()
    verifier = verifier_for(JwksSource(key))
    raw_public = b64url_decode(key.jwk["x"])
    pem_public = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for secret in (raw_public, key.jwk["x"].encode(), pem_public):
        header = {"alg": "HS256", "typ": "JWT", "kid": key.kid}
        signing_input = (
            b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims_for()).encode())
        )
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        with pytest.raises(Unauthorized):
            await verifier.verify(f"{signing_input}.{b64url(mac)}")


async def test_an_expired_token_within_the_leeway_still_passes() -> None:
    key = new_key()
    verifier = verifier_for(JwksSource(key))
    now = int(time.time())

    principal = await verifier.verify(sign(key, claims_for(iat=now - 100, exp=now - 2)))

    assert principal.role is Role.CUSTOMER


async def test_an_unknown_kid_reloads_the_jwks_until_a_load_misses_it() -> None:
    old, rotated = new_key(), new_key()
    source = JwksSource(old)
    clock = Clock()
    verifier = verifier_for(source, clock)
    rotated_token = sign(rotated, claims_for())

    await verifier.verify(sign(old, claims_for()))
    await verifier.verify(sign(old, claims_for()))
    assert source.loads == 1

    source.keys.append(rotated)  # identity rotated its key just now
    clock.now += 10
    # A load 10 s ago predates the rotation: it does not hold the new key back.
    principal = await verifier.verify(rotated_token)
    assert source.loads == 2
    assert principal.role is Role.CUSTOMER

    stranger = new_key()
    with pytest.raises(Unauthorized):
        await verifier.verify(sign(stranger, claims_for()))
    assert source.loads == 3  # looked for it once, in vain
    with pytest.raises(Unauthorized):
        await verifier.verify(sign(stranger, claims_for()))
    with pytest.raises(Unauthorized):
        await verifier.verify(sign(new_key(), claims_for()))
    assert source.loads == 3  # no more loads for unknown kids within the refresh interval

    clock.now += 31
    with pytest.raises(Unauthorized):
        await verifier.verify(sign(stranger, claims_for()))
    assert source.loads == 4  # exactly one reload for the unknown kid
    await verifier.verify(sign(old, claims_for()))
    assert source.loads == 4


async def test_a_remembered_token_is_not_checked_again_until_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = new_key()
    verifier = verifier_for(JwksSource(key))
    token = sign(key, claims_for())
    checks = 0
    decode = jwt.decode

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal checks
        checks += 1
        return decode(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)
    first = await verifier.verify(token)
    assert [await verifier.verify(token) for _ in range(5)] == [first] * 5
    assert checks == 1


async def test_a_remembered_token_stops_passing_at_its_expiry() -> None:
    key = new_key()
    verifier = verifier_for(JwksSource(key))
    exp = int(time.time()) - 4  # inside the 5 s leeway for less than a second more
    token = sign(key, claims_for(iat=exp - 100, exp=exp))
    await verifier.verify(token)
    await anyio.sleep(max(0.0, exp + 5 - time.time()) + 0.05)
    with pytest.raises(Unauthorized, match="expired"):
        await verifier.verify(token)


async def test_a_remembered_token_stops_passing_once_its_key_leaves_the_jwks() -> None:
    old, new = new_key(), new_key()
    source = JwksSource(old)
    clock = Clock()
    verifier = verifier_for(source, clock)
    old_token = sign(old, claims_for())
    await verifier.verify(old_token)

    source.keys = [new]  # identity retired the old key
    clock.now += 31
    await verifier.verify(sign(new, claims_for()))  # an unknown kid: the JWKS is reloaded
    with pytest.raises(Unauthorized, match="unknown key"):
        await verifier.verify(old_token)


async def test_the_remembered_tokens_are_bounded() -> None:
    key = new_key()
    verifier = TokenVerifier(JwksSource(key), issuer=ISSUER, audience=AUDIENCE, max_remembered=3)
    tokens = [sign(key, claims_for()) for _ in range(5)]
    for token in tokens:
        await verifier.verify(token)
    assert list(verifier._remembered) == tokens[2:]


async def test_an_identity_outage_is_unavailable_not_a_bad_token() -> None:
    """A JWKS load that fails answers 503 and is not counted: once identity is back, the
    next request loads the keys, instead of 401s for the rest of the refresh interval."""
    key = new_key()
    source = JwksSource(key)
    down = True

    async def flaky() -> dict[str, Any]:
        if down:
            raise ServiceUnavailable("The identity service cannot be reached.")
        return await source()

    verifier = TokenVerifier(flaky, issuer=ISSUER, audience=AUDIENCE)
    token = sign(key, claims_for())
    for _ in range(2):
        with pytest.raises(ServiceUnavailable):
            await verifier.verify(token)
    down = False
    principal = await verifier.verify(token)
    assert principal.role is Role.CUSTOMER
    assert source.loads == 1


async def test_concurrent_unknown_kids_reload_the_jwks_only_once() -> None:
    """A burst of tokens naming unknown keys must not turn into a burst of JWKS loads."""
    key = new_key()
    source = JwksSource(key, delay=0.01)
    clock = Clock()
    verifier = verifier_for(source, clock)
    await verifier.verify(sign(key, claims_for()))
    clock.now += 60
    failures: list[Unauthorized] = []

    async def attempt() -> None:
        try:
            await verifier.verify(sign(new_key(), claims_for()))
        except Unauthorized as exc:
            failures.append(exc)

    async with anyio.create_task_group() as tasks:
        for _ in range(20):
            tasks.start_soon(attempt)

    assert len(failures) == 20
    assert source.loads == 2


async def test_keys_of_other_algorithms_in_the_jwks_are_ignored() -> None:
    key = new_key()

    async def jwks() -> dict[str, Any]:
        other = {"kty": "oct", "k": b64url(b"secret"), "kid": "hmac", "alg": "HS256"}
        return {"keys": [other, key.jwk]}

    verifier = TokenVerifier(jwks, issuer=ISSUER, audience=AUDIENCE)

    assert (await verifier.verify(sign(key, claims_for()))).role is Role.CUSTOMER
    header = {"alg": "HS256", "kid": "hmac"}
    signing_input = (
        b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims_for()).encode())
    )
    mac = hmac.new(b"secret", signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(Unauthorized):
        await verifier.verify(f"{signing_input}.{b64url(mac)}")


async def test_keys_the_shop_cannot_use_do_not_break_verification() -> None:
    """RFC 7517 makes "alg" optional: an RSA key without it, or a broken entry, in the JWKS
    must be skipped rather than fail every verification."""
    key = new_key()
    rsa_public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    rsa_jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_public)), "kid": "rsa-1"}

    for foreign in (rsa_jwk, {"kty": "OKP", "crv": "Ed25519", "kid": "broken", "x": "%%%"}):

        async def jwks(entry: dict[str, Any] = foreign) -> dict[str, Any]:
            return {"keys": [entry, key.jwk]}

        verifier = TokenVerifier(jwks, issuer=ISSUER, audience=AUDIENCE)
        assert (await verifier.verify(sign(key, claims_for()))).role is Role.CUSTOMER


# --------------------------------------------------------------------------- passwords


@pytest.fixture
def passwords() -> Passwords:
    return Passwords(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


async def test_a_password_hash_verifies_its_password_only(passwords: Passwords) -> None:
    hashed = await passwords.hash("correct horse battery")

    assert hashed.startswith("$argon2id$")
    assert "correct horse battery" not in hashed
    assert await passwords.verify(hashed, "correct horse battery") is True
    assert await passwords.verify(hashed, "correct horse batterY") is False
    assert await passwords.verify(hashed, "") is False
    assert await passwords.hash("correct horse battery") != hashed  # salted


async def test_verifying_without_a_hash_or_with_a_broken_one_is_false(
    passwords: Passwords,
) -> None:
    assert await passwords.verify(None, "anything") is False
    assert await passwords.verify("not-an-argon2-hash", "anything") is False
    assert await passwords.verify("", "anything") is False


def test_the_hasher_follows_the_settings() -> None:
    hasher = password_hasher(
        IdentitySettings(argon2_time_cost=2, argon2_memory_kib=16, argon2_parallelism=1)
    )
    assert (hasher.time_cost, hasher.memory_cost, hasher.parallelism) == (2, 16, 1)


def test_emails_are_normalised_for_lookups() -> None:
    assert normalise_email("  Ada.Lovelace@Example.COM ") == "ada.lovelace@example.com"


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-email", "password": "long enough", "name": "Ada"},
        {"email": "ada@example.com", "password": "short", "name": "Ada"},
        {"email": "ada@example.com", "password": "x" * 129, "name": "Ada"},
        {"email": "ada@example.com", "password": "long enough", "name": ""},
        {"email": "ada@example.com", "password": "long enough", "name": "Ada\x1b[31m"},
        {"email": "ada@example.com", "password": "long enough", "name": "Ada", "role": "admin"},
    ],
)
def test_registration_bodies_are_validated(body: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        UserCreate.model_validate(body)
