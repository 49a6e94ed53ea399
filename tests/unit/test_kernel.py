"""The shared kernel: problem+json errors, auth dependencies, port binding, pagination,
input types and database URL handling, on tiny FastAPI apps reached over ASGI."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Annotated, Any, Protocol

import httpx2
import pytest
from fastapi import Depends, FastAPI, HTTPException, Query
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import Field, TypeAdapter, ValidationError
from sqlalchemy import Dialect
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from shop.identity.tokens import SigningKey, TokenIssuer, generate_private_key_pem
from shop.kernel import ops
from shop.kernel.db import (
    Database,
    ReadSession,
    Session,
    UtcDateTime,
    is_sqlite,
    make_metadata,
    normalise_url,
)
from shop.kernel.errors import (
    PROBLEM_CONTENT_TYPE,
    Conflict,
    NotFound,
    ShopError,
    Unauthorized,
    install_error_handlers,
    problem_body,
    problems,
)
from shop.kernel.pagination import PageParams, Paging
from shop.kernel.ports import provide
from shop.kernel.security import AdminUser, ClientAddress, CurrentUser, Role, TokenVerifier
from shop.kernel.types import (
    MAX_INT32,
    InputModel,
    IntId,
    LongText,
    Money,
    MoneyIn,
    Name,
    ShortText,
    Slug,
)

pytestmark = pytest.mark.anyio

HYPOTHESIS = settings(database=None, deadline=None, max_examples=150)
SECRET = "hunter2-the-database-password"


class Teapot(ShopError):
    status = 418
    slug = "teapot"
    title = "I'm a teapot"


class ItemIn(InputModel):
    name: Name
    quantity: Annotated[int, Field(ge=1)]


class Greeter(Protocol):
    def greet(self) -> str: ...


class Unbound(Protocol):
    def nothing(self) -> None: ...


class English:
    def greet(self) -> str:
        return "hello"


def make_app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/conflict")
    async def conflict() -> None:
        raise Conflict("It clashes.", product_ids=[1, 2])

    @app.get("/teapot")
    async def teapot() -> None:
        raise Teapot("Short and stout.")

    @app.get("/db/{kind}")
    async def db_error(kind: str) -> None:
        if kind == "pool":
            raise sa_exc.TimeoutError("QueuePool limit of size 10 overflow 10 reached")
        if kind == "connect":  # how a refused or over-limit connection arrives
            raise sa_exc.DBAPIError(None, None, ConnectionError("too many clients already"))
        raise sa_exc.DBAPIError("SELECT broken", {}, ValueError(SECRET))

    @app.get("/unauthorized")
    async def unauthorized() -> None:
        raise Unauthorized("Who are you?")

    @app.get("/http/{code}")
    async def http_error(code: int) -> None:
        raise HTTPException(code)

    @app.get("/items/{item_id}")
    async def get_item(item_id: int, q: Annotated[int, Query(ge=1, le=5)] = 1) -> dict[str, int]:
        return {"item_id": item_id, "q": q}

    @app.post("/items")
    async def post_item(body: ItemIn) -> dict[str, Any]:
        return body.model_dump()

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError(SECRET)

    @app.get("/me")
    async def me(principal: CurrentUser) -> dict[str, str]:
        return {"user_id": str(principal.user_id), "role": principal.role.value}

    @app.get("/admin")
    async def admin_only(principal: AdminUser) -> dict[str, str]:
        return {"role": principal.role.value}

    @app.get("/greet")
    async def greet(greeter: Annotated[Greeter, Depends(provide(Greeter))]) -> str:
        return greeter.greet()

    @app.get("/unbound")
    async def unbound(port: Annotated[Unbound, Depends(provide(Unbound))]) -> None:
        port.nothing()

    @app.get("/page")
    async def page(paging: Paging) -> dict[str, object]:
        rows = list(range(1000))[paging.offset : paging.offset + paging.fetch]
        return paging.page(rows)

    app.include_router(ops.router)
    return app


@pytest.fixture
def app() -> FastAPI:
    return make_app()


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx2.AsyncClient]:
    # raise_app_exceptions=False: the 500 handler answers, then Starlette re-raises.
    transport = httpx2.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx2.AsyncClient(transport=transport, base_url="http://kernel.test") as http:
        yield http


def problem(resp: httpx2.Response, status: int, slug: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith(PROBLEM_CONTENT_TYPE)
    body = resp.json()
    assert isinstance(body, dict)
    assert body["type"] == f"/problems/{slug}"
    assert body["status"] == status
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


# --------------------------------------------------------------------------- errors


def test_problem_body_of_a_shop_error() -> None:
    assert problem_body(Conflict("It clashes.", product_ids=[3])) == {
        "type": "/problems/conflict",
        "title": "Conflict",
        "status": 409,
        "detail": "It clashes.",
        "product_ids": [3],
    }
    assert problem_body(NotFound("Gone."))["type"] == "/problems/not-found"


async def test_a_shop_error_is_rendered_as_problem_json(client: httpx2.AsyncClient) -> None:
    body = problem(await client.get("/conflict"), 409, "conflict")
    assert body["detail"] == "It clashes."
    assert body["product_ids"] == [1, 2]

    teapot = problem(await client.get("/teapot"), 418, "teapot")
    assert (teapot["title"], teapot["detail"]) == ("I'm a teapot", "Short and stout.")


async def test_an_unauthorized_error_asks_for_a_bearer_token(client: httpx2.AsyncClient) -> None:
    resp = await client.get("/unauthorized")

    problem(resp, 401, "unauthorized")
    assert resp.headers["www-authenticate"] == "Bearer"


async def test_invalid_input_is_a_422_with_an_errors_list(client: httpx2.AsyncClient) -> None:
    cases = [
        (await client.get("/items/abc"), ["path", "item_id"]),
        (await client.get("/items/1", params={"q": "9"}), ["query", "q"]),
        (await client.post("/items", json={"name": "Tea", "quantity": 0}), ["body", "quantity"]),
        (await client.post("/items", json={"name": "Tea\x07", "quantity": 1}), ["body", "name"]),
        (
            await client.post("/items", json={"name": "Tea", "quantity": 1, "role": "admin"}),
            ["body", "role"],
        ),
    ]
    for resp, loc in cases:
        body = problem(resp, 422, "validation-error")
        assert isinstance(body["errors"], list)
        assert body["errors"]
        for error in body["errors"]:
            assert set(error) == {"loc", "msg", "type"}
            assert all(isinstance(part, str) for part in error["loc"])
        assert loc in [error["loc"] for error in body["errors"]]
        assert ".".join(loc) in body["detail"]


async def test_a_malformed_json_body_is_a_validation_error(client: httpx2.AsyncClient) -> None:
    resp = await client.post(
        "/items", content=b'{"name": "Tea",', headers={"content-type": "application/json"}
    )
    body = problem(resp, 422, "validation-error")
    assert body["errors"]


async def test_an_unknown_route_is_a_404_problem(client: httpx2.AsyncClient) -> None:
    body = problem(await client.get("/no/such/thing"), 404, "not-found")
    assert body["detail"] == "No resource at this path."


async def test_a_wrong_method_is_a_405_problem_naming_the_allowed_ones(
    client: httpx2.AsyncClient,
) -> None:
    resp = await client.delete("/conflict")

    problem(resp, 405, "method-not-allowed")
    allowed = {method.strip() for method in resp.headers["allow"].split(",")}
    assert "GET" in allowed
    assert "DELETE" not in allowed
    post = await client.post("/items/1")
    problem(post, 405, "method-not-allowed")
    assert "GET" in post.headers["allow"]


async def test_every_method_in_allow_is_served(client: httpx2.AsyncClient) -> None:
    """RFC 9110 15.5.6: Allow lists the methods the resource supports."""
    resp = await client.delete("/items/1")
    allowed = [method.strip() for method in resp.headers["allow"].split(",")]

    answers = {method: (await client.request(method, "/items/1")).status_code for method in allowed}

    assert all(status != 405 for status in answers.values()), answers


@pytest.mark.parametrize(
    ("code", "slug"), [(400, "bad-request"), (403, "forbidden"), (415, "unsupported-media-type")]
)
async def test_http_exceptions_become_problems(
    client: httpx2.AsyncClient, code: int, slug: str
) -> None:
    problem(await client.get(f"/http/{code}"), code, slug)


async def test_an_unhandled_error_is_a_500_problem_that_leaks_nothing(
    client: httpx2.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="shop.errors"):
        resp = await client.get("/boom")

    body = problem(resp, 500, "internal-error")
    assert SECRET not in resp.text
    assert "RuntimeError" not in resp.text
    assert "Traceback" not in resp.text
    assert body["detail"] == "An unexpected error occurred."
    assert any("/boom" in record.getMessage() for record in caplog.records)


async def test_a_database_out_of_reach_is_a_503_to_retry_not_a_500(
    client: httpx2.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    for kind in ("pool", "connect"):
        resp = await client.get(f"/db/{kind}")
        body = problem(resp, 503, "database-unavailable")
        assert resp.headers["Retry-After"] == "1"
        assert body["detail"] == "The database could not be reached; try again shortly."
        assert "too many clients" not in resp.text
    # A statement that fails is a bug: a 500 that leaks nothing.
    with caplog.at_level(logging.ERROR, logger="shop.errors"):
        resp = await client.get("/db/statement")
    problem(resp, 500, "internal-error")
    assert SECRET not in resp.text


def test_problems_documents_problem_json_responses() -> None:
    documented = problems(404, 409)
    assert set(documented) == {404, 409}
    assert PROBLEM_CONTENT_TYPE in documented[409]["content"]


# --------------------------------------------------------------------------- auth dependencies


@pytest.fixture
def issuer(app: FastAPI) -> TokenIssuer:
    key = SigningKey.from_pem(generate_private_key_pem())

    async def jwks() -> dict[str, Any]:
        return key.jwks()

    app.state.token_verifier = TokenVerifier(jwks, issuer="kernel", audience="kernel")
    return TokenIssuer(key=key, issuer="kernel", audience="kernel", ttl_seconds=60)


async def test_auth_dependencies(client: httpx2.AsyncClient, issuer: TokenIssuer) -> None:
    user_id = uuid.uuid4()
    customer = {"Authorization": f"Bearer {issuer.issue(user_id, Role.CUSTOMER)}"}
    admin = {"Authorization": f"Bearer {issuer.issue(uuid.uuid4(), Role.ADMIN)}"}

    me = await client.get("/me", headers=customer)
    assert me.status_code == 200
    assert me.json() == {"user_id": str(user_id), "role": "customer"}
    assert (await client.get("/admin", headers=admin)).json() == {"role": "admin"}
    problem(await client.get("/admin", headers=customer), 403, "forbidden")
    for headers in ({}, {"Authorization": "Basic YTpi"}, {"Authorization": "Bearer nope"}):
        resp = await client.get("/me", headers=headers)
        problem(resp, 401, "unauthorized")
        assert resp.headers["www-authenticate"] == "Bearer"


async def test_an_app_without_a_verifier_fails_closed(client: httpx2.AsyncClient) -> None:
    resp = await client.get("/me", headers={"Authorization": "Bearer a.b.c"})
    problem(resp, 500, "internal-error")


# --------------------------------------------------------------------------- ports


async def test_provide_returns_the_adapter_bound_to_a_port(
    app: FastAPI, client: httpx2.AsyncClient
) -> None:
    app.state.ports = {Greeter: English()}

    resp = await client.get("/greet")

    assert resp.status_code == 200
    assert resp.json() == "hello"
    problem(await client.get("/unbound"), 500, "internal-error")


# --------------------------------------------------------------------------- ops


class Unreachable(Database):
    """A database whose server is down."""

    async def ping(self) -> None:
        raise OSError("connection refused")


async def test_healthz_and_readyz(app: FastAPI, client: httpx2.AsyncClient, tmp_path: Path) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}

    db = Database.connect(f"sqlite:///{tmp_path / 'ops.db'}")
    app.state.database = db
    try:
        resp = await client.get("/readyz")
        assert resp.status_code == 200
        assert resp.json() == {"status": "ready", "checks": {"database": "ok"}}

        app.state.database = Unreachable(engine=db.engine, reader=db.reader, writer=db.writer)
        body = problem(await client.get("/readyz"), 503, "service-unavailable")
        assert "connection refused" not in body["detail"]
        # Nor the class of the error: a public endpoint tells no internals.
        assert "Error" not in body["detail"], body
        assert body["detail"] == "The database is not reachable."
        assert (await client.get("/healthz")).status_code == 200
    finally:
        await db.dispose()


# --------------------------------------------------------------------------- request sessions


async def test_reads_join_the_request_transaction_of_their_own_database(tmp_path: Path) -> None:
    db = Database.connect(f"sqlite:///{tmp_path / 'one.db'}")
    other = Database.connect(f"sqlite:///{tmp_path / 'two.db'}")
    app = FastAPI()
    install_error_handlers(app)
    app.state.database = db

    async def joined(session: AsyncSession) -> dict[str, bool]:
        async with db.read() as mine, other.read() as theirs:
            return {"same": mine is session, "other": theirs is session}

    @app.get("/read")
    async def read(session: Session) -> dict[str, bool]:
        return await joined(session)

    @app.post("/write")
    async def write(session: Session) -> dict[str, bool]:
        return await joined(session)

    @app.post("/login")
    async def login(session: ReadSession) -> dict[str, bool]:
        return await joined(session)

    transport = httpx2.ASGITransport(app=app)
    try:
        async with httpx2.AsyncClient(transport=transport, base_url="http://kernel.test") as http:
            for method, path in (("GET", "/read"), ("POST", "/write"), ("POST", "/login")):
                resp = await http.request(method, path)
                assert resp.json() == {"same": True, "other": False}, path
        async with db.read() as first, db.read() as second:  # outside any request
            assert first is not second
    finally:
        await db.dispose()
        await other.dispose()


# --------------------------------------------------------------------------- pagination


async def test_paging_query_parameters(client: httpx2.AsyncClient) -> None:
    default = (await client.get("/page")).json()
    assert (default["limit"], default["offset"], default["next_offset"]) == (20, 0, 20)
    assert default["items"] == list(range(20))

    last = (await client.get("/page", params={"limit": 100, "offset": 950})).json()
    assert last["items"] == list(range(950, 1000))
    assert last["next_offset"] is None

    for params in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "x"}):
        problem(await client.get("/page", params=params), 422, "validation-error")


def test_a_page_fetches_one_row_more_than_it_shows() -> None:
    paging = PageParams(limit=2, offset=4)

    assert paging.fetch == 3
    assert paging.page(["a", "b", "c"]) == {
        "items": ["a", "b"],
        "limit": 2,
        "offset": 4,
        "next_offset": 6,
    }
    assert paging.page(["a", "b"])["next_offset"] is None
    assert paging.page([]) == {"items": [], "limit": 2, "offset": 4, "next_offset": None}


@HYPOTHESIS
@given(
    limit=st.integers(min_value=1, max_value=100),
    offset=st.integers(min_value=0, max_value=1_000_000),
    extra=st.integers(min_value=-100, max_value=1),
)
def test_page_shape(limit: int, offset: int, extra: int) -> None:
    rows = list(range(max(0, limit + extra)))

    page = PageParams(limit=limit, offset=offset).page(rows)

    assert page["items"] == rows[:limit]
    assert page["next_offset"] == (offset + limit if len(rows) > limit else None)


# --------------------------------------------------------------------------- input types

name = TypeAdapter(Name)
short_text = TypeAdapter(ShortText)
long_text = TypeAdapter(LongText)
C0_FORBIDDEN = [chr(c) for c in range(32) if chr(c) not in "\t\n\r"] + ["\x7f"]


@HYPOTHESIS
@given(
    before=st.text(alphabet=st.characters(categories=["L", "N"]), min_size=1, max_size=20),
    control=st.sampled_from(C0_FORBIDDEN),
    after=st.text(alphabet=st.characters(categories=["L", "N"]), max_size=20),
)
def test_c0_control_characters_and_del_are_rejected(before: str, control: str, after: str) -> None:
    for adapter in (name, short_text, long_text):
        with pytest.raises(ValidationError):
            adapter.validate_python(before + control + after)


@pytest.mark.parametrize("control", ["\x80", "\x85", "\x9b", "\x9f"])
def test_c1_control_characters_are_rejected_too(control: str) -> None:
    """U+0080..U+009F are control characters (Unicode Cc) just like C0 ones."""
    for adapter in (name, short_text, long_text):
        with pytest.raises(ValidationError):
            adapter.validate_python(f"Tea{control}pot")


@pytest.mark.parametrize("surrogate", [chr(0xD800), chr(0xDBFF), chr(0xDFFF)])
def test_lone_surrogates_are_rejected(surrogate: str) -> None:
    for adapter in (name, short_text, long_text):
        with pytest.raises(ValidationError):
            adapter.validate_python(f"Tea{surrogate}pot")


@HYPOTHESIS
@given(st.text(alphabet=st.characters(categories=["L", "N", "P", "S"]), min_size=1, max_size=100))
def test_printable_text_is_kept_as_is(text: str) -> None:
    assert name.validate_python(text) == text
    assert short_text.validate_python(text) == text
    assert long_text.validate_python(text) == text


def test_text_lengths_and_line_breaks() -> None:
    assert name.validate_python("Ada Lovelace") == "Ada Lovelace"
    assert long_text.validate_python("line one\nline two\r\n\ttabbed") == (
        "line one\nline two\r\n\ttabbed"
    )
    assert long_text.validate_python("") == ""
    assert name.validate_python("x" * 100)
    assert short_text.validate_python("x" * 200)
    for adapter, too_long in ((name, 101), (short_text, 201), (long_text, 5001)):
        with pytest.raises(ValidationError):
            adapter.validate_python("x" * too_long)
    for adapter in (name, short_text):
        for blank in ("", "   ", "\n"):
            with pytest.raises(ValidationError):
                adapter.validate_python(blank)


@pytest.mark.parametrize("slug", ["tea", "green-tea", "t2", "a-b-c"])
def test_valid_slugs(slug: str) -> None:
    assert TypeAdapter(Slug).validate_python(slug) == slug


@pytest.mark.parametrize("slug", ["", "Tea", "-tea", "tea-", "tea--pot", "tea pot", "x" * 65])
def test_invalid_slugs(slug: str) -> None:
    with pytest.raises(ValidationError):
        TypeAdapter(Slug).validate_python(slug)


def test_int_ids_are_positive_32_bit() -> None:
    ids = TypeAdapter(IntId)
    assert ids.validate_python(1) == 1
    assert ids.validate_python(MAX_INT32) == MAX_INT32
    for bad in (0, -1, MAX_INT32 + 1):
        with pytest.raises(ValidationError):
            ids.validate_python(bad)


@pytest.mark.parametrize(
    "data",
    [
        {"amount": -1, "currency": "EUR"},
        {"amount": 2**53 + 1, "currency": "EUR"},
        {"amount": 99.5, "currency": "EUR"},
        {"amount": 100, "currency": "eur"},
        {"amount": 100, "currency": "EURO"},
        {"amount": 100, "currency": ""},
        {"amount": 100},
        {"currency": "EUR"},
        {"amount": 100, "currency": "EUR", "rate": 1},
    ],
)
def test_money_refuses_what_is_not_minor_units_of_a_currency(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Money.model_validate(data)


@pytest.mark.parametrize(
    "amount",
    ['"1999"', "true", "false", "19.99", "null", "[1999]", '{"v": 1}', "-1", str(MAX_INT32 + 1)],
)
def test_a_price_in_a_request_is_a_json_integer_of_minor_units(amount: str) -> None:
    """docs/api.md: Money is {"amount": <integer minor units>, ...}, never a float."""
    with pytest.raises(ValidationError):
        MoneyIn.model_validate_json(f'{{"amount": {amount}, "currency": "EUR"}}')


def test_a_price_in_a_request_is_in_the_shop_currency() -> None:
    assert MoneyIn.model_validate_json('{"amount": 1999, "currency": "EUR"}').amount == 1999
    assert MoneyIn.model_validate_json(f'{{"amount": {MAX_INT32}, "currency": "EUR"}}')
    with pytest.raises(ValidationError):
        MoneyIn.model_validate_json('{"amount": 1999, "currency": "USD"}')


@HYPOTHESIS
@given(st.integers(min_value=0, max_value=2**53), st.from_regex(r"\A[A-Z]{3}\Z"))
def test_money_round_trips(amount: int, currency: str) -> None:
    money = Money(amount=amount, currency=currency)
    assert Money.model_validate_json(money.model_dump_json()) == money
    assert money.model_dump() == {"amount": amount, "currency": currency}


def test_money_is_immutable() -> None:
    money = Money(amount=1, currency="EUR")
    with pytest.raises(ValidationError):
        money.amount = 2  # type: ignore[misc]


def test_input_models_refuse_unknown_fields() -> None:
    class Body(InputModel):
        name: str

    with pytest.raises(ValidationError):
        Body.model_validate({"name": "x", "id": 1})


# --------------------------------------------------------------------------- database URLs


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///var/shop.db", "sqlite+aiosqlite:///var/shop.db"),
        ("sqlite+pysqlite:///var/shop.db", "sqlite+aiosqlite:///var/shop.db"),
        ("sqlite+aiosqlite:////abs/shop.db", "sqlite+aiosqlite:////abs/shop.db"),
        ("sqlite://", "sqlite+aiosqlite://"),
        ("postgresql://shop@db:5432/shop", "postgresql+asyncpg://shop@db:5432/shop"),
        ("postgresql+psycopg://shop@db/shop", "postgresql+asyncpg://shop@db/shop"),
        ("postgresql+asyncpg://shop@db/shop", "postgresql+asyncpg://shop@db/shop"),
        (
            "postgresql://shop:p%40ss%2Fw0rd@db/shop?ssl=require",
            "postgresql+asyncpg://shop:p%40ss%2Fw0rd@db/shop?ssl=require",
        ),
    ],
)
def test_normalise_url_picks_the_async_driver(url: str, expected: str) -> None:
    assert normalise_url(url) == expected
    assert normalise_url(expected) == expected


@pytest.mark.parametrize("url", ["mysql://shop@db/shop", "oracle://db/shop", "mssql://db/x"])
def test_normalise_url_refuses_other_databases(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported database"):
        normalise_url(url)


def test_is_sqlite() -> None:
    assert is_sqlite("sqlite:///x.db")
    assert is_sqlite("sqlite+aiosqlite://")
    assert not is_sqlite("postgresql://db/shop")


def test_utc_datetime_stores_aware_utc_and_reads_it_back() -> None:
    column = UtcDateTime()
    paris = datetime(2030, 1, 2, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    lite: Dialect = sqlite.dialect()
    pg: Dialect = postgresql.dialect()  # type: ignore[no-untyped-call]

    stored_lite = column.process_bind_param(paris, lite)
    stored_pg = column.process_bind_param(paris, pg)

    assert stored_lite == datetime(2030, 1, 2, 12, 0)
    assert stored_lite is not None
    assert stored_lite.tzinfo is None
    assert stored_pg == datetime(2030, 1, 2, 12, 0, tzinfo=UTC)
    assert column.process_result_value(stored_lite, lite) == datetime(2030, 1, 2, 12, tzinfo=UTC)
    assert column.process_result_value(paris, pg) == datetime(2030, 1, 2, 12, tzinfo=UTC)
    assert column.process_bind_param(None, lite) is None
    assert column.process_result_value(None, lite) is None
    with pytest.raises(ValueError, match="naive"):
        column.process_bind_param(datetime(2030, 1, 2), lite)


def test_metadata_uses_the_naming_convention() -> None:
    convention = make_metadata().naming_convention
    assert convention["pk"] == "pk_%(table_name)s"
    assert convention["ck"] == "ck_%(table_name)s_%(constraint_name)s"


# --------------------------------------------------------------------------- client address


def _address_app(edge_token: str) -> FastAPI:
    app = FastAPI()
    app.state.edge_token = edge_token

    @app.get("/whoami")
    async def whoami(address: ClientAddress) -> dict[str, str]:
        return {"address": address}

    return app


@pytest.mark.parametrize(
    ("edge_token", "headers", "expected"),
    [
        # The gateway's word, with the shared edge token: believed.
        (
            "edge",
            {"X-Shop-Client-Address": "203.0.113.9", "X-Shop-Edge-Token": "edge"},
            "203.0.113.9",
        ),
        (
            "edge",
            {"X-Shop-Client-Address": "2001:db8::1", "X-Shop-Edge-Token": "edge"},
            "2001:db8::1",
        ),
        # Anyone else's: the connection's peer.
        ("edge", {"X-Shop-Client-Address": "203.0.113.9"}, "192.0.2.7"),
        (
            "edge",
            {"X-Shop-Client-Address": "203.0.113.9", "X-Shop-Edge-Token": "guess"},
            "192.0.2.7",
        ),
        ("edge", {"X-Shop-Client-Address": "not-an-ip", "X-Shop-Edge-Token": "edge"}, "192.0.2.7"),
        ("", {"X-Shop-Client-Address": "203.0.113.9", "X-Shop-Edge-Token": ""}, "192.0.2.7"),
        ("edge", {"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.9"}, "192.0.2.7"),
    ],
)
async def test_the_client_address_is_the_peer_unless_the_gateway_vouches(
    edge_token: str, headers: dict[str, str], expected: str
) -> None:
    transport = httpx2.ASGITransport(app=_address_app(edge_token), client=("192.0.2.7", 5000))
    async with httpx2.AsyncClient(transport=transport, base_url="http://svc.test") as client:
        resp = await client.get("/whoami", headers=headers)
    assert resp.json() == {"address": expected}
