"""Identity on a real database: one account per email, whatever the case or the timing."""

from __future__ import annotations

import uuid

import anyio
import pytest
import sqlalchemy as sa
from argon2 import PasswordHasher

from shop.identity import service
from shop.identity.exceptions import EmailTaken, InvalidCredentials, UserNotFound
from shop.identity.models import User
from shop.identity.tokens import SigningKey, TokenIssuer, generate_private_key_pem
from shop.kernel.db import Database
from shop.kernel.security import Principal, Role, TokenVerifier
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

    async with db.reader() as session:
        token = await service.create_token(
            session,
            passwords=passwords,
            issuer=issuer,
            email="GRACE@example.com",
            password="correct horse",
        )
        for email, password in (
            ("grace@example.com", "wrong horse"),
            ("nobody@example.com", "correct horse"),
            ("grace@example.com", ""),
        ):
            with pytest.raises(InvalidCredentials):
                await service.create_token(
                    session, passwords=passwords, issuer=issuer, email=email, password=password
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
