"""Payments: the fake card processor's outcomes, and charging once per idempotency key.

Charges are recorded in payments' own tables (a private SQLite file).
"""

from __future__ import annotations

import uuid

import anyio
import pytest
from pydantic import ValidationError

from shop.kernel.db import Database
from shop.kernel.security import Principal, Role
from shop.kernel.types import Money
from shop.payments import service
from shop.payments.exceptions import ProcessorTimeout
from shop.payments.models import Payment, PaymentStatus
from shop.payments.processor import Authorization, FakeCardProcessor
from shop.payments.schemas import ChargeCreate, PaymentRead
from tests.unit.conftest import MakeDatabase

pytestmark = pytest.mark.anyio

APPROVED_CARD = "4242424242424242"
DECLINED_CARD = "4000000000000002"
TIMEOUT_CARD = "4000000000000119"
DELAY = 0.05


class CountingProcessor(FakeCardProcessor):
    """The fake processor, counting the authorizations it was asked for."""

    def __init__(self, *, delay_seconds: float = DELAY) -> None:
        super().__init__(delay_seconds=delay_seconds)
        self.calls: list[tuple[str, int]] = []

    async def authorize(self, card_number: str, amount: int) -> Authorization:
        self.calls.append((card_number, amount))
        return await super().authorize(card_number, amount)


@pytest.fixture
async def db(make_database: MakeDatabase) -> Database:
    return await make_database(["payments"])


@pytest.fixture
def processor() -> CountingProcessor:
    return CountingProcessor()


def charge(
    *,
    key: str | None = None,
    card: str = APPROVED_CARD,
    amount: int = 1_999,
    order_id: uuid.UUID | None = None,
    user_id: uuid.UUID | None = None,
) -> ChargeCreate:
    return ChargeCreate(
        idempotency_key=key or f"order-{uuid.uuid4()}",
        order_id=order_id or uuid.uuid4(),
        user_id=user_id or uuid.uuid4(),
        amount=Money(amount=amount, currency="EUR"),
        card_number=card,
    )


# --------------------------------------------------------------------------- the processor


@pytest.mark.parametrize(
    ("card", "amount", "expected"),
    [
        (APPROVED_CARD, 1, Authorization.APPROVED),
        ("5555555555554444", 10_000, Authorization.APPROVED),
        (DECLINED_CARD, 1_999, Authorization.DECLINED),
        ("5105105105100002", 1_999, Authorization.DECLINED),
        (APPROVED_CARD, 0, Authorization.DECLINED),
    ],
)
async def test_the_processor_decides_by_card_suffix(
    card: str, amount: int, expected: Authorization
) -> None:
    assert await FakeCardProcessor(delay_seconds=5).authorize(card, amount) is expected


async def test_a_card_ending_0119_times_out_after_the_delay() -> None:
    processor = FakeCardProcessor(delay_seconds=DELAY)

    started = anyio.current_time()
    with pytest.raises(ProcessorTimeout):
        await processor.authorize(TIMEOUT_CARD, 1_999)
    waited = anyio.current_time() - started

    assert DELAY * 0.9 <= waited < DELAY + 1.0


async def test_approved_and_declined_answer_without_waiting() -> None:
    processor = FakeCardProcessor(delay_seconds=5)

    with anyio.fail_after(1):
        await processor.authorize(APPROVED_CARD, 1)
        await processor.authorize(DECLINED_CARD, 1)


# --------------------------------------------------------------------------- charges


@pytest.mark.parametrize(
    ("card", "status"),
    [
        (APPROVED_CARD, PaymentStatus.CAPTURED),
        (DECLINED_CARD, PaymentStatus.DECLINED),
        (TIMEOUT_CARD, PaymentStatus.TIMED_OUT),
    ],
)
async def test_a_charge_records_the_outcome(
    db: Database, processor: CountingProcessor, card: str, status: PaymentStatus
) -> None:
    data = charge(card=card, amount=2_500)

    payment = await service.create_payment(db, processor=processor, data=data)

    assert payment.status == status.value
    assert payment.idempotency_key == data.idempotency_key
    assert (payment.order_id, payment.user_id) == (data.order_id, data.user_id)
    assert payment.money == Money(amount=2_500, currency="EUR")
    assert payment.card_last4 == card[-4:]
    assert payment.refunded_at is None
    async with db.reader() as session:
        stored = await service.get_payment_by_key(session, idempotency_key=data.idempotency_key)
    assert stored is not None
    assert (stored.id, stored.status) == (payment.id, status.value)


async def test_a_replayed_key_returns_the_first_payment_without_charging_again(
    db: Database, processor: CountingProcessor
) -> None:
    first = await service.create_payment(db, processor=processor, data=charge(key="k-1"))

    again = await service.create_payment(
        db, processor=processor, data=charge(key="k-1", card=DECLINED_CARD, amount=1)
    )

    assert len(processor.calls) == 1
    assert again.id == first.id
    assert again.status == PaymentStatus.CAPTURED.value
    assert again.amount == 1_999


async def test_a_replayed_timeout_does_not_wait_again(db: Database) -> None:
    processor = CountingProcessor(delay_seconds=0.3)
    first = await service.create_payment(
        db, processor=processor, data=charge(key="slow", card=TIMEOUT_CARD)
    )

    with anyio.fail_after(0.25):
        again = await service.create_payment(
            db, processor=processor, data=charge(key="slow", card=TIMEOUT_CARD)
        )

    assert again.id == first.id
    assert again.status == PaymentStatus.TIMED_OUT.value
    assert len(processor.calls) == 1


