"""The contexts' tables, and what every part of a data move shares: its error, its batch
size, and how it reports progress."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy import MetaData, Table
from sqlalchemy.ext.asyncio import AsyncConnection

from shop.cart import models as cart_models
from shop.catalog import models as catalog_models
from shop.identity import models as identity_models
from shop.inventory import models as inventory_models
from shop.orders import models as orders_models
from shop.payments import models as payments_models

BATCH_SIZE = 500

METADATA: dict[str, MetaData] = {
    "identity": identity_models.Base.metadata,
    "catalog": catalog_models.Base.metadata,
    "inventory": inventory_models.Base.metadata,
    "cart": cart_models.Base.metadata,
    "orders": orders_models.Base.metadata,
    "payments": payments_models.Base.metadata,
}
"""Each context's own tables, as its ``models`` module declares them."""

Progress = Callable[[str], None]
AfterTable = Callable[[str, AsyncConnection], Awaitable[None]]


class DataMoveError(RuntimeError):
    """The move cannot go on, or did not verify; the message says why and what to do.
    Nothing was changed in the database being written."""


def say(message: str) -> None:
    print(message, flush=True)


def tables_of(context: str) -> list[Table]:
    """The context's tables in dependency order (a table after those it references)."""
    if context not in METADATA:
        raise DataMoveError(f"unknown context {context!r}; expected one of {', '.join(METADATA)}")
    return list(METADATA[context].sorted_tables)
