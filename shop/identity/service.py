"""Identity's rules: registration, login, admins."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.ext.asyncio import AsyncSession

from shop.identity import repository
from shop.identity.exceptions import (
    AdminBootstrapRefused,
    EmailTaken,
    InvalidCredentials,
    PasswordChecksBusy,
    UserNotFound,
)
from shop.identity.models import User
from shop.identity.settings import IdentitySettings
from shop.identity.throttle import SignInThrottle
from shop.identity.tokens import TokenIssuer
from shop.kernel.db import Database
from shop.kernel.security import Role

T = TypeVar("T")


def password_hasher(settings: IdentitySettings) -> PasswordHasher:
    return PasswordHasher(
        time_cost=settings.argon2_time_cost,
        memory_cost=settings.argon2_memory_kib,
        parallelism=settings.argon2_parallelism,
    )


class Passwords:
    """argon2id hashing off the event loop, a bounded number at a time.

    Each hash costs ~200 ms of CPU and ``argon2_memory_kib`` of memory: at most
    ``max_concurrent`` run at once, on threads of their own (not the shared pool every
    ``def`` endpoint and file read uses). One more waits up to ``wait_seconds`` for a slot,
    then gets :class:`PasswordChecksBusy` (503, ``Retry-After``): a flood of sign-ins is
    refused early instead of queueing without end. A dummy hash keeps unknown emails as slow.
    """

    def __init__(
        self, hasher: PasswordHasher, *, max_concurrent: int = 2, wait_seconds: float = 1.0
    ) -> None:
        self._hasher = hasher
        self._dummy = hasher.hash(uuid.uuid4().hex)
        self._slots = anyio.Semaphore(max_concurrent)
        self._threads = anyio.CapacityLimiter(max_concurrent)
        self._wait = wait_seconds

    async def _run(self, work: Callable[[], T]) -> T:
        try:
            self._slots.acquire_nowait()
        except anyio.WouldBlock:
            acquired = False
            with anyio.move_on_after(self._wait):
                await self._slots.acquire()
                acquired = True
            if not acquired:
                raise PasswordChecksBusy(
                    "Too many sign-ins at once; try again in a second."
                ) from None
        try:
            return await anyio.to_thread.run_sync(work, limiter=self._threads)
        finally:
            self._slots.release()

    async def hash(self, password: str) -> str:
        return await self._run(lambda: self._hasher.hash(password))

    async def verify(self, password_hash: str | None, password: str) -> bool:
        def check() -> bool:
            try:
                return self._hasher.verify(password_hash or self._dummy, password)
            except (VerificationError, InvalidHashError):
                return False

        ok = await self._run(check)
        return ok and password_hash is not None


def normalise_email(email: str) -> str:
    return email.strip().lower()


async def create_user(
    session: AsyncSession,
    *,
    passwords: Passwords,
    email: str,
    password: str,
    name: str,
    role: Role = Role.CUSTOMER,
) -> User:
    """Register a user; only this function's callers decide the role, never a request."""
    user = User(
        id=uuid.uuid4(),
        email=normalise_email(email),
        name=name,
        password_hash=await passwords.hash(password),
        role=role.value,
    )
    return await repository.add_user(session, user)


async def create_token(
    db: Database,
    *,
    passwords: Passwords,
    issuer: TokenIssuer,
    throttle: SignInThrottle,
    email: str,
    password: str,
    client_address: str,
) -> str:
    """An access token for valid credentials; :class:`InvalidCredentials` otherwise, and
    :class:`TooManySignIns` while the account or the address is backing off.

    Takes the database, not a request session: the read is over, its connection back in the
    pool, before the password is checked (~200 ms that would otherwise hold a connection).
    """
    # An unprintable "email" cannot name an account (and NUL would upset PostgreSQL).
    email = normalise_email(email)
    await throttle.check(email=email, address=client_address)
    user = None
    if email.isprintable():
        async with db.read() as session:
            user = await repository.get_user_by_email(session, email)
    if not await passwords.verify(user.password_hash if user else None, password):
        await throttle.failed(email=email, address=client_address)
        raise InvalidCredentials("The email or the password is wrong.")
    assert user is not None
    await throttle.succeeded(email=email)
    return issuer.issue(user.id, Role(user.role))


async def get_user(session: AsyncSession, *, user_id: uuid.UUID) -> User:
    user = await repository.get_user(session, user_id)
    if user is None:
        raise UserNotFound("This user does not exist any more.")
    return user


async def bootstrap_admin(
    db: Database, *, passwords: Passwords, settings: IdentitySettings
) -> User | None:
    """Create the admin the settings name, once; on every later start-up, check it.

    The bootstrap never promotes: an account that already holds the email must be an admin
    whose password is the configured one, or :class:`AdminBootstrapRefused` stops start-up.
    Otherwise whoever registered a future admin's email first would become admin at the next
    restart, with their own password, and a rotated password would be silently ignored.
    ``python -m monolith create-admin --promote`` is the explicit way to promote an account.
    """
    email, password = settings.bootstrap_admin_email, settings.bootstrap_admin_password
    if not email or password is None:
        return None
    email, secret = normalise_email(email), password.get_secret_value()
    async with db.reader() as session:
        existing = await repository.get_user_by_email(session, email)
    if existing is None:
        try:
            async with db.writer() as session, session.begin():
                return await create_user(
                    session,
                    passwords=passwords,
                    email=email,
                    password=secret,
                    name="Admin",
                    role=Role.ADMIN,
                )
        except EmailTaken:
            # Another replica starting at the same moment created it: check theirs.
            async with db.reader() as session:
                existing = await repository.get_user_by_email(session, email)
            if existing is None:
                raise
    promote = f"python -m monolith create-admin --email {email} --promote"
    if existing.role != Role.ADMIN.value:
        raise AdminBootstrapRefused(
            f"IDENTITY_BOOTSTRAP_ADMIN_EMAIL names {email}, which is registered as a"
            f" {existing.role}: the bootstrap only creates admins, it never promotes an account"
            f" someone else may have registered. If the account is yours, run `{promote}`"
            " (it also sets the password); otherwise choose another admin email."
        )
    if not await passwords.verify(existing.password_hash, secret):
        raise AdminBootstrapRefused(
            f"the admin {email} exists, but IDENTITY_BOOTSTRAP_ADMIN_PASSWORD does not verify"
            f" against its password: to rotate the password, run `{promote}` with the new one"
            " (SHOP_ADMIN_PASSWORD), then restart with it."
        )
    return existing


async def promote_admin(
    session: AsyncSession, *, passwords: Passwords, email: str, password: str, name: str = "Admin"
) -> tuple[User, bool]:
    """Make ``email`` an admin with ``password``, creating the account if needed; True when
    created. An explicit operator action (``create-admin --promote``), never a start-up's."""
    password_hash = await passwords.hash(password)
    existing = await repository.get_user_by_email(session, normalise_email(email))
    if existing is None:
        user = User(
            id=uuid.uuid4(),
            email=normalise_email(email),
            name=name,
            password_hash=password_hash,
            role=Role.ADMIN.value,
        )
        return await repository.add_user(session, user), True
    existing.role = Role.ADMIN.value
    existing.password_hash = password_hash
    await session.flush()
    return existing, False
