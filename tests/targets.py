"""Targets for the contract suite: a deployment built in process, reached over ASGI.

``tests/contract`` never imports this module; it loads a target by name
(``--target tests.targets:monolith``), so the suite itself stays black-box.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2

from monolith.app import create_app
from shop.identity.tokens import generate_private_key_pem
from tests import support


@asynccontextmanager
async def monolith() -> AsyncIterator[dict[str, Any]]:
    """The modular monolith on a scratch database, lifespan running, no sockets."""
    with tempfile.TemporaryDirectory(prefix="shopkata-") as tmp:
        async with support.scratch_database(Path(tmp)) as url:
            await support.migrate(url)
            key = generate_private_key_pem()
            app = create_app(support.monolith_settings(url, key))
            async with app.router.lifespan_context(app):
                yield {
                    "transport": httpx2.ASGITransport(app=app),
                    "base_url": "http://monolith.test",
                    "admin_email": support.ADMIN_EMAIL,
                    "admin_password": support.ADMIN_PASSWORD,
                    "signing_key_pem": key,
                    "issuer": support.ISSUER,
                    "audience": support.AUDIENCE,
                    "payment_delay_seconds": support.PAYMENT_DELAY_SECONDS,
                }
