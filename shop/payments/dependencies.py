"""Payments' request dependencies."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from shop.payments.processor import FakeCardProcessor


async def card_processor(request: Request) -> FakeCardProcessor:
    processor = getattr(request.app.state, "card_processor", None)
    if not isinstance(processor, FakeCardProcessor):
        raise RuntimeError("app.state.card_processor is not set")
    return processor


Processor = Annotated[FakeCardProcessor, Depends(card_processor)]
