"""The Ed25519 signing keys, their JWKS, rotation, and access-token issuing.

The key file (``IDENTITY_SIGNING_KEY_FILE``) holds the key that signs. ``rotate-key`` sets
it aside beside the file as ``<stem>.previous-<kid>.pem`` and writes a new one; a set-aside
key stays in the JWKS, so the tokens it signed keep verifying, until it is retired: by
``retire-keys`` or by itself once it was set aside longer ago than a token lives.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shop.identity.settings import IdentitySettings
from shop.kernel.secrets import private_folder, read_private, write_private
from shop.kernel.security import ACCESS_TOKEN_TYPE, ALGORITHM, Role

logger = logging.getLogger("shop.identity.keys")

PREVIOUS_INFIX = ".previous-"
"""``jwt-ed25519.previous-<kid>.pem``: a key set aside by rotation, published until retired."""
RETIRE_MARGIN_SECONDS = 60
"""Beyond the token lifetime: the verifiers' leeway and some clock skew."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def generate_private_key_pem() -> str:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem.decode("ascii")


def write_key_file(path: Path) -> bool:
    """Create a new private key file (0600, its folder 0700) unless one exists; True if
    created."""
    if path.exists():
        return False
    private_folder(path.parent)
    write_private(path, generate_private_key_pem())
    return True


def read_key_file(path: Path) -> SigningKey:
    """Load a key file; one that its group or others may access is refused, loudly."""
    return SigningKey.from_pem(read_private(path, what="the signing key"))


def previous_key_files(path: Path) -> list[Path]:
    """The keys ``rotate-key`` set aside, still published until retired, oldest first."""
    found = path.parent.glob(f"{path.stem}{PREVIOUS_INFIX}*{path.suffix}")
    return sorted(found, key=lambda p: (p.stat().st_mtime, p.name))


def _previous_name(path: Path, kid: str) -> Path:
    return path.with_name(f"{path.stem}{PREVIOUS_INFIX}{kid}{path.suffix}")


def rotate_key_file(path: Path) -> tuple[SigningKey, SigningKey]:
    """Sign with a new key from now on; the current one stays published beside it.

    The current key is copied aside as ``<stem>.previous-<kid>.pem`` (its modification time
    says when it stopped signing), then the new key replaces the file in one rename, so a
    reader sees the old file or the new one, never none. Returns (old, new).
    """
    old = read_key_file(path)
    aside = _previous_name(path, old.kid)
    if not aside.exists():
        write_private(aside, path.read_text(encoding="ascii"))
    os.utime(aside)
    fresh = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    write_private(fresh, generate_private_key_pem())
    os.replace(fresh, path)
    return old, read_key_file(path)


def retire_key_files(
    path: Path, *, ttl_seconds: int, kid: str | None = None, now: float | None = None
) -> list[str]:
    """Delete set-aside keys: the one named ``kid`` at once (a compromised key), or else every
    one set aside longer ago than a token lives. Returns the retired kids."""
    now = time.time() if now is None else now
    retired = []
    for previous in previous_key_files(path):
        its_kid = previous.name[len(path.stem) + len(PREVIOUS_INFIX) : -len(path.suffix) or None]
        expired = previous.stat().st_mtime + ttl_seconds + RETIRE_MARGIN_SECONDS <= now
        if its_kid == kid or (kid is None and expired):
            previous.unlink()
            retired.append(its_kid)
    return retired


