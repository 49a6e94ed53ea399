"""Liveness and readiness endpoints, the same in every deployable."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel
from sqlalchemy.exc import SQLAlchemyError

from shop.kernel.db import app_database
from shop.kernel.errors import ServiceUnavailable, problems

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
        raise ServiceUnavailable(f"The database is not reachable: {type(exc).__name__}.") from exc
    return Readiness(checks={"database": "ok"})
