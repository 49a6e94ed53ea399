"""A small upstream for the gateway in live tests: a bare ASGI app, run by uvicorn.

``/healthz`` and ``/readyz`` answer at once; ``/.../slow?seconds=S`` answers after S seconds;
any other path reads the whole request body and answers its size.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qs

from starlette.types import Receive, Scope, Send


async def _answer(send: Send, status: int, document: dict[str, Any]) -> None:
    body = json.dumps(document).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    path: str = scope["path"]
    if path in ("/healthz", "/readyz"):
        await _answer(send, 200, {"status": "ok"})
        return
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    if path.endswith("/slow"):
        query = parse_qs(scope["query_string"].decode())
        await asyncio.sleep(float(query.get("seconds", ["1"])[0]))
    await _answer(send, 200, {"path": path, "size": size})
