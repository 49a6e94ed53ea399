"""Input types that keep hostile strings and numbers out of the database."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
)

MAX_INT32 = 2**31 - 1
SHOP_CURRENCY = "EUR"
"""The one currency the shop trades in (ISO 4217)."""


def no_control_chars(value: str) -> str:
    """Reject control characters (NUL breaks PostgreSQL text) and lone surrogates."""
    if any((ord(ch) < 32 and ch not in "\t\n\r") or 0x7F <= ord(ch) <= 0x9F for ch in value):
        raise ValueError("control characters are not allowed")
    if any(0xD800 <= ord(ch) <= 0xDFFF for ch in value):
        raise ValueError("lone surrogates are not allowed")
    return value


# The patterns say in the schema what no_control_chars checks: one line of text that starts
# and ends with a visible character (Name, ShortText), or free text (LongText).
# Spaces are spelled out: JavaScript's \s (the schema's) and Rust's (pydantic's) differ.
_SPACE = r"\x20\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_CONTROL = r"\x00-\x1f\x7f-\x9f"
_LINE = rf"^[^{_SPACE}{_CONTROL}]([^{_CONTROL}]*[^{_SPACE}{_CONTROL}])?$"
_TEXT = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"
Name = Annotated[
    str,
    StringConstraints(min_length=1, max_length=100, pattern=_LINE),
    AfterValidator(no_control_chars),
]
ShortText = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, pattern=_LINE),
    AfterValidator(no_control_chars),
]
LongText = Annotated[
    str,
    StringConstraints(max_length=5000, pattern=_TEXT),
    AfterValidator(no_control_chars),
]
SearchText = Annotated[
    str, StringConstraints(max_length=100, pattern=_TEXT), AfterValidator(no_control_chars)
]
"""A query-string search term."""
Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$", max_length=64)]


def _whole_number(value: object) -> object:
    """JSON integers, and floats like ``3.0`` (JSON Schema calls them integers); no bools or
    strings."""
    if isinstance(value, bool | str | bytes):
        raise ValueError("must be an integer")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


IntId = Annotated[int, Field(ge=1, le=MAX_INT32), BeforeValidator(_whole_number)]
"""An id in a JSON body (the constraints come first so the schema states them)."""
Quantity = Annotated[int, Field(ge=1, le=1000), BeforeValidator(_whole_number)]
Count = Annotated[int, Field(ge=0, le=MAX_INT32), BeforeValidator(_whole_number)]

# The WHATWG form rule for email addresses, which is what people mean by an email address
# (RFC 5322 quoting aside); special-use domains such as .local are fine for a shop's users.
_EMAIL = re.compile(
    r"[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*"
)


def _email(value: str) -> str:
    if len(value) > 254 or not _EMAIL.fullmatch(value):
        raise ValueError("not a valid email address")
    return value.lower()


Email = Annotated[
    str,
    AfterValidator(_email),
    WithJsonSchema({"type": "string", "format": "email", "maxLength": 254}),
]
"""An email address, stored lower-case."""
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

    amount: Count
    currency: Literal["EUR"]
