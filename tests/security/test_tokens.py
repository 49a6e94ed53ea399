"""Finding 9 (identity): access tokens say what they are, keys stay private, keys rotate.

- Every access token carries ``typ: at+jwt`` in its JOSE header (RFC 9068); every verifier
  (the services', the monolith's, the gateway's) refuses a token without it or with another
  type, so no other JWT signed by the same key passes as an access token.
- A signing key file that its group or others may read is refused on load; the key files
  are created 0600, their folder 0700.
- ``python -m monolith rotate-key`` publishes a new key beside the old one and signs with
  it; the old key is retired (``retire-keys --kid``, or by itself after the token lifetime)
  and every verifier, the gateway's remembered tokens included, stops accepting its tokens.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import httpx2
import jwt
import pytest

from monolith import __main__ as monolith_cli
from shop.identity.dependencies import IdentityRuntime
from shop.identity.tokens import write_key_file
from tests import support, targets
from tests.contract.helpers import (
    Target,
    User,
    bearer,
    claims_for,
    expect,
    new_customer,
    token_header,
)

pytestmark = pytest.mark.anyio

PROTECTED = ("/users/me", "/cart")


def _forge(target: Target, user: User, header: dict[str, Any]) -> str:
    """A token signed with the shop's own key, with the given JOSE header (kid added)."""
    kid = token_header(user.token)["kid"]
    return jwt.encode(
        claims_for(target, user),
        target.signing_key(),
        algorithm="EdDSA",
        headers={"kid": kid, **header},
    )


async def test_issued_access_tokens_are_typed_at_jwt(client: httpx2.AsyncClient) -> None:
    customer = await new_customer(client)
    assert token_header(customer.token).get("typ") == "at+jwt"


@pytest.mark.parametrize(
    "header",
    [{"typ": None}, {"typ": "JWT"}, {"typ": "id_token+jwt"}, {"typ": "at+jwt+x"}],
    ids=["no-typ", "JWT", "id-token", "near-miss"],
)
async def test_a_token_of_another_type_is_refused_by_every_verifier(
    client: httpx2.AsyncClient, shop: Target, header: dict[str, Any]
) -> None:
    customer = await new_customer(client)
    forged = _forge(shop, customer, header)
    if header["typ"] is None:
        assert "typ" not in token_header(forged)
    for path in PROTECTED:
        resp = await client.get(path, headers=bearer(forged))
        assert resp.status_code == 401, f"{path} accepted a token typed {header['typ']!r}"
        assert "type" in resp.json()["detail"], resp.json()
    # The same claims, typed as an access token, pass: only the type differed.
    typed = _forge(shop, customer, {"typ": "at+jwt"})
    for path in PROTECTED:
        expect(await client.get(path, headers=bearer(typed)), 200)


# --------------------------------------------------------------------------- key files


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "jwt-ed25519.pem"
    assert write_key_file(path)
    settings = support.identity_settings("").model_copy(
        update={"signing_key_pem": None, "signing_key_file": path}
    )
    IdentityRuntime.from_settings(settings)  # 0600: loads
    for mode in (0o640, 0o604, 0o660):
        path.chmod(mode)
        with pytest.raises(RuntimeError) as refused:
            IdentityRuntime.from_settings(settings)
        message = str(refused.value)
        assert str(path) in message
        assert "chmod 600" in message, message


def test_keygen_creates_a_private_file_in_a_private_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "var" / "keys" / "jwt-ed25519.pem"
    monkeypatch.setenv("IDENTITY_SIGNING_KEY_FILE", str(path))
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'unused.db'}")
    previous = os.umask(0o022)  # the usual umask, which would make both world-readable
    try:
        monolith_cli.main(["keygen"])
    finally:
        os.umask(previous)
    assert "created signing key" in capsys.readouterr().out
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


# --------------------------------------------------------------------------- rotation


