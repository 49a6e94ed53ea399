"""Identity's endpoints."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, status

from shop.identity import service
from shop.identity.dependencies import Identity
from shop.identity.schemas import Jwks, Token, UserCreate, UserRead
from shop.kernel.db import Db, Session
from shop.kernel.errors import problems
from shop.kernel.security import ClientAddress, CurrentUser

router = APIRouter(tags=["identity"])


@router.post(
    "/auth/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserRead,
    responses=problems(409, 422, 503),
)
async def register(body: UserCreate, session: Session, identity: Identity) -> Any:
    """Register a customer account."""
    return await service.create_user(
        session,
        passwords=identity.passwords,
        email=body.email,
        password=body.password,
        name=body.name,
    )


@router.post("/auth/token", response_model=Token, responses=problems(401, 422, 429, 503))
async def token(
    username: Annotated[str, Form(min_length=1, max_length=320, description="The account's email")],
    password: Annotated[str, Form(min_length=1, max_length=128)],
    db: Db,
    client: ClientAddress,
    identity: Identity,
) -> Token:
    """Exchange an email and password for an access token (OAuth2 password flow)."""
    access_token = await service.create_token(
        db,
        passwords=identity.passwords,
        issuer=identity.issuer,
        throttle=identity.throttle,
        email=username,
        password=password,
        client_address=client,
    )
    return Token(access_token=access_token, expires_in=identity.issuer.ttl_seconds)


@router.get("/users/me", response_model=UserRead, responses=problems(401, 404))
async def me(principal: CurrentUser, session: Session) -> Any:
    """The caller's own account."""
    return await service.get_user(session, user_id=principal.user_id)


@router.get("/.well-known/jwks.json", response_model=Jwks)
async def jwks(identity: Identity) -> Any:
    """The public keys that verify access tokens."""
    return identity.keys.jwks()
