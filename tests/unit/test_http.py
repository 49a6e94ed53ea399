"""The resilient upstream client: retries only where safe, budgets, the circuit breaker."""

from __future__ import annotations

import time

import httpx2
import pytest

from shop.kernel.http import (
    INTERNAL_TOKEN_HEADER,
    BadUpstreamResponse,
    CircuitBreaker,
    Timeouts,
    Upstream,
    UpstreamTimeout,
    UpstreamUnavailable,
    expect,
)

pytestmark = pytest.mark.anyio


class Script:
    """A transport that plays a list of outcomes (an exception class or a status) in turn."""

    def __init__(self, *outcomes: type[httpx2.TransportError] | int) -> None:
        self.outcomes = list(outcomes)
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        outcome = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if isinstance(outcome, int):
            return httpx2.Response(outcome, json={"ok": outcome < 400})
        raise outcome("scripted", request=request)


def upstream(script: Script, **kwargs: object) -> Upstream:
    options: dict[str, object] = {"backoff": 0.001, "retries": 2}
    options.update(kwargs)
    return Upstream(
        "stock",
        ["http://a", "http://b"],
        transport=httpx2.MockTransport(script),
        headers={INTERNAL_TOKEN_HEADER: "secret"},
        **options,  # type: ignore[arg-type]
    )


async def test_a_connect_error_is_retried_even_for_a_write_since_nothing_was_sent() -> None:
    script = Script(httpx2.ConnectError, 200)
    client = upstream(script)
    response = await client.request("POST", "/x", idempotent=False)
    assert response.status_code == 200
    assert len(script.requests) == 2
    # Round robin over the replicas, and the service token on every call.
    assert [r.url.host for r in script.requests] == ["a", "b"]
    assert all(r.headers[INTERNAL_TOKEN_HEADER] == "secret" for r in script.requests)
    await client.aclose()


async def test_a_read_timeout_is_not_retried_for_a_write() -> None:
    script = Script(httpx2.ReadTimeout, 200)
    client = upstream(script)
    with pytest.raises(UpstreamTimeout) as caught:
        await client.request("POST", "/x", idempotent=False)
    assert caught.value.status == 504
    assert len(script.requests) == 1
    await client.aclose()


async def test_an_idempotent_call_is_retried_on_timeouts_and_503() -> None:
    script = Script(httpx2.ReadTimeout, 503, 200)
    client = upstream(script)
    assert (await client.request("GET", "/x", idempotent=True)).status_code == 200
    assert len(script.requests) == 3
    await client.aclose()


async def test_retries_stop_at_the_limit_with_the_last_error() -> None:
    script = Script(503)
    client = upstream(script, retries=2)
    with pytest.raises(UpstreamUnavailable):
        await client.request("GET", "/x", idempotent=True)
    assert len(script.requests) == 3
    await client.aclose()


async def test_client_errors_pass_through_untouched() -> None:
    script = Script(409)
    client = upstream(script)
    response = await client.request("PUT", "/x", idempotent=True)
    assert response.status_code == 409
    assert len(script.requests) == 1
    with pytest.raises(BadUpstreamResponse):
        expect(response, 200)
    await client.aclose()


async def test_the_budget_bounds_the_whole_call() -> None:
    script = Script(503)
    client = upstream(
        script, retries=5, backoff=0.2, timeouts=Timeouts(connect=0.1, read=0.1, budget=0.3)
    )
    started = time.monotonic()
    with pytest.raises(UpstreamUnavailable):
        await client.request("GET", "/x", idempotent=True)
    assert time.monotonic() - started < 0.5
    assert len(script.requests) < 6
    await client.aclose()


async def test_an_open_circuit_fails_fast_then_probes_and_closes() -> None:
    now = [100.0]
    breaker = CircuitBreaker(threshold=2, reset_after=5.0, clock=lambda: now[0])
    script = Script(httpx2.ConnectError)
    client = upstream(script, retries=0, breaker=breaker)
    for _ in range(2):
        with pytest.raises(UpstreamUnavailable):
            await client.request("GET", "/x", idempotent=True)
    assert breaker.state == "open"
    calls = len(script.requests)
    with pytest.raises(UpstreamUnavailable, match="failing fast"):
        await client.request("GET", "/x", idempotent=True)
    assert len(script.requests) == calls, "an open circuit sends nothing"

    now[0] += 5.0
    assert breaker.state == "half-open"
    script.outcomes = [200]
    assert (await client.request("GET", "/x", idempotent=True)).status_code == 200
    assert breaker.state == "closed"
    await client.aclose()


def test_a_failed_probe_opens_the_circuit_again() -> None:
    now = [0.0]
    breaker = CircuitBreaker(threshold=3, reset_after=1.0, clock=lambda: now[0])
    for _ in range(3):
        breaker.failure()
    now[0] = 1.0
    assert breaker.allow() is True
    assert breaker.allow() is False, "one probe at a time"
    breaker.failure()
    assert breaker.state == "open"