async def eventually(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 15) -> None:
    """Poll ``check`` until it holds, at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        await anyio.sleep(0.2)


@asynccontextmanager
async def rotating_shop(shape: str, key_file: Path) -> AsyncIterator[httpx2.AsyncClient]:
    """The shape in process, signing with ``key_file``; verifiers reload the JWKS each second."""
    topology = (
        "topologies/services.toml" if shape == "services" else "topologies/kata-00-monolith.toml"
    )
    async with (
        targets.deployment(
            topology,
            identity_overrides={
                "signing_key_pem": None,
                "signing_key_file": key_file,
                "jwks_max_age_seconds": 1.0,
            },
            gateway_overrides={"jwks_max_age_seconds": 1.0},
        ) as raw,
        httpx2.AsyncClient(
            transport=raw["transport"], base_url=raw["base_url"], timeout=30
        ) as client,
    ):
        yield client


async def cli(monkeypatch: pytest.MonkeyPatch, key_file: Path, *args: str) -> None:
    monkeypatch.setenv("IDENTITY_SIGNING_KEY_FILE", str(key_file))
    await anyio.to_thread.run_sync(monolith_cli.main, list(args))


async def kids(client: httpx2.AsyncClient) -> list[str]:
    document = expect(await client.get("/.well-known/jwks.json"), 200)
    return [key["kid"] for key in document["keys"]]


@pytest.mark.parametrize("shape", ["monolith", "services"])
async def test_a_rotated_key_signs_new_tokens_and_a_retired_one_stops_verifying(
    shape: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key_file = tmp_path / "keys" / "jwt-ed25519.pem"
    assert write_key_file(key_file)
    async with rotating_shop(shape, key_file) as client:
        old = await new_customer(client)
        old_kid = token_header(old.token)["kid"]
        assert await kids(client) == [old_kid]
        expect(await client.get("/users/me", headers=old.headers), 200)  # remembered now

        await cli(monkeypatch, key_file, "rotate-key")

        async def both_published() -> bool:
            return len(await kids(client)) == 2

        await eventually(both_published, "the new key is published beside the old one")
        new_kid = next(kid for kid in await kids(client) if kid != old_kid)
        fresh = await new_customer(client)
        assert token_header(fresh.token)["kid"] == new_kid, "new tokens use the new key"
        for user in (old, fresh):
            expect(await client.get("/users/me", headers=user.headers), 200)

        await cli(monkeypatch, key_file, "retire-keys", "--kid", old_kid)

        async def old_token_refused() -> bool:
            return (await client.get("/users/me", headers=old.headers)).status_code == 401

        await eventually(old_token_refused, "a token of the retired key is refused")
        assert await kids(client) == [new_kid]
        expect(await client.get("/users/me", headers=fresh.headers), 200)
        expect(await client.get("/cart", headers=bearer(fresh.token)), 200)


async def test_an_old_key_leaves_the_jwks_by_itself_after_the_token_lifetime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "keys" / "jwt-ed25519.pem"
    assert write_key_file(key_file)
    async with rotating_shop("monolith", key_file) as client:
        (old_kid,) = await kids(client)
        await cli(monkeypatch, key_file, "rotate-key")
        out = capsys.readouterr().out
        assert old_kid in out

        async def both_published() -> bool:
            return len(await kids(client)) == 2

        await eventually(both_published, "the new key is published beside the old one")
        # Rotated longer ago than a token lives (the shop's default lifetime, 3,600 s).
        (previous,) = [p for p in key_file.parent.iterdir() if p != key_file]
        long_ago = time.time() - 3_600 - 120
        os.utime(previous, (long_ago, long_ago))

        async def old_key_gone() -> bool:
            return old_kid not in await kids(client)

        await eventually(old_key_gone, "the old key leaves the JWKS after the token lifetime")
        await cli(monkeypatch, key_file, "retire-keys")
        assert sorted(p.name for p in key_file.parent.iterdir()) == [key_file.name]