@dataclass(frozen=True)
class SigningKey:
    """The private key that signs access tokens, with its public JWK and ``kid``."""

    private_key: Ed25519PrivateKey
    jwk: dict[str, str]

    @property
    def kid(self) -> str:
        return self.jwk["kid"]

    @classmethod
    def from_pem(cls, pem: str) -> SigningKey:
        key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the signing key must be an Ed25519 private key")
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        x = _b64url(raw)
        # RFC 7638 thumbprint: a kid that changes exactly when the key does.
        canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
        kid = _b64url(hashlib.sha256(canonical.encode("ascii")).digest())
        jwk = {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": ALGORITHM, "use": "sig"}
        return cls(private_key=key, jwk=jwk)

    @classmethod
    def from_settings(cls, settings: IdentitySettings) -> SigningKey:
        """Load the configured key; a missing or unprotected key file is a clear start-up
        error."""
        if settings.signing_key_pem is not None:
            return cls.from_pem(settings.signing_key_pem.get_secret_value())
        path = settings.signing_key_file
        if not path.is_file():
            raise RuntimeError(
                f"no signing key at {path}: run `make keys` (or `python -m monolith keygen`)"
                " or set IDENTITY_SIGNING_KEY_PEM"
            )
        return read_key_file(path)

    def current(self) -> SigningKey:
        """The key that signs: this one (a :class:`KeyRing` may change its own)."""
        return self

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(self.jwk)]}


class SigningKeys(Protocol):
    """Where the issuer finds the key that signs now, and the JWKS to publish."""

    def current(self) -> SigningKey: ...

    def jwks(self) -> dict[str, Any]: ...


class KeyRing:
    """The signing key file and the keys set aside by ``rotate-key``, reloaded as they change.

    The current key signs; it and every set-aside key not yet retired are published. Files
    are read again at most once per ``reload_seconds``, so every process (and every replica)
    follows a rotation or a retirement within about a second, without a restart. A reload
    that fails (a file made unreadable, say) keeps the keys already loaded and logs why.
    """

    def __init__(
        self,
        path: Path,
        *,
        ttl_seconds: int,
        reload_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._ttl = ttl_seconds
        self._reload_seconds = reload_seconds
        self._clock = clock
        self._current, self._published = self._load()
        self._loaded_at = clock()

    def _load(self) -> tuple[SigningKey, tuple[SigningKey, ...]]:
        current = read_key_file(self._path)
        cutoff = time.time() - self._ttl - RETIRE_MARGIN_SECONDS
        published: list[SigningKey] = []
        for previous in previous_key_files(self._path):
            try:
                if previous.stat().st_mtime > cutoff:
                    published.append(read_key_file(previous))
            except FileNotFoundError:
                continue  # retired while we listed the folder
        return current, tuple(key for key in published if key.kid != current.kid)

    def _maybe_reload(self) -> None:
        now = self._clock()
        if now - self._loaded_at < self._reload_seconds:
            return
        self._loaded_at = now
        try:
            self._current, self._published = self._load()
        except (OSError, ValueError, RuntimeError) as exc:
            logger.error(
                "signing keys not reloaded from %s, keeping the loaded ones: %s", self._path, exc
            )

    def current(self) -> SigningKey:
        self._maybe_reload()
        return self._current

    def jwks(self) -> dict[str, Any]:
        self._maybe_reload()
        return {"keys": [dict(key.jwk) for key in (self._current, *reversed(self._published))]}


def signing_keys(settings: IdentitySettings) -> SigningKeys:
    """The configured keys: the PEM setting (fixed), or the key file and its rotations."""
    if settings.signing_key_pem is not None:
        return SigningKey.from_settings(settings)
    SigningKey.from_settings(settings)  # the clear errors for a missing or exposed file
    return KeyRing(settings.signing_key_file, ttl_seconds=settings.access_token_ttl_seconds)


@dataclass(frozen=True)
class TokenIssuer:
    key: SigningKeys
    issuer: str
    audience: str
    ttl_seconds: int

    def issue(self, user_id: uuid.UUID, role: Role) -> str:
        now = int(time.time())
        claims = {
            "sub": str(user_id),
            "role": role.value,
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "exp": now + self.ttl_seconds,
            "jti": uuid.uuid4().hex,
        }
        key = self.key.current()
        # typ at+jwt (RFC 9068): verifiers accept access tokens only, no other JWT we sign.
        return jwt.encode(
            claims,
            key.private_key,
            algorithm=ALGORITHM,
            headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYPE},
        )
