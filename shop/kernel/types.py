"""Input types that keep hostile strings and numbers out of the database."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

MAX_INT32 = 2**31 - 1
SHOP_CURRENCY = "EUR"
"""The one currency the shop trades in (ISO 4217)."""


def no_control_chars(value: str) -> str:
    """Reject control characters (NUL breaks PostgreSQL text) and lone surrogates."""
    if any(ord(ch) < 32 and ch not in "\t\n\r" for ch in value) or "\x7f" in value:
        raise ValueError("control characters are not allowed")
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in value):
        raise ValueError("lone surrogates are not allowed")
    return value


Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    AfterValidator(no_control_chars),
]
ShortText = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    AfterValidator(no_control_chars),
]
LongText = Annotated[
    str,
    StringConstraints(max_length=5000),
    AfterValidator(no_control_chars),
]
SearchText = Annotated[str, StringConstraints(max_length=100), AfterValidator(no_control_chars)]
"""A query-string search term."""
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$", max_length=64)]
IntId = Annotated[int, Field(ge=1, le=MAX_INT32)]
Quantity = Annotated[int, Field(ge=1, le=1000)]
MinorUnits = Annotated[int, Field(ge=0, le=MAX_INT32)]
Currency = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]


class InputModel(BaseModel):
    """Request bodies: unknown fields are rejected, so nothing can be mass-assigned."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class OutputModel(BaseModel):
    """Response bodies, built from ORM rows or plain objects."""

    model_config = ConfigDict(from_attributes=True)


class Money(BaseModel):
    """An amount in integer minor units (cents) and its ISO 4217 currency."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    amount: Annotated[int, Field(ge=0, le=2**53)]
    currency: Currency


class MoneyIn(Money):
    """A price in a request: an integer amount within 32 bits, in the shop's currency."""

    amount: Annotated[int, Field(ge=0, le=MAX_INT32)]
    currency: Literal["EUR"]
