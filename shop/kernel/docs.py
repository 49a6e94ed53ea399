"""The API's one HTML page, Swagger UI at ``/docs``, under a strict Content-Security-Policy.

FastAPI's pages load Swagger UI from a CDN and start it with an inline script. Rather than
vendor about 1.5 MB of Swagger UI into the repository, the policy allows exactly what the
page needs and nothing else: the two CDN files by their full URLs, the inline scripts by
their SHA-256 hashes, ``/openapi.json`` and "Try it out" calls on the page's own origin,
no framing, no ``<base>``, no plug-ins. Styles may be inline (Swagger UI sets style
attributes; a style cannot run code). ReDoc is not served: its standalone bundle injects
styles and starts web workers from ``blob:`` URLs, which a strict policy would have to allow.

The pages are static: each is rendered once, with its policy, when the app is built.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse

TITLE = "shopkata"
SUMMARY = "An online shop: identity, catalog, inventory, cart, orders, payments."
VERSION = "0.1.0"
"""How every deployable, and the gateway's merged document, name the API: one shop."""

DOCS_PATH = "/docs"
OAUTH2_REDIRECT_PATH = "/docs/oauth2-redirect"

_SCRIPT_SRC = re.compile(r'<script[^>]*\bsrc="([^"]+)"')
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)
_STYLESHEET = re.compile(r'<link[^>]*\brel="stylesheet"[^>]*\bhref="([^"]+)"')
_ICON = re.compile(r'<link[^>]*\brel="shortcut icon"[^>]*\bhref="([^"]+)"')


def content_security_policy(html: str) -> str:
    """The strictest policy under which ``html`` (one of FastAPI's doc pages) still works."""
    scripts = [
        *_SCRIPT_SRC.findall(html),
        *(
            "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
            for body in _INLINE_SCRIPT.findall(html)
        ),
    ]
    rules = {
        "default-src": ["'none'"],
        "script-src": scripts or ["'none'"],
        "style-src": [*_STYLESHEET.findall(html), "'unsafe-inline'"],
        # Swagger UI's stylesheet draws its icons as data: SVGs.
        "img-src": [*_ICON.findall(html), "data:"],
        "connect-src": ["'self'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'none'"],
        "form-action": ["'self'"],
    }
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in rules.items())


def _with_policy(page: HTMLResponse) -> HTMLResponse:
    html = bytes(page.body).decode()
    return HTMLResponse(html, headers={"Content-Security-Policy": content_security_policy(html)})


def swagger_page(title: str, openapi_url: str = "/openapi.json") -> HTMLResponse:
    """Swagger UI on ``openapi_url``, with its policy."""
    return _with_policy(
        get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{title} - Swagger UI",
            oauth2_redirect_url=OAUTH2_REDIRECT_PATH,
        )
    )


def oauth2_redirect_page() -> HTMLResponse:
    """Swagger UI's OAuth2 redirect page, with its policy."""
    return _with_policy(get_swagger_ui_oauth2_redirect_html())


def install_docs(app: FastAPI) -> None:
    """Serve ``/docs`` and its OAuth2 redirect page for ``app`` (built with ``docs_url=None``
    and ``redoc_url=None``)."""
    docs = swagger_page(app.title, app.openapi_url or "/openapi.json")
    redirect = oauth2_redirect_page()

    @app.get(DOCS_PATH, include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return docs

    @app.get(OAUTH2_REDIRECT_PATH, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return redirect
