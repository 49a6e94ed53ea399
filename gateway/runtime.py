"""What the gateway holds while it runs: the route table, the upstream pools, the client.

Made by :func:`gateway.app.create_app`; the client is opened in the app's lifespan (an
aiohttp session belongs to a running event loop) and closed with it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

import anyio
import httpx2

from gateway.auth import JWKS_PATH, EdgeAuth
from gateway.clients import (
    AiohttpClient,
    ClientTimeouts,
    HttpxClient,
    PoolLimits,
    ProxyClient,
    UpstreamError,
)
from gateway.openapi import merge_documents
from gateway.proxy import is_internal
from gateway.settings import GatewaySettings
from gateway.upstreams import ServicePool
from shop.kernel.edge import BodyLimit
from shop.kernel.errors import ServiceUnavailable
from shop.kernel.http import CircuitBreaker, UpstreamTimeout, UpstreamUnavailable
from shop.kernel.topology import Topology

logger = logging.getLogger("gateway")


def _single_segment(prefix: str) -> bool:
    """``/products``: exactly one segment, no trailing slash."""
    return len(prefix) > 1 and "/" not in prefix[1:]


class Gateway:
    """Routes, pools, the edge token check, readiness and the merged OpenAPI document."""

    def __init__(
        self,
        settings: GatewaySettings,
        topology: Topology,
        *,
        transports: Mapping[str, httpx2.AsyncBaseTransport] | None = None,
        info: Mapping[str, Any],
    ) -> None:
        self.settings = settings
        self.topology = topology
        self.edge_token: bytes | None = (
            settings.edge_token.get_secret_value().encode() if settings.edge_token else None
        )
        """Sent with the caller's address to the services (``SHOP_EDGE_TOKEN``)."""
        if self.edge_token is None:
            logger.warning(
                "SHOP_EDGE_TOKEN is not set: the services cannot tell callers apart, and"
                " identity counts every failed sign-in under the gateway's own address"
            )
        self.info = dict(info)
        self._transports = dict(transports) if transports is not None else None

        def breaker() -> CircuitBreaker:
            return CircuitBreaker(
                threshold=settings.breaker_threshold, reset_after=settings.breaker_reset_seconds
            )

        self.pools = {
            name: ServicePool(spec, host=settings.upstream_host, breaker=breaker)
            for name, spec in topology.services.items()
        }
        # Only routed services are the gateway's upstreams (a topology may list others).
        self.upstreams = [
            name for name in topology.services if name in {s for _, s in topology.routes}
        ]
        self._route_by_segment: dict[str, ServicePool] | None = None
        if all(_single_segment(prefix) for prefix, _ in topology.routes):
            self._route_by_segment = {
                prefix[1:]: self.pools[service] for prefix, service in topology.routes
            }
        self.auth = EdgeAuth(
            self._load_jwks,
            issuer=settings.issuer,
            audience=settings.audience,
            remember_seconds=settings.verified_token_ttl_seconds,
            jwks_max_age_seconds=settings.jwks_max_age_seconds,
        )
        self.body_limit = BodyLimit(settings.max_body_bytes)
        self._client: ProxyClient | None = None
        self._openapi: tuple[float, dict[str, Any]] | None = None
        self._openapi_lock = anyio.Lock()
        self._ready: tuple[float, bool] | None = None
        self._ready_lock = anyio.Lock()

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Open the upstream client (in the lifespan: aiohttp needs the running loop)."""
        timeouts = ClientTimeouts(
            connect=self.settings.connect_timeout_seconds,
            read=self.settings.read_timeout_seconds,
            pool=self.settings.pool_timeout_seconds,
        )
        pools = PoolLimits(per_upstream=self.settings.max_connections_per_upstream)
        if self._transports is not None or self.settings.client == "httpx":
            self._client = HttpxClient(timeouts, transports=self._transports, pools=pools)
        else:
            self._client = AiohttpClient(timeouts, pools=pools)

    async def aclose(self) -> None:
        """Close the upstream client and its pooled connections."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def client(self) -> ProxyClient:
        """The open upstream client (only while the app's lifespan runs)."""
        if self._client is None:
            raise RuntimeError("the gateway's client is not open: run the app with its lifespan")
        return self._client

    # --- routing ------------------------------------------------------------------------

    def route(self, path: str) -> ServicePool | None:
        """The pool of the service a public path goes to (longest prefix), if any."""
        if self._route_by_segment is None:
            spec = self.topology.route(path)
            return None if spec is None else self.pools[spec.name]
        # Every prefix is one segment, so the first segment decides: a dict lookup instead
        # of a scan of the route table on every request.
        return self._route_by_segment.get(path.split("/", 2)[1] if path[:1] == "/" else "")

    # --- the identity keys --------------------------------------------------------------

    async def _load_jwks(self) -> dict[str, Any]:
        pool = self.route(JWKS_PATH)
        if pool is None:
            raise UpstreamUnavailable(f"No route serves {JWKS_PATH}: tokens cannot be checked.")
        document = await pool.get_json(self.client, JWKS_PATH, request_id=uuid.uuid4().hex)
        if not isinstance(document, dict):
            raise UpstreamUnavailable("The JWKS document is not a JSON object.")
        return document

    # --- readiness ----------------------------------------------------------------------

    async def _replica_ready(self, service: str, url: str) -> str | None:
        """``None`` when the replica's /readyz answers 200, else why not."""
        response = None
        try:
            with anyio.fail_after(self.settings.readiness_timeout_seconds):
                response = await self.client.send(
                    service,
                    "GET",
                    f"{url}/readyz",
                    [(b"x-request-id", uuid.uuid4().hex.encode())],
                    None,
                )
                await response.read()
        except TimeoutError:
            return "timeout"
        except UpstreamError as exc:
            return f"unreachable ({type(exc).__name__})"
        finally:
            if response is not None:
                await response.aclose()
        return None if response.status == 200 else f"answered {response.status}"

    async def readiness(self) -> dict[str, str]:
        """Each upstream service: ``"ok"`` when at least one replica is ready.

        Checked directly, around the circuit breakers: readiness reports the upstreams as
        they are now, and must not count toward (or be refused by) the proxy's breakers.
        """
        results: dict[str, list[str | None]] = {name: [] for name in self.upstreams}

        async def check(service: str, url: str) -> None:
            results[service].append(await self._replica_ready(service, url))

        async with anyio.create_task_group() as tasks:
            for name in self.upstreams:
                for replica in self.pools[name].replicas:
                    tasks.start_soon(check, name, replica.url)
        checks = {}
        for name, outcomes in results.items():
            failures = [reason for reason in outcomes if reason is not None]
            checks[name] = "ok" if len(failures) < len(outcomes) else f"down: {failures[0]}"
        return checks

    async def ready(self) -> bool:
        """Whether every upstream service has a ready replica, as last checked.

        The fan-out to every replica runs at most once per ``readiness_cache_seconds``, and
        callers arriving while it runs wait for its result: a flood of /readyz is not
        multiplied into every service. Which upstream is down, and why, is logged.
        """
        async with self._ready_lock:
            now = time.monotonic()
            if self._ready is not None and now - self._ready[0] < (
                self.settings.readiness_cache_seconds
            ):
                return self._ready[1]
            checks = await self.readiness()
            for name, outcome in checks.items():
                if outcome != "ok":
                    logger.warning("not ready: upstream %s is %s", name, outcome)
            ready = all(outcome == "ok" for outcome in checks.values())
            self._ready = (time.monotonic(), ready)
            return ready

    # --- OpenAPI ------------------------------------------------------------------------

    async def openapi(self, own: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """The merged document and the services whose documents could not be had.

        A complete document is reused for ``openapi_cache_seconds``; an incomplete one is
        served but fetched again at the next request.
        """
        async with self._openapi_lock:
            now = time.monotonic()
            if self._openapi is not None and now - self._openapi[0] < (
                self.settings.openapi_cache_seconds
            ):
                return self._openapi[1], []
            documents: dict[str, dict[str, Any]] = {}
            missing: list[str] = []

            async def fetch(name: str) -> None:
                try:
                    document = await self.pools[name].get_json(
                        self.client, "/openapi.json", request_id=uuid.uuid4().hex
                    )
                except (UpstreamUnavailable, UpstreamTimeout, ServiceUnavailable) as exc:
                    logger.warning("OpenAPI document of %s: %s", name, exc.detail)
                    missing.append(name)
                    return
                if isinstance(document, dict):
                    documents[name] = document
                else:
                    missing.append(name)

            async with anyio.create_task_group() as tasks:
                for name in self.upstreams:
                    tasks.start_soon(fetch, name)

            def owner(path: str) -> str | None:
                spec = self.topology.route(path)
                return None if spec is None else spec.name

            merged = merge_documents(
                [(name, documents[name]) for name in self.upstreams if name in documents],
                owner=owner,
                info=self.info,
                own=own,
                is_hidden=is_internal,
            )
            for conflict in merged.conflicts:
                logger.warning("OpenAPI merge: %s", conflict)
            if not missing:
                self._openapi = (now, merged.document)
            return merged.document, sorted(missing)
