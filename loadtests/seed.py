"""Deterministic demo and load-test data, loaded through the public API.

Because it only speaks HTTP, the same seed fills the monolith (in process, see
``python -m monolith seed``) and any running deployment:

    python -m loadtests.seed --base-url http://127.0.0.1:8000

Rerunning it is safe: existing categories and SKUs are found and their stock is set again.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2

CATEGORY_NAMES = [
    "Kitchen", "Garden", "Books", "Music", "Toys", "Outdoor", "Office", "Lighting",
    "Bath", "Bedroom", "Tools", "Pets", "Sports", "Travel", "Crafts", "Games",
    "Tea", "Coffee", "Stationery", "Audio",
]  # fmt: skip
ADJECTIVES = [
    "Classic", "Compact", "Deluxe", "Ergonomic", "Handmade", "Rustic", "Sleek",
    "Sturdy", "Vintage", "Modern", "Bright", "Quiet", "Light", "Heavy-duty", "Soft",
]  # fmt: skip
MATERIALS = [
    "oak", "steel", "ceramic", "linen", "bamboo", "copper", "glass", "wool",
    "leather", "cotton", "walnut", "porcelain",
]  # fmt: skip
NOUNS = [
    "teapot", "lamp", "notebook", "chair", "kettle", "mug", "speaker", "backpack",
    "blanket", "planter", "clock", "pen", "shelf", "bowl", "tray", "stool",
]  # fmt: skip
SEED = 20_261_124


@dataclass(frozen=True)
class SeedPlan:
    categories: int = 20
    products: int = 1000
    stock: int = 100_000
    currency: str = "EUR"


def plan_products(plan: SeedPlan) -> list[dict[str, Any]]:
    """The same products every time (a fixed random seed), spread over the categories."""
    rng = random.Random(SEED)  # noqa: S311 (demo data, not secrets)
    products = []
    for index in range(plan.products):
        name = f"{rng.choice(ADJECTIVES)} {rng.choice(MATERIALS)} {rng.choice(NOUNS)}"
        products.append(
            {
                "sku": f"SEED-{index + 1:05d}",
                "name": f"{name} #{index + 1}",
                "description": f"A {name.lower()} from the shopkata demo catalog.",
                "category": index % plan.categories,
                "price": {"amount": rng.randrange(199, 50_000), "currency": plan.currency},
            }
        )
    return products


def _category_slug(index: int) -> str:
    name = CATEGORY_NAMES[index % len(CATEGORY_NAMES)].lower()
    return name if index < len(CATEGORY_NAMES) else f"{name}-{index // len(CATEGORY_NAMES)}"


class SeedError(RuntimeError):
    pass


def _check(response: httpx2.Response, *expected: int) -> Any:
    if response.status_code not in expected:
        raise SeedError(
            f"{response.request.method} {response.request.url.path} answered"
            f" {response.status_code}: {response.text[:300]}"
        )
    return response.json() if response.content else {}


async def is_seeded(client: httpx2.AsyncClient, plan: SeedPlan) -> bool:
    """True when the plan's last product exists (the seed completed before)."""
    last = f"SEED-{plan.products:05d}"
    page = _check(await client.get("/products", params={"sku": last}), 200)
    return bool(page["items"])


async def seed(
    client: httpx2.AsyncClient,
    *,
    admin_email: str,
    admin_password: str,
    plan: SeedPlan,
    concurrency: int = 8,
    progress: Callable[[str], None] = print,
) -> None:
    """Create the plan's categories, products and stock through the API."""
    started = time.monotonic()
    token = _check(
        await client.post(
            "/auth/token", data={"username": admin_email, "password": admin_password}
        ),
        200,
    )["access_token"]
    auth = {"Authorization": f"Bearer {token}"}

    categories: list[dict[str, Any]] = _check(await client.get("/categories"), 200)
    existing = {category["slug"]: category["id"] for category in categories}
    category_ids = []
    for index in range(plan.categories):
        slug = _category_slug(index)
        if slug not in existing:
            body = {"slug": slug, "name": slug.replace("-", " ").title()}
            created = _check(await client.post("/categories", json=body, headers=auth), 201)
            existing[slug] = created["id"]
        category_ids.append(existing[slug])
    progress(f"seed: {len(category_ids)} categories ready")

    # Products are created in order, so a fresh database gives every SKU the same id;
    # stock is then set concurrently.
    product_ids = []
    for number, product in enumerate(plan_products(plan), start=1):
        body = {k: v for k, v in product.items() if k != "category"}
        body["category_id"] = category_ids[product["category"]]
        response = await client.post("/products", json=body, headers=auth)
        if response.status_code == 409:
            page = _check(await client.get("/products", params={"sku": body["sku"]}), 200)
            if not page["items"]:
                raise SeedError(f"SKU {body['sku']} is taken by a deleted product")
            product_ids.append(page["items"][0]["id"])
        else:
            product_ids.append(_check(response, 201)["id"])
        if number % 250 == 0 or number == plan.products:
            progress(f"seed: {number}/{plan.products} products")

    limit = asyncio.Semaphore(concurrency)
    done = 0

    async def stock(product_id: int) -> None:
        nonlocal done
        async with limit:
            body = {"on_hand": plan.stock}
            _check(await client.put(f"/inventory/{product_id}", json=body, headers=auth), 200)
        done += 1
        if done % 250 == 0 or done == len(product_ids):
            progress(f"seed: {done}/{len(product_ids)} products stocked")

    await asyncio.gather(*(stock(product_id) for product_id in product_ids))
    progress(f"seed: done in {time.monotonic() - started:.1f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m loadtests.seed", description=__doc__)
    parser.add_argument("--base-url", default="http://127.0.0.1:8000")
    parser.add_argument(
        "--admin-email",
        default=os.environ.get("IDENTITY_BOOTSTRAP_ADMIN_EMAIL", "admin@shopkata.local"),
    )
    parser.add_argument(
        "--admin-password",
        default=os.environ.get("IDENTITY_BOOTSTRAP_ADMIN_PASSWORD", "shopkata-admin"),
    )
    parser.add_argument("--products", type=int, default=SeedPlan.products)
    parser.add_argument("--categories", type=int, default=SeedPlan.categories)
    parser.add_argument("--stock", type=int, default=SeedPlan.stock)
    parser.add_argument("--if-empty", action="store_true", help="do nothing if already seeded")
    args = parser.parse_args(argv)
    plan = SeedPlan(categories=args.categories, products=args.products, stock=args.stock)

    async def run() -> None:
        async with httpx2.AsyncClient(base_url=args.base_url, timeout=60) as client:
            if args.if_empty and await is_seeded(client, plan):
                print("seed: already seeded")
                return
            await seed(
                client, admin_email=args.admin_email, admin_password=args.admin_password, plan=plan
            )

    try:
        asyncio.run(run())
    except (SeedError, httpx2.HTTPError) as exc:
        sys.exit(f"seed failed: {exc}")


if __name__ == "__main__":
    main()
