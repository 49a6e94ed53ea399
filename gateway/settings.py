"""Gateway settings (``GATEWAY_*``, plus the launcher's ``SHOP_TOPOLOGY`` and ``SHOP_REPLICAS``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, model_validator

from shop.kernel.edge import EdgeSettings
from shop.kernel.topology import DEFAULT_TOPOLOGY, parse_replicas


class GatewaySettings(EdgeSettings, env_prefix="GATEWAY_", populate_by_name=True):
    """Everything the gateway reads from its environment, in one place."""

    topology: Path = Field(
        DEFAULT_TOPOLOGY,
        # The launcher and every service read SHOP_TOPOLOGY; the gateway follows the same file.
        validation_alias=AliasChoices("SHOP_TOPOLOGY", "GATEWAY_TOPOLOGY"),
        description="The topology file: which services there are and where they listen",
    )
    routes: dict[str, str] | None = Field(
        None,
        description='Public path prefix -> service, as JSON ({"/products": "catalog"}); unset:'
        " the shop's own table, each context's declared prefixes to the service that serves it",
    )
    replicas: str = Field(
        "",
        validation_alias=AliasChoices("SHOP_REPLICAS", "GATEWAY_REPLICAS"),
        description='Replicate services on top of the file, like "catalog=2,orders=3"',
    )
    upstream_host: str = Field("127.0.0.1", description="The host every service listens on")
    edge_token: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("SHOP_EDGE_TOKEN", "GATEWAY_EDGE_TOKEN"),
        description="Shared with the services (not the internal token): sent with the "
        "caller's address, which the services then trust for per-address limits",
    )
    issuer: str = Field("shopkata", description="The `iss` every access token must carry")
    audience: str = Field("shopkata", description="The `aud` every access token must carry")
    connect_timeout_seconds: float = Field(1.0, gt=0)
    read_timeout_seconds: float = Field(
        10.0,
        gt=0,
        # Longer than a service's own budget for the calls it makes (8 s in shop.kernel.http),
        # so a service times out first and answers with its own, more precise problem.
        description="Longest wait for an upstream's response head, and between body chunks",
    )
    readiness_timeout_seconds: float = Field(2.0, gt=0)
    readiness_cache_seconds: float = Field(
        1.0,
        ge=0,
        description="How long one fan-out of /readyz to the upstreams answers every /readyz",
    )
    verified_token_ttl_seconds: float = Field(
        60.0,
        ge=0,
        description="How long a verified access token is taken on trust (never past its exp; "
        "0 verifies every request)",
    )
    jwks_max_age_seconds: float = Field(
        300.0,
        gt=0,
        description="How long the JWKS is used before it is loaded again: a retired key's "
        "tokens are refused, remembered ones included, within this time",
    )
    breaker_threshold: int = Field(5, ge=1, description="Failures in a row that open a circuit")
    breaker_reset_seconds: float = Field(
        2.0, gt=0, description="How long an open circuit fails fast before one probe"
    )
    max_connections_per_upstream: int = Field(
        256,
        ge=1,
        description="Pooled connections to each upstream address (a replica of a service): "
        "one slow service cannot take the connections of another",
    )
    pool_timeout_seconds: float = Field(
        1.0,
        gt=0,
        description="Longest wait for a pooled connection to come free (then 503, Retry-After)",
    )
    max_connections_per_client: int = Field(
        128,
        ge=0,
        # Half an upstream's pool: one address cannot hold a service's every connection.
        description="Open connections one client address may hold (0: no cap); the gateway "
        "faces clients, so it caps by default",
    )
    openapi_cache_seconds: float = Field(
        300.0, ge=0, description="How long a complete merged OpenAPI document is reused"
    )

    @model_validator(mode="after")
    def _replicas_parse(self) -> GatewaySettings:
        # Fail at start-up, not at the first request, on a malformed override.
        parse_replicas(self.replicas)
        return self
