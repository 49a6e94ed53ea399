"""The Ed25519 signing key, its JWKS entry, and access-token issuing."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shop.identity.settings import IdentitySettings
from shop.kernel.security import ALGORITHM, Role


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
    """Create a new private key file (mode 0600) unless one exists; True if created."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(generate_private_key_pem())
    return True


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
        """Load the configured key; a missing key file is a clear start-up error."""
        if settings.signing_key_pem is not None:
            return cls.from_pem(settings.signing_key_pem.get_secret_value())
        path = settings.signing_key_file
        if not path.is_file():
            raise RuntimeError(
                f"no signing key at {path}: run `make keys` (or `python -m shop.identity keygen`)"
                " or set IDENTITY_SIGNING_KEY_PEM"
            )
        return cls.from_pem(path.read_text(encoding="ascii"))

    def jwks(self) -> dict[str, Any]:
        return {"keys": [dict(self.jwk)]}


@dataclass(frozen=True)
class TokenIssuer:
    key: SigningKey
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
        return jwt.encode(
            claims, self.key.private_key, algorithm=ALGORITHM, headers={"kid": self.key.kid}
        )
