"""Identity settings (``IDENTITY_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from shop.kernel.settings import ShopSettings


class IdentitySettings(ShopSettings, env_prefix="IDENTITY_"):
    signing_key_file: Path = Field(
        Path("var/keys/jwt-ed25519.pem"),
        description="PEM file of the Ed25519 private key that signs access tokens",
    )
    signing_key_pem: SecretStr | None = Field(
        None, description="The private key itself; takes precedence over the file"
    )
    issuer: str = "shopkata"
    audience: str = "shopkata"
    access_token_ttl_seconds: int = Field(3600, ge=60, le=86_400)
    # argon2id cost: the defaults follow RFC 9106's second recommendation; load tests and
    # the test suites lower them, because a login is otherwise ~200 ms of CPU.
    argon2_time_cost: int = Field(3, ge=1)
    argon2_memory_kib: int = Field(65_536, ge=8)
    argon2_parallelism: int = Field(4, ge=1)
    bootstrap_admin_email: str | None = Field(
        None, description="Created (once) as an admin at start-up when set"
    )
    bootstrap_admin_password: SecretStr | None = None
