"""Identity's API schemas."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import StringConstraints

from shop.kernel.security import Role
from shop.kernel.types import Email, InputModel, Name, OutputModel

Password = Annotated[str, StringConstraints(min_length=8, max_length=128)]


class UserCreate(InputModel):
    email: Email
    password: Password
    name: Name


class UserRead(OutputModel):
    id: uuid.UUID
    email: str
    name: str
    role: Role
    created_at: datetime


class Token(OutputModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (the OAuth2 token type)
    expires_in: int


class Jwk(OutputModel):
    kty: str
    crv: str
    x: str
    kid: str
    alg: str
    use: str


class Jwks(OutputModel):
    keys: list[Jwk]
