"""Categories and products: admin writes, public reads, filters, sorting and paging."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx2
import pytest

from tests.contract.helpers import (
    JSON,
    User,
    assert_money,
    assert_page,
    assert_problem,
    assert_unauthorized,
    assert_validation_error,
    create_category,
    create_product,
    expect,
    expect_list,
    expect_no_content,
    money,
    new_customer,
    product_available,
    set_stock,
    unique,
)

pytestmark = pytest.mark.anyio

MAX_ID = 2**31 - 1


def _product_body(category_id: int, **overrides: Any) -> JSON:
    sku = unique("SKU-")
    body: JSON = {
        "sku": sku,
        "name": f"Product {sku}",
        "description": "A fine thing",
        "category_id": category_id,
        "price": money(1250),
    }
    body.update(overrides)
    return body


async def _list_ids(client: httpx2.AsyncClient, **params: Any) -> list[int]:
    page = expect(await client.get("/products", params=params), 200)
    return [item["id"] for item in page["items"]]


# --------------------------------------------------------------------------- categories


async def test_admin_creates_a_category(client: httpx2.AsyncClient, admin: User) -> None:
    slug = unique("cat-")
    resp = await client.post(
        "/categories", json={"slug": slug, "name": f"Name {slug}"}, headers=admin.headers
    )
    category = expect(resp, 201)
    assert set(category) == {"id", "slug", "name"}, category
    assert isinstance(category["id"], int)
    assert 1 <= category["id"] <= MAX_ID
    assert category["slug"] == slug
    assert category["name"] == f"Name {slug}"

    listed = expect_list(await client.get("/categories"))
    assert category in listed


async def test_categories_are_listed_by_name(client: httpx2.AsyncClient, admin: User) -> None:
    tag = unique()
    names = [f"zz {tag} charlie", f"zz {tag} alpha", f"zz {tag} bravo"]
    created = [await create_category(client, admin, name) for name in names]
    listed = expect_list(await client.get("/categories"))
    mine = [c for c in listed if c["id"] in {x["id"] for x in created}]
    assert [c["name"] for c in mine] == sorted(names)


async def test_duplicate_category_slug_is_category_exists(
    client: httpx2.AsyncClient, admin: User
) -> None:
    category = await create_category(client, admin)
    resp = await client.post(
        "/categories", json={"slug": category["slug"], "name": "Other"}, headers=admin.headers
    )
    assert_problem(resp, 409, "category-exists")


async def test_customer_cannot_create_a_category(client: httpx2.AsyncClient) -> None:
    customer = await new_customer(client)
    slug = unique("cat-")
    resp = await client.post(
        "/categories", json={"slug": slug, "name": "Nope"}, headers=customer.headers
    )
    assert_problem(resp, 403, "forbidden")
    assert slug not in {c["slug"] for c in expect_list(await client.get("/categories"))}


async def test_anonymous_cannot_create_a_category(client: httpx2.AsyncClient) -> None:
    resp = await client.post("/categories", json={"slug": unique("cat-"), "name": "Nope"})
    assert_unauthorized(resp)


@pytest.mark.parametrize(
    "body",
    [{"name": "No slug"}, {"slug": "no-name"}, {"slug": "", "name": "Empty"}, {"slug": 7}],
    ids=["no-slug", "no-name", "empty-slug", "int-slug"],
)
async def test_invalid_category_body(client: httpx2.AsyncClient, admin: User, body: JSON) -> None:
    assert_validation_error(await client.post("/categories", json=body, headers=admin.headers))


async def test_category_body_rejects_id(client: httpx2.AsyncClient, admin: User) -> None:
    slug = unique("cat-")
    resp = await client.post(
        "/categories", json={"slug": slug, "name": "With id", "id": MAX_ID}, headers=admin.headers
    )
    assert_validation_error(resp)
    assert slug not in {c["slug"] for c in expect_list(await client.get("/categories"))}


# --------------------------------------------------------------------------- products: CRUD


async def test_admin_creates_and_anyone_reads_a_product(
    client: httpx2.AsyncClient, admin: User
) -> None:
    category = await create_category(client, admin)
    body = _product_body(category["id"], description="Hand-made")
    product = expect(await client.post("/products", json=body, headers=admin.headers), 201)
    assert set(product) >= {"id", "sku", "name", "description", "category_id", "price"}
    assert "created_at" in product
    assert isinstance(product["id"], int)
    assert 1 <= product["id"] <= MAX_ID
    assert product["sku"] == body["sku"]
    assert product["name"] == body["name"]
    assert product["description"] == "Hand-made"
    assert product["category_id"] == category["id"]
    assert_money(product["price"], 1250)
    datetime.fromisoformat(product["created_at"].replace("Z", "+00:00"))

    fetched = expect(await client.get(f"/products/{product['id']}"), 200)
    assert {k: v for k, v in fetched.items() if k != "available"} == product
    assert fetched["available"] == 0


async def test_product_available_matches_inventory(client: httpx2.AsyncClient, admin: User) -> None:
    category = await create_category(client, admin)
    product = await create_product(client, admin, category["id"])
    await set_stock(client, admin, product["id"], 7)
    stock = expect(await client.get(f"/inventory/{product['id']}", headers=admin.headers), 200)
    assert await product_available(client, product["id"], 7) == stock["available"] == 7

    await set_stock(client, admin, product["id"], 3)
    assert await product_available(client, product["id"], 3) == 3


async def test_duplicate_sku_is_sku_exists(client: httpx2.AsyncClient, admin: User) -> None:
    category = await create_category(client, admin)
    product = await create_product(client, admin, category["id"])
    resp = await client.post(
        "/products", json=_product_body(category["id"], sku=product["sku"]), headers=admin.headers
    )
    assert_problem(resp, 409, "sku-exists")


async def test_create_product_in_unknown_category(client: httpx2.AsyncClient, admin: User) -> None:
    sku = unique("SKU-")
    resp = await client.post(
        "/products", json=_product_body(MAX_ID, sku=sku), headers=admin.headers
    )
    assert_problem(resp, 404, "category-not-found")


async def test_customer_cannot_write_products(client: httpx2.AsyncClient, admin: User) -> None:
    customer = await new_customer(client)
    category = await create_category(client, admin)
    product = await create_product(client, admin, category["id"], price=500)
    pid = product["id"]

    resp = await client.post(
        "/products", json=_product_body(category["id"]), headers=customer.headers
    )
    assert_problem(resp, 403, "forbidden")
    resp = await client.patch(
        f"/products/{pid}", json={"price": money(1)}, headers=customer.headers
    )
    assert_problem(resp, 403, "forbidden")
    assert_problem(
        await client.delete(f"/products/{pid}", headers=customer.headers), 403, "forbidden"
    )

    unchanged = expect(await client.get(f"/products/{pid}"), 200)
    assert_money(unchanged["price"], 500)
    assert await _list_ids(client, category=category["slug"]) == [pid]


async def test_anonymous_cannot_write_products(client: httpx2.AsyncClient, admin: User) -> None:
    category = await create_category(client, admin)
    product = await create_product(client, admin, category["id"])
    assert_unauthorized(await client.post("/products", json=_product_body(category["id"])))
    assert_unauthorized(await client.patch(f"/products/{product['id']}", json={"name": "x"}))
    assert_unauthorized(await client.delete(f"/products/{product['id']}"))
    expect(await client.get(f"/products/{product['id']}"), 200)


async def test_patch_updates_the_given_fields_only(client: httpx2.AsyncClient, admin: User) -> None:
    category = await create_category(client, admin)
    other = await create_category(client, admin)
    product = await create_product(client, admin, category["id"], price=700)
    pid = product["id"]

    resp = await client.patch(
        f"/products/{pid}", json={"name": "Renamed", "price": money(999)}, headers=admin.headers
    )
    patched = expect(resp, 200)
    assert patched["id"] == pid
    assert patched["name"] == "Renamed"
    assert_money(patched["price"], 999)
    assert patched["sku"] == product["sku"]
    assert patched["description"] == product["description"]
    assert patched["category_id"] == category["id"]

    resp = await client.patch(
        f"/products/{pid}",
        json={"description": "New words", "category_id": other["id"]},
        headers=admin.headers,
    )
    patched = expect(resp, 200)
    assert patched["description"] == "New words"
    assert patched["category_id"] == other["id"]
    assert patched["name"] == "Renamed"

    fetched = expect(await client.get(f"/products/{pid}"), 200)
    assert fetched["name"] == "Renamed"
    assert_money(fetched["price"], 999)
    assert fetched["category_id"] == other["id"]
    assert await _list_ids(client, category=other["slug"]) == [pid]
    assert await _list_ids(client, category=category["slug"]) == []


async def test_patch_unknown_product(client: httpx2.AsyncClient, admin: User) -> None:
    resp = await client.patch(f"/products/{MAX_ID}", json={"name": "x"}, headers=admin.headers)
    assert_problem(resp, 404, "product-not-found")


async def test_patch_into_unknown_category(client: httpx2.AsyncClient, admin: User) -> None:
    category = await create_category(client, admin)
    product = await create_product(client, admin, category["id"])
    resp = await client.patch(
        f"/products/{product['id']}", json={"category_id": MAX_ID}, headers=admin.headers
    )
    assert_problem(resp, 404, "category-not-found")
    assert (
        expect(await client.get(f"/products/{product['id']}"), 200)["category_id"] == category["id"]
    )


@pytest.mark.parametrize(
    "body",
    [
        {"price": {"amount": 12.5, "currency": "EUR"}},
        {"price": 1250},
        {"sku": "NEW-SKU"},
        {"id": 1},
    ],
    ids=["float-price", "bare-price", "sku", "id"],
)
async def test_patch_rejects_invalid_bodies(
    client: httpx2.AsyncClient, admin: User, body: JSON
) -> None:
    category = await create_category(client, admin)
    product = await create_product(client, admin, category["id"])
    resp = await client.patch(f"/products/{product['id']}", json=body, headers=admin.headers)
    assert_validation_error(resp)
    fetched = expect(await client.get(f"/products/{product['id']}"), 200)
    assert {k: v for k, v in fetched.items() if k != "available"} == product


async def test_delete_product(client: httpx2.AsyncClient, admin: User) -> None:
    category = await create_category(client, admin)
    product = await create_product(client, admin, category["id"])
    pid = product["id"]

    expect_no_content(await client.delete(f"/products/{pid}", headers=admin.headers))

    assert_problem(await client.get(f"/products/{pid}"), 404, "product-not-found")
    assert await _list_ids(client, category=category["slug"]) == []
    resp = await client.patch(f"/products/{pid}", json={"name": "x"}, headers=admin.headers)
    assert_problem(resp, 404, "product-not-found")
    resp = await client.delete(f"/products/{pid}", headers=admin.headers)
    assert_problem(resp, 404, "product-not-found")
    resp = await client.put(f"/inventory/{pid}", json={"on_hand": 1}, headers=admin.headers)
    assert_problem(resp, 404, "product-not-found")


async def test_get_unknown_product(client: httpx2.AsyncClient) -> None:
    assert_problem(await client.get(f"/products/{MAX_ID}"), 404, "product-not-found")


@pytest.mark.parametrize("bad_id", ["0", "-1", str(2**31), "abc", "1.5"])
async def test_out_of_range_product_ids_are_validation_errors(
    client: httpx2.AsyncClient, admin: User, bad_id: str
) -> None:
    assert_validation_error(await client.get(f"/products/{bad_id}"))
    resp = await client.patch(f"/products/{bad_id}", json={"name": "x"}, headers=admin.headers)
    assert_validation_error(resp)
    assert_validation_error(await client.delete(f"/products/{bad_id}", headers=admin.headers))


@pytest.mark.parametrize(
    "override",
    [
        {"price": {"amount": 12.5, "currency": "EUR"}},
        {"price": 12.5},
        {"price": {"currency": "EUR"}},
        {"category_id": "abc"},
    ],
    ids=["float-amount", "bare-float", "no-amount", "category-abc"],
)
async def test_create_product_rejects_invalid_bodies(
    client: httpx2.AsyncClient, admin: User, override: JSON
) -> None:
    category = await create_category(client, admin)
    body = {**_product_body(category["id"]), **override}
    assert_validation_error(await client.post("/products", json=body, headers=admin.headers))
    assert await _list_ids(client, category=category["slug"]) == []


@pytest.mark.parametrize("missing", ["sku", "name", "category_id", "price"])
async def test_create_product_requires_fields(
    client: httpx2.AsyncClient, admin: User, missing: str
) -> None:
    category = await create_category(client, admin)
    body = _product_body(category["id"])
    del body[missing]
    assert_validation_error(await client.post("/products", json=body, headers=admin.headers))
    assert await _list_ids(client, category=category["slug"]) == []


async def test_create_product_with_id_is_rejected_and_has_no_effect(
    client: httpx2.AsyncClient, admin: User
) -> None:
    category = await create_category(client, admin)
    body = _product_body(category["id"], id=MAX_ID - 7)
    assert_validation_error(await client.post("/products", json=body, headers=admin.headers))
    assert await _list_ids(client, category=category["slug"]) == []
    assert_problem(await client.get(f"/products/{MAX_ID - 7}"), 404, "product-not-found")
    # the SKU is still free
    del body["id"]
    created = expect(await client.post("/products", json=body, headers=admin.headers), 201)
    assert created["id"] != MAX_ID - 7


# --------------------------------------------------------------------------- products: listing


@pytest.fixture
async def catalog(client: httpx2.AsyncClient, admin: User) -> JSON:
    """A category of its own with five products, created in this order."""
    category = await create_category(client, admin)
    tag = unique()
    specs = [
        ("delta", 300, f"plain {tag}"),
        ("alpha", 500, "nothing special"),
        ("echo", 100, "nothing special"),
        ("charlie", 400, f"Mentions the NeedleWord{tag} in its description"),
        ("bravo", 200, "nothing special"),
    ]
    products = [
        await create_product(
            client,
            admin,
            category["id"],
            name=f"{word} {tag}",
            price=price,
            description=description,
        )
        for word, price, description in specs
    ]
    return {"category": category, "products": products, "tag": tag}


async def test_list_filters_by_category(client: httpx2.AsyncClient, catalog: JSON) -> None:
    page = expect(
        await client.get("/products", params={"category": catalog["category"]["slug"]}), 200
    )
    items = assert_page(page, limit=20, offset=0)
    assert page["next_offset"] is None
    assert [{k: v for k, v in item.items() if k != "available"} for item in items] == catalog[
        "products"
    ]


async def test_list_unknown_category_is_empty(client: httpx2.AsyncClient) -> None:
    page = expect(await client.get("/products", params={"category": unique("nope-")}), 200)
    assert assert_page(page, limit=20, offset=0) == []
    assert page["next_offset"] is None


@pytest.mark.parametrize(
    ("sort", "expected_names"),
    [
        ("id", ["delta", "alpha", "echo", "charlie", "bravo"]),
        ("name", ["alpha", "bravo", "charlie", "delta", "echo"]),
        ("-name", ["echo", "delta", "charlie", "bravo", "alpha"]),
        ("price", ["echo", "bravo", "delta", "charlie", "alpha"]),
        ("-price", ["alpha", "charlie", "delta", "bravo", "echo"]),
        ("newest", ["bravo", "charlie", "echo", "alpha", "delta"]),
    ],
)
async def test_list_sort_orders(
    client: httpx2.AsyncClient, catalog: JSON, sort: str, expected_names: list[str]
) -> None:
    params = {"category": catalog["category"]["slug"], "sort": sort}
    page = expect(await client.get("/products", params=params), 200)
    names = [item["name"].split(" ")[0] for item in page["items"]]
    assert names == expected_names


async def test_list_default_sort_is_id(client: httpx2.AsyncClient, catalog: JSON) -> None:
    ids = await _list_ids(client, category=catalog["category"]["slug"])
    assert ids == sorted(ids)
    assert ids == [p["id"] for p in catalog["products"]]


async def test_list_rejects_unknown_sort(client: httpx2.AsyncClient, catalog: JSON) -> None:
    params = {"category": catalog["category"]["slug"], "sort": "sku"}
    assert_validation_error(await client.get("/products", params=params))


async def test_list_text_search_is_case_insensitive_in_name_and_description(
    client: httpx2.AsyncClient, catalog: JSON
) -> None:
    tag = catalog["tag"]
    by_name = {p["name"].split(" ")[0]: p["id"] for p in catalog["products"]}

    # the tag is in every name, and in delta's description
    assert sorted(await _list_ids(client, q=tag.upper())) == sorted(by_name.values())
    assert await _list_ids(client, q=f"ALPHA {tag}") == [by_name["alpha"]]
    # only in charlie's description
    assert await _list_ids(client, q=f"needleword{tag}") == [by_name["charlie"]]
    assert await _list_ids(client, q=f"NEEDLEWORD{tag.upper()}") == [by_name["charlie"]]
    assert await _list_ids(client, q=unique("absent-")) == []


async def test_list_price_range(client: httpx2.AsyncClient, catalog: JSON) -> None:
    slug = catalog["category"]["slug"]
    by_price = {p["price"]["amount"]: p["id"] for p in catalog["products"]}

    ids = await _list_ids(client, category=slug, min_price=150, max_price=450, sort="price")
    assert ids == [by_price[200], by_price[300], by_price[400]]
    assert await _list_ids(client, category=slug, min_price=350, sort="price") == [
        by_price[400],
        by_price[500],
    ]
    assert await _list_ids(client, category=slug, max_price=250, sort="price") == [
        by_price[100],
        by_price[200],
    ]
    assert await _list_ids(client, category=slug, min_price=10_000) == []


async def test_list_filters_combine(client: httpx2.AsyncClient, catalog: JSON) -> None:
    slug = catalog["category"]["slug"]
    by_name = {p["name"].split(" ")[0]: p["id"] for p in catalog["products"]}
    ids = await _list_ids(client, category=slug, q=catalog["tag"], max_price=250, sort="-price")
    assert ids == [by_name["bravo"], by_name["echo"]]


async def test_list_pages_through_with_next_offset(
    client: httpx2.AsyncClient, catalog: JSON
) -> None:
    slug = catalog["category"]["slug"]
    expected = [p["id"] for p in catalog["products"]]
    seen: list[int] = []
    offset: int | None = 0
    offsets: list[int] = []
    while offset is not None:
        offsets.append(offset)
        params = {"category": slug, "limit": 2, "offset": offset}
        page = expect(await client.get("/products", params=params), 200)
        items = assert_page(page, limit=2, offset=offset)
        seen.extend(item["id"] for item in items)
        offset = page["next_offset"]
        assert len(offsets) <= 5, "paging does not terminate"
    assert offsets == [0, 2, 4]
    assert seen == expected

    page = expect(
        await client.get("/products", params={"category": slug, "limit": 2, "offset": 10}), 200
    )
    assert assert_page(page, limit=2, offset=10) == []
    assert page["next_offset"] is None


async def test_list_limit_bounds(client: httpx2.AsyncClient, catalog: JSON) -> None:
    slug = catalog["category"]["slug"]
    page = expect(await client.get("/products", params={"category": slug, "limit": 100}), 200)
    assert len(assert_page(page, limit=100, offset=0)) == 5
    page = expect(await client.get("/products", params={"category": slug, "limit": 1}), 200)
    assert len(assert_page(page, limit=1, offset=0)) == 1
    assert page["next_offset"] == 1


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 101},
        {"limit": "abc"},
        {"offset": -1},
        {"offset": "x"},
        {"min_price": "cheap"},
        {"max_price": 1.5},
    ],
    ids=[
        "limit-101",
        "limit-abc",
        "offset-negative",
        "offset-x",
        "min-price-text",
        "max-price-float",
    ],
)
async def test_list_rejects_invalid_query(
    client: httpx2.AsyncClient, params: dict[str, Any]
) -> None:
    assert_validation_error(await client.get("/products", params=params))


async def test_catalog_is_readable_without_a_token(
    client: httpx2.AsyncClient, catalog: JSON
) -> None:
    expect_list(await client.get("/categories"))
    page = expect(
        await client.get("/products", params={"category": catalog["category"]["slug"]}), 200
    )
    assert len(page["items"]) == 5
    expect(await client.get(f"/products/{catalog['products'][0]['id']}"), 200)


async def test_list_filters_by_exact_sku(client: httpx2.AsyncClient, catalog: JSON) -> None:
    product = catalog["products"][2]
    assert await _list_ids(client, sku=product["sku"]) == [product["id"]]
    assert await _list_ids(client, sku=product["sku"][:-1]) == []
    assert await _list_ids(client, sku=unique("SKU-")) == []
    slug = catalog["category"]["slug"]
    assert await _list_ids(client, sku=product["sku"], category=slug) == [product["id"]]


# --------------------------------------------------------------------------- input rules


@pytest.mark.parametrize(
    "price",
    [
        {"amount": "1250", "currency": "EUR"},
        {"amount": True, "currency": "EUR"},
        {"amount": 1250, "currency": "USD"},
        {"amount": 1250, "currency": "eur"},
    ],
    ids=["string-amount", "bool-amount", "usd", "lower-case-eur"],
)
async def test_price_is_whole_eur_minor_units(
    client: httpx2.AsyncClient, admin: User, price: JSON
) -> None:
    category = await create_category(client, admin)
    product = await create_product(client, admin, category["id"], price=700)
    body = _product_body(category["id"], price=price)
    assert_validation_error(await client.post("/products", json=body, headers=admin.headers))
    assert await _list_ids(client, category=category["slug"]) == [product["id"]]
    resp = await client.patch(
        f"/products/{product['id']}", json={"price": price}, headers=admin.headers
    )
    assert_validation_error(resp)
    assert_money(expect(await client.get(f"/products/{product['id']}"), 200)["price"], 700)


async def test_a_whole_number_written_as_float_is_an_integer(
    client: httpx2.AsyncClient, admin: User
) -> None:
    category = await create_category(client, admin)
    body = _product_body(category["id"], price={"amount": 1250.0, "currency": "EUR"})
    product = expect(await client.post("/products", json=body, headers=admin.headers), 201)
    assert product["price"] == {"amount": 1250, "currency": "EUR"}
    assert isinstance(product["price"]["amount"], int)


@pytest.mark.parametrize(
    "name",
    [" Teapot", "Teapot ", "Tea\npot", "Tea\x07pot", ""],
    ids=["leading-space", "trailing-space", "newline", "bell", "empty"],
)
async def test_names_are_visible_edged_without_controls(
    client: httpx2.AsyncClient, admin: User, name: str
) -> None:
    category = await create_category(client, admin)
    product = await create_product(client, admin, category["id"])

    body = _product_body(category["id"], name=name)
    assert_validation_error(await client.post("/products", json=body, headers=admin.headers))
    assert await _list_ids(client, category=category["slug"]) == [product["id"]]

    resp = await client.patch(
        f"/products/{product['id']}", json={"name": name}, headers=admin.headers
    )
    assert_validation_error(resp)
    assert expect(await client.get(f"/products/{product['id']}"), 200)["name"] == product["name"]

    slug = unique("cat-")
    resp = await client.post(
        "/categories", json={"slug": slug, "name": name}, headers=admin.headers
    )
    assert_validation_error(resp)
    assert slug not in {c["slug"] for c in expect_list(await client.get("/categories"))}


async def test_descriptions_may_hold_tabs_and_newlines(
    client: httpx2.AsyncClient, admin: User
) -> None:
    category = await create_category(client, admin)
    description = "Line one\n\tindented line two\nline three"
    body = _product_body(category["id"], description=description)
    product = expect(await client.post("/products", json=body, headers=admin.headers), 201)
    assert product["description"] == description
    assert expect(await client.get(f"/products/{product['id']}"), 200)["description"] == description


@pytest.mark.parametrize("wildcard", ["%", "_", "\\"])
async def test_text_search_treats_wildcards_literally(
    client: httpx2.AsyncClient, admin: User, wildcard: str
) -> None:
    category = await create_category(client, admin)
    literal = await create_product(client, admin, category["id"], name=f"Sale 50{wildcard} off")
    await create_product(client, admin, category["id"], name="Sale 50 percent off")
    await create_product(client, admin, category["id"], name="Plain thing")
    slug = category["slug"]
    assert await _list_ids(client, category=slug, q=wildcard) == [literal["id"]]
    assert await _list_ids(client, category=slug, q=f"50{wildcard}") == [literal["id"]]
