"""Liveness and readiness endpoints, the same in every deployable.

``/readyz`` is public wherever the deployable is (the monolith faces clients itself): it says
whether the process can serve, never why not in terms of its internals. The reason goes to
the log.
"""

from __future__ import annotations

import logging
from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from shop.kernel.db import app_database
from shop.kernel.errors import ServiceUnavailable, problems

logger = logging.getLogger("shop.ops")
router = APIRouter(tags=["ops"])


class Health(BaseModel):
    status: Literal["ok"] = "ok"


class Readiness(BaseModel):
    status: Literal["ready"] = "ready"
    checks: dict[str, str]


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive."""
    return Health()


@router.get("/readyz", response_model=Readiness, responses=problems(503))
async def readyz(request: Request) -> Readiness:
    """The process can serve: its database answers."""
    try:
        await app_database(request).ping()
    except (SQLAlchemyError, OSError) as exc:
        logger.warning("not ready: the database is not reachable: %r", exc)
        raise ServiceUnavailable("The database is not reachable.") from exc
    return Readiness(checks={"database": "ok"})