async def test_other_keys_are_other_charges(db: Database, processor: CountingProcessor) -> None:
    order_id = uuid.uuid4()
    first = await service.create_payment(
        db, processor=processor, data=charge(key="a", order_id=order_id)
    )
    second = await service.create_payment(
        db, processor=processor, data=charge(key="b", order_id=order_id)
    )

    assert first.id != second.id
    assert len(processor.calls) == 2


async def test_concurrent_charges_with_one_key_record_one_payment(
    db: Database, processor: CountingProcessor
) -> None:
    data = charge(key="raced")
    payments: list[Payment] = []

    async def attempt() -> None:
        payments.append(await service.create_payment(db, processor=processor, data=data))

    async with anyio.create_task_group() as tasks:
        for _ in range(5):
            tasks.start_soon(attempt)

    assert len({p.id for p in payments}) == 1
    async with db.reader() as session:
        rows = await service.list_payments(
            session,
            principal=Principal(user_id=uuid.uuid4(), role=Role.ADMIN),
            order_id=data.order_id,
            limit=10,
            offset=0,
        )
    assert [row.id for row in rows] == [payments[0].id]


# --------------------------------------------------------------------------- refunds and lists


async def test_a_refund_touches_the_keys_captured_payment_only_and_once(
    db: Database, processor: CountingProcessor
) -> None:
    order_id = uuid.uuid4()
    captured = await service.create_payment(db, processor=processor, data=charge(order_id=order_id))
    declined = await service.create_payment(
        db, processor=processor, data=charge(order_id=order_id, card=DECLINED_CARD)
    )
    other = await service.create_payment(db, processor=processor, data=charge())

    async def refund(payment: Payment) -> PaymentStatus:
        async with db.writer() as session, session.begin():
            return await service.refund_payment(
                session,
                idempotency_key=payment.idempotency_key,
                order_id=payment.order_id,
                user_id=payment.user_id,
            )

    assert await refund(captured) is PaymentStatus.REFUNDED
    assert await refund(captured) is PaymentStatus.REFUNDED
    assert await refund(declined) is PaymentStatus.DECLINED

    stored: dict[uuid.UUID, Payment] = {}
    async with db.reader() as session:
        for payment in (captured, declined, other):
            row = await service.get_payment_by_key(session, idempotency_key=payment.idempotency_key)
            assert row is not None
            stored[payment.id] = row
    assert stored[captured.id].status == PaymentStatus.REFUNDED.value
    assert stored[captured.id].refunded_at is not None
    assert stored[declined.id].status == PaymentStatus.DECLINED.value
    assert stored[declined.id].refunded_at is None
    assert stored[other.id].status == PaymentStatus.CAPTURED.value


async def test_a_refund_before_the_charge_voids_the_key(
    db: Database, processor: CountingProcessor
) -> None:
    """A compensation that overtakes a slow charge: the late charge finds the key voided."""
    data = charge()
    async with db.writer() as session, session.begin():
        status = await service.refund_payment(
            session,
            idempotency_key=data.idempotency_key,
            order_id=data.order_id,
            user_id=data.user_id,
        )
    assert status is PaymentStatus.VOIDED
    late = await service.create_payment(db, processor=processor, data=data)
    assert late.status == PaymentStatus.VOIDED.value
    assert late.amount == 0
    async with db.reader() as session:
        listed = await service.list_payments(
            session,
            principal=Principal(user_id=data.user_id, role=Role.CUSTOMER),
            order_id=None,
            limit=10,
            offset=0,
        )
    assert listed == [], "a void marker is bookkeeping, not a payment the customer made"


async def test_customers_list_their_own_payments_and_admins_everyones(
    db: Database, processor: CountingProcessor
) -> None:
    alice = Principal(user_id=uuid.uuid4(), role=Role.CUSTOMER)
    bob = Principal(user_id=uuid.uuid4(), role=Role.CUSTOMER)
    boss = Principal(user_id=uuid.uuid4(), role=Role.ADMIN)
    alices = [
        await service.create_payment(db, processor=processor, data=charge(user_id=alice.user_id))
        for _ in range(3)
    ]
    bobs = await service.create_payment(db, processor=processor, data=charge(user_id=bob.user_id))

    async with db.reader() as session:
        mine = await service.list_payments(
            session, principal=alice, order_id=None, limit=10, offset=0
        )
        everyone = await service.list_payments(
            session, principal=boss, order_id=None, limit=10, offset=0
        )
        one_order = await service.list_payments(
            session, principal=alice, order_id=alices[1].order_id, limit=10, offset=0
        )
        not_mine = await service.list_payments(
            session, principal=alice, order_id=bobs.order_id, limit=10, offset=0
        )

    assert [p.id for p in mine] == [p.id for p in reversed(alices)]
    assert {p.id for p in everyone} == {p.id for p in [*alices, bobs]}
    assert [p.id for p in one_order] == [alices[1].id]
    assert not_mine == []
    read = PaymentRead.model_validate(mine[0])
    assert read.amount == Money(amount=1_999, currency="EUR")
    assert "card_number" not in read.model_dump()


@pytest.mark.parametrize(
    "changes",
    [
        {"card_number": "4242"},
        {"card_number": "4242-4242-4242-4242"},
        {"idempotency_key": ""},
        {"idempotency_key": "k" * 256},
        {"unexpected": 1},
    ],
)
def test_charge_requests_are_validated(changes: dict[str, object]) -> None:
    data = charge().model_dump(mode="json")
    with pytest.raises(ValidationError):
        ChargeCreate.model_validate({**data, **changes})
