"""The reference app: the shop's product view with none of the shop's layers.

``python -m bench.reference --database FILE --port N`` serves, from the same seeded SQLite
file as the monolith, ``GET /products/{id}`` with the same JSON (the product row and its
stock) and ``GET /healthz``, the way a FastAPI tutorial would write it: one module, an async
SQLAlchemy engine made in the lifespan, two Core queries in one read transaction, a pydantic
response model. No contexts, ports, problem+json, settings, security or access log.

The benchmark runs it beside the monolith, in the same run and on the same core, so the
shop's figures read as a ratio of what its own stack costs ("how much do our layers add"),
which a noisy shared machine cannot blur the way absolute figures are blurred.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import uvicorn
from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel
from sqlalchemy import Boolean, Column, DateTime, Integer, MetaData, String, Table, select
from sqlalchemy.ext.asyncio import create_async_engine

metadata = MetaData()
# The shop's own tables, declared here again (the reference imports nothing of the shop).
products = Table(
    "catalog_products",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("sku", String),
    Column("name", String),
    Column("description", String),
    Column("category_id", Integer),
    Column("price_amount", Integer),
    Column("currency", String),
    Column("is_active", Boolean),
    Column("created_at", DateTime),
)
stock = Table(
    "inventory_items",
    metadata,
    Column("product_id", Integer, primary_key=True),
    Column("on_hand", Integer),
    Column("reserved", Integer),
)


class Price(BaseModel):
    amount: int
    currency: str


class ProductView(BaseModel):
    id: int
    sku: str
    name: str
    description: str
    category_id: int
    price: Price
    created_at: datetime
    available: int


def create_app(database: str) -> FastAPI:
    """The reference app on the SQLite file ``database``."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_async_engine(f"sqlite+aiosqlite:///{database}")
        app.state.engine = engine
        yield
        await engine.dispose()

    app = FastAPI(title="reference", lifespan=lifespan)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/products/{product_id}", response_model=ProductView)
    async def get_product(product_id: int, request: Request) -> ProductView:
        async with request.app.state.engine.connect() as conn:
            row = (
                await conn.execute(
                    select(products).where(products.c.id == product_id, products.c.is_active)
                )
            ).first()
            if row is None:
                raise HTTPException(404, "no such product")
            units = (
                await conn.execute(
                    select(stock.c.on_hand - stock.c.reserved).where(
                        stock.c.product_id == product_id
                    )
                )
            ).scalar()
        return ProductView(
            id=row.id,
            sku=row.sku,
            name=row.name,
            description=row.description,
            category_id=row.category_id,
            price=Price(amount=row.price_amount, currency=row.currency),
            created_at=row.created_at.replace(tzinfo=UTC),
            available=units or 0,
        )

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.reference", description=__doc__)
    parser.add_argument("--database", required=True, help="a seeded shop SQLite file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(args.database), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
