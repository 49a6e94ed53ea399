"""Identity settings (``IDENTITY_*``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr

from shop.kernel.settings import ShopSettings, is_loopback

DEVELOPMENT_ADMIN_PASSWORD = "shopkata-admin"  # noqa: S105 (published in the README)
"""The local development admin password (the Makefile's default): refused off loopback."""


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
    jwks_max_age_seconds: float = Field(
        300.0,
        gt=0,
        description="How long a verifier uses the JWKS it loaded before loading it again: a "
        "retired key stops verifying everywhere within this time",
    )
    # argon2id cost: the defaults follow RFC 9106's second recommendation; load tests and
    # the test suites lower them, because a login is otherwise ~200 ms of CPU.
    argon2_time_cost: int = Field(3, ge=1)
    argon2_memory_kib: int = Field(65_536, ge=8)
    argon2_parallelism: int = Field(4, ge=1)
    # Sign-in flood and brute force (docs/api.md: 429 and 503 at /auth/token).
    max_concurrent_hashes: int = Field(
        2,
        ge=1,
        description="Password hashes (sign-in, registration) computed at once per process; "
        "each takes ~200 ms of CPU and argon2_memory_kib of memory",
    )
    hash_wait_seconds: float = Field(
        1.0,
        ge=0,
        description="How long a sign-in waits for a hashing slot before a 503 with Retry-After",
    )
    throttle_account_failures: int = Field(
        5, ge=1, description="Failed sign-ins on one account, within the window, before back-off"
    )
    throttle_address_failures: int = Field(
        30, ge=1, description="Failed sign-ins from one client address before back-off"
    )
    throttle_window_seconds: int = Field(
        900, ge=1, description="Failures are forgotten this long after the last one"
    )
    throttle_base_delay_seconds: float = Field(
        1.0, gt=0, description="The first back-off; each further failure doubles it"
    )
    throttle_max_delay_seconds: float = Field(
        900.0, gt=0, description="The longest back-off one failure can impose"
    )
    throttle_redis_url: str | None = Field(
        None,
        description="Count failures in Redis (redis://host:6379/0), shared by every replica; "
        "unset: in this process's memory",
    )
    bootstrap_admin_email: str | None = Field(
        None, description="Created (once) as an admin at start-up when set"
    )
    bootstrap_admin_password: SecretStr | None = Field(
        None,
        description="The bootstrap admin's password; the development default "
        f"{DEVELOPMENT_ADMIN_PASSWORD!r} is refused unless the server listens on loopback only",
    )

    def check_listener(self, host: str) -> None:
        """Raise :class:`ValueError` when serving on ``host`` would publish an admin whose
        password is in the README: the development password is for loopback only."""
        password = self.bootstrap_admin_password
        if (
            self.bootstrap_admin_email
            and password is not None
            and password.get_secret_value() == DEVELOPMENT_ADMIN_PASSWORD
            and not is_loopback(host)
        ):
            raise ValueError(
                f"refusing to listen on {host}: IDENTITY_BOOTSTRAP_ADMIN_PASSWORD is the"
                f" published development password {DEVELOPMENT_ADMIN_PASSWORD!r}, which is for"
                " 127.0.0.1 only; set a password of your own (a .env file holds it)"
            )
