"""Identity on a real database: one account per email, whatever the case or the timing."""

from __future__ import annotations

import dataclasses
import uuid

import anyio
import httpx2
import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher
from sqlalchemy.pool import QueuePool

from monolith.app import create_app
from shop.identity import service
from shop.identity.exceptions import EmailTaken, InvalidCredentials, UserNotFound
from shop.identity.models import User
from shop.identity.throttle import MemoryFailureStore, SignInThrottle
from shop.identity.tokens import SigningKey, TokenIssuer, generate_private_key_pem
from shop.kernel.db import Database
from shop.kernel.security import Principal, Role, TokenVerifier
from tests import support
from tests.integration.conftest import Connect

pytestmark = pytest.mark.anyio


@pytest.fixture
async def db(connect: Connect) -> Database:
    return await connect(["identity"])


@pytest.fixture
def passwords() -> service.Passwords:
    return service.Passwords(PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


PASSWORD = "long enough"


async def register(
    db: Database, passwords: service.Passwords, email: str, password: str = PASSWORD
) -> User:
    async with db.writer() as session, session.begin():
        return await service.create_user(
            session, passwords=passwords, email=email, password=password, name="Ada"
        )


async def users(db: Database) -> list[User]:
    async with db.reader() as session:
        return list(await session.scalars(sa.select(User)))


async def test_an_email_is_registered_once_whatever_its_case(
    db: Database, passwords: service.Passwords
) -> None:
    first = await register(db, passwords, "Ada.Lovelace@Example.com")

    for variant in (
        "ada.lovelace@example.com",
        "ADA.LOVELACE@EXAMPLE.COM",
        " ada.lovelace@example.com ",
    ):
        with pytest.raises(EmailTaken):
            await register(db, passwords, variant)

    stored = await users(db)
    assert [(u.id, u.email, u.role) for u in stored] == [
        (first.id, "ada.lovelace@example.com", "customer")
    ]
    assert stored[0].password_hash.startswith("$argon2id$")


async def test_concurrent_registrations_of_one_email_make_one_user(
    db: Database, passwords: service.Passwords
) -> None:
    email = f"race-{uuid.uuid4().hex[:8]}@example.com"
    created: list[User] = []
    taken: list[EmailTaken] = []

    async def attempt(index: int) -> None:
        variant = email.upper() if index % 2 else email
        try:
            created.append(await register(db, passwords, variant))
        except EmailTaken as exc:
            taken.append(exc)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            for index in range(10):
                tasks.start_soon(attempt, index)

    assert len(created) == 1
    assert len(taken) == 9
    assert [u.id for u in await users(db)] == [created[0].id]


async def test_login_checks_the_password_and_ignores_the_email_case(
    db: Database, passwords: service.Passwords
) -> None:
    user = await register(db, passwords, "grace@example.com", "correct horse")
    key = SigningKey.from_pem(generate_private_key_pem())
    issuer = TokenIssuer(key=key, issuer="it", audience="it", ttl_seconds=60)

    throttle = SignInThrottle(MemoryFailureStore(), 100, 100, 60, 1, 60)
    token = await service.create_token(
        db,
        passwords=passwords,
        issuer=issuer,
        throttle=throttle,
        email="GRACE@example.com",
        password="correct horse",
        client_address="192.0.2.1",
    )
    for email, password in (
        ("grace@example.com", "wrong horse"),
        ("nobody@example.com", "correct horse"),
        ("grace@example.com", ""),
    ):
        with pytest.raises(InvalidCredentials):
            await service.create_token(
                db,
                passwords=passwords,
                issuer=issuer,
                throttle=throttle,
                email=email,
                password=password,
                client_address="192.0.2.1",
            )

    async def jwks() -> dict[str, object]:
        return key.jwks()

    verifier = TokenVerifier(jwks, issuer="it", audience="it")
    assert await verifier.verify(token) == Principal(user_id=user.id, role=Role.CUSTOMER)


async def test_promote_admin_promotes_or_creates_and_sets_the_password(
    db: Database, passwords: service.Passwords
) -> None:
    customer = await register(db, passwords, "boss@example.com")

    async with db.writer() as session, session.begin():
        promoted, created = await service.promote_admin(
            session, passwords=passwords, email="Boss@Example.com", password="admin's own"
        )
    assert (promoted.id, created) == (customer.id, False)
    assert await passwords.verify(promoted.password_hash, "admin's own")
    async with db.writer() as session, session.begin():
        fresh, created = await service.promote_admin(
            session, passwords=passwords, email="root@example.com", password="long enough"
        )
    assert created is True

    roles = {u.email: u.role for u in await users(db)}
    assert roles == {"boss@example.com": "admin", "root@example.com": "admin"}
    async with db.reader() as session:
        assert (await service.get_user(session, user_id=fresh.id)).email == "root@example.com"
        with pytest.raises(UserNotFound):
            await service.get_user(session, user_id=uuid.uuid4())


class PoolWatchingPasswords(service.Passwords):
    """Records how many pooled connections are checked out while each hash runs."""

    def __init__(self, inner: service.Passwords, db: Database) -> None:
        self._inner = inner
        self._db = db
        self.seen: list[tuple[str, int]] = []

    def _checked_out(self) -> int:
        pool = self._db.engine.pool
        return int(pool.checkedout()) if isinstance(pool, QueuePool) else 0

    async def quiet(self) -> None:
        """Wait until no connection is checked out: the relays' passes (at start, and on
        their interval) take one for a moment, and are not the request under test."""
        with anyio.fail_after(5):
            while self._checked_out():  # noqa: ASYNC110 (a pool has no event to wait on)
                await anyio.sleep(0.005)

    async def hash(self, password: str) -> str:
        self.seen.append(("hash", self._checked_out()))
        return await self._inner.hash(password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        self.seen.append(("verify", self._checked_out()))
        return await self._inner.verify(password_hash, password)


async def test_passwords_are_hashed_with_no_database_connection_held(database_url: str) -> None:
    """A sign-in's ~200 ms of hashing must not hold one of the pool's connections (nor, on
    SQLite, a transaction): the read is over before the password is checked, and a
    registration hashes before its write begins."""
    await support.migrate(database_url)
    app = create_app(support.monolith_settings(database_url))
    async with (
        app.router.lifespan_context(app),
        httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app), base_url="http://monolith.test"
        ) as client,
    ):
        db: Database = app.state.database
        watching = PoolWatchingPasswords(app.state.identity.passwords, db)
        app.state.identity = dataclasses.replace(app.state.identity, passwords=watching)
        body = {"email": "hash@example.com", "password": "long enough", "name": "Hash"}
        await watching.quiet()
        assert (await client.post("/auth/register", json=body)).status_code == 201
        form = {"username": "hash@example.com", "password": "long enough"}
        await watching.quiet()
        assert (await client.post("/auth/token", data=form)).status_code == 200
        form["password"] = "wrong password"
        await watching.quiet()
        assert (await client.post("/auth/token", data=form)).status_code == 401

    assert [kind for kind, _ in watching.seen] == ["hash", "verify", "verify"]
    assert watching.seen == [("hash", 0), ("verify", 0), ("verify", 0)], watching.seen
