"""Payments: the fake card processor's outcomes, and charging once per idempotency key.

Charges are recorded in payments' own tables (a private SQLite file).
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import anyio
import pytest
from pydantic import ValidationError

from shop.kernel.db import Database, utcnow
from shop.kernel.security import Principal, Role
from shop.kernel.types import Money
from shop.payments import repository, service
from shop.payments.exceptions import PaymentInFlight, PaymentNotFound, ProcessorTimeout
from shop.payments.models import Payment, PaymentStatus
from shop.payments.processor import Authorization, FakeCardProcessor
from shop.payments.schemas import ChargeCreate, PaymentRead
from shop.payments.settings import PaymentsSettings
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

    async def authorize(self, *, key: str, card_number: str, amount: int) -> Authorization:
        self.calls.append((card_number, amount))
        return await super().authorize(key=key, card_number=card_number, amount=amount)


@pytest.fixture
async def db(make_database: MakeDatabase) -> Database:
    return await make_database(["payments"])


@pytest.fixture
def processor() -> CountingProcessor:
    return CountingProcessor()


CLAIM_EXPIRY = timedelta(seconds=30)


async def create(db: Database, processor: FakeCardProcessor, data: ChargeCreate) -> Payment:
    return await service.create_payment(
        db, processor=processor, data=data, claim_expiry=CLAIM_EXPIRY
    )


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
    assert (
        await FakeCardProcessor(delay_seconds=5).authorize(key="k", card_number=card, amount=amount)
        is expected
    )


async def test_a_card_ending_0119_times_out_after_the_delay() -> None:
    processor = FakeCardProcessor(delay_seconds=DELAY)

    started = anyio.current_time()
    with pytest.raises(ProcessorTimeout):
        await processor.authorize(key="k", card_number=TIMEOUT_CARD, amount=1_999)
    waited = anyio.current_time() - started

    assert DELAY * 0.9 <= waited < DELAY + 1.0


async def test_approved_and_declined_answer_without_waiting() -> None:
    processor = FakeCardProcessor(delay_seconds=5)

    with anyio.fail_after(1):
        await processor.authorize(key="a", card_number=APPROVED_CARD, amount=1)
        await processor.authorize(key="d", card_number=DECLINED_CARD, amount=1)


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

    payment = await create(db, processor, data)

    assert payment.status == status.value
    assert payment.idempotency_key == data.idempotency_key
    assert (payment.order_id, payment.user_id) == (data.order_id, data.user_id)
    assert payment.money == Money(amount=2_500, currency="EUR")
    assert payment.card_last4 == card[-4:]
    assert payment.refunded_at is None
    async with db.reader() as session:
        stored = await repository.get_by_key(session, data.idempotency_key)
    assert stored is not None
    assert (stored.id, stored.status) == (payment.id, status.value)


async def test_a_replayed_key_returns_the_first_payment_without_charging_again(
    db: Database, processor: CountingProcessor
) -> None:
    first = await create(db, processor, charge(key="k-1"))

    again = await create(db, processor, charge(key="k-1", card=DECLINED_CARD, amount=1))

    assert len(processor.calls) == 1
    assert again.id == first.id
    assert again.status == PaymentStatus.CAPTURED.value
    assert again.amount == 1_999


async def test_a_replayed_timeout_does_not_wait_again(db: Database) -> None:
    processor = CountingProcessor(delay_seconds=0.3)
    first = await create(db, processor, charge(key="slow", card=TIMEOUT_CARD))

    with anyio.fail_after(0.25):
        again = await create(db, processor, charge(key="slow", card=TIMEOUT_CARD))

    assert again.id == first.id
    assert again.status == PaymentStatus.TIMED_OUT.value
    assert len(processor.calls) == 1


async def test_other_keys_are_other_charges(db: Database, processor: CountingProcessor) -> None:
    order_id = uuid.uuid4()
    first = await create(db, processor, charge(key="a", order_id=order_id))
    second = await create(db, processor, charge(key="b", order_id=order_id))

    assert first.id != second.id
    assert len(processor.calls) == 2


class GatedProcessor(CountingProcessor):
    """Holds every authorization at the processor until the test opens the gate."""

    def __init__(self, *, after: bool = False) -> None:
        super().__init__()
        self.entered = anyio.Event()
        self.gate = anyio.Event()
        self._after = after

    async def authorize(self, *, key: str, card_number: str, amount: int) -> Authorization:
        self.entered.set()
        if not self._after:
            await self.gate.wait()
        outcome = await super().authorize(key=key, card_number=card_number, amount=amount)
        if self._after:  # the processor has authorized; its answer is on its way
            await self.gate.wait()
        return outcome


async def test_a_charge_claims_its_key_before_the_processor_is_asked(db: Database) -> None:
    """A retry while the first attempt is with the processor never reaches the processor."""
    processor = GatedProcessor()
    data = charge(key="claimed")
    first: list[Payment] = []

    async def attempt() -> None:
        first.append(await create(db, processor, data))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(attempt)
        await processor.entered.wait()
        async with db.reader() as session:
            claim = await repository.get_by_key(session, "claimed")
        assert claim is not None
        assert claim.status == PaymentStatus.PENDING.value
        with pytest.raises(PaymentInFlight):
            await create(db, processor, data)
        processor.gate.set()

    assert len(processor.calls) == 1
    assert processor.authorized["claimed"] == 1
    assert first[0].status == PaymentStatus.CAPTURED.value
    replay = await create(db, processor, data)
    assert (replay.id, replay.status) == (first[0].id, PaymentStatus.CAPTURED.value)
    assert len(processor.calls) == 1


async def test_concurrent_charges_with_one_key_authorize_once(db: Database) -> None:
    processor = CountingProcessor()
    data = charge(key="raced")
    outcomes: list[Payment | PaymentInFlight] = []

    async def attempt() -> None:
        try:
            outcomes.append(await create(db, processor, data))
        except PaymentInFlight as exc:
            outcomes.append(exc)

    async with anyio.create_task_group() as tasks:
        for _ in range(5):
            tasks.start_soon(attempt)

    assert len(processor.calls) == 1
    assert processor.authorized["raced"] == 1
    recorded = {p.id for p in outcomes if isinstance(p, Payment)}
    assert len(recorded) == 1
    async with db.reader() as session:
        rows = await service.list_payments(
            session,
            principal=Principal(user_id=uuid.uuid4(), role=Role.ADMIN),
            order_id=data.order_id,
            limit=10,
            offset=0,
        )
    assert [row.id for row in rows] == list(recorded)


@pytest.mark.parametrize("authorized_before_the_void", [False, True])
async def test_a_void_that_meets_a_charge_in_flight_reverses_it(
    db: Database, authorized_before_the_void: bool
) -> None:
    """The compensation wins, and nothing stays charged whatever the processor answered."""
    processor = GatedProcessor(after=authorized_before_the_void)
    data = charge(key="overtaken")
    charged: list[Payment] = []

    async def attempt() -> None:
        charged.append(await create(db, processor, data))

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(attempt)
        await processor.entered.wait()
        status = await service.refund_payment(
            db,
            processor=processor,
            idempotency_key="overtaken",
            order_id=data.order_id,
            user_id=data.user_id,
        )
        assert status is PaymentStatus.VOIDED
        processor.gate.set()

    assert charged[0].status == PaymentStatus.VOIDED.value
    assert not processor.holds("overtaken"), "the processor still holds the money"
    async with db.reader() as session:
        stored = await repository.get_by_key(session, "overtaken")
    assert stored is not None
    assert stored.status == PaymentStatus.VOIDED.value


async def test_a_timed_out_charge_is_reversed_at_the_processor(
    db: Database, processor: CountingProcessor
) -> None:
    payment = await create(db, processor, charge(key="slow", card=TIMEOUT_CARD))

    assert payment.status == PaymentStatus.TIMED_OUT.value
    assert "slow" in processor.reversed


async def add_claim(db: Database, data: ChargeCreate, *, expires_in: timedelta) -> None:
    """A pending claim as a charge that is (or was) with the processor leaves it."""
    async with db.writer() as session, session.begin():
        await repository.add(
            session,
            Payment(
                id=uuid.uuid4(),
                idempotency_key=data.idempotency_key,
                order_id=data.order_id,
                user_id=data.user_id,
                amount=data.amount.amount,
                currency="EUR",
                status=PaymentStatus.PENDING.value,
                card_last4=data.card_number[-4:],
                claim_expires_at=utcnow() + expires_in,
            ),
        )


async def test_a_claim_whose_charge_died_is_taken_over_by_the_next_charge(
    db: Database, processor: CountingProcessor
) -> None:
    """Payments restarted while the processor was asked: the claim ran out unsettled. The
    retried charge (it has the card) asks the processor again under the same key."""
    data = charge(key="orphan")
    await add_claim(db, data, expires_in=-timedelta(seconds=1))
    async with db.reader() as session:
        found = await service.get_charge(session, key="orphan")
    assert found is not None
    assert found.status == PaymentStatus.PENDING.value

    replay = await create(db, processor, data)

    assert replay.status == PaymentStatus.CAPTURED.value
    assert processor.calls == [(data.card_number, data.amount.amount)]
    assert processor.authorized["orphan"] == 1
    assert replay.claim_expires_at is None
    assert (await create(db, processor, data)).id == replay.id
    assert len(processor.calls) == 1


async def test_a_live_claim_is_in_flight(db: Database, processor: CountingProcessor) -> None:
    data = charge(key="young")
    await add_claim(db, data, expires_in=CLAIM_EXPIRY)

    with pytest.raises(PaymentInFlight):
        await create(db, processor, data)

    assert processor.calls == []


async def test_a_void_of_a_dead_claim_reverses_the_key(
    db: Database, processor: CountingProcessor
) -> None:
    """Recovery (it has no card) settles a charge that died in flight by voiding its key."""
    data = charge(key="abandoned")
    await add_claim(db, data, expires_in=-timedelta(seconds=1))

    status = await service.refund_payment(
        db,
        processor=processor,
        idempotency_key="abandoned",
        order_id=data.order_id,
        user_id=data.user_id,
    )

    assert status is PaymentStatus.VOIDED
    assert "abandoned" in processor.reversed
    assert (await create(db, processor, data)).status == PaymentStatus.VOIDED.value
    assert processor.calls == []


def test_claims_must_outlive_the_processor() -> None:
    with pytest.raises(ValidationError, match="claim_expiry_seconds"):
        PaymentsSettings(processor_delay_seconds=10, claim_expiry_seconds=5)


# --------------------------------------------------------------------------- refunds and lists


async def test_a_refund_touches_the_keys_captured_payment_only_and_once(
    db: Database, processor: CountingProcessor
) -> None:
    order_id = uuid.uuid4()
    captured = await create(db, processor, charge(order_id=order_id))
    declined = await create(db, processor, charge(order_id=order_id, card=DECLINED_CARD))
    other = await create(db, processor, charge())

    async def refund(payment: Payment) -> PaymentStatus:
        return await service.refund_payment(
            db,
            processor=processor,
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
            row = await repository.get_by_key(session, payment.idempotency_key)
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
    status = await service.refund_payment(
        db,
        processor=processor,
        idempotency_key=data.idempotency_key,
        order_id=data.order_id,
        user_id=data.user_id,
    )
    assert status is PaymentStatus.VOIDED
    late = await create(db, processor, data)
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
    alices = [await create(db, processor, charge(user_id=alice.user_id)) for _ in range(3)]
    bobs = await create(db, processor, charge(user_id=bob.user_id))

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


async def test_the_charge_status_of_a_key_nobody_charged_is_not_found(
    db: Database, processor: CountingProcessor
) -> None:
    data = charge(key="once")
    await create(db, processor, data)

    async with db.reader() as session:
        assert await service.get_charge_status(session, key="once") is PaymentStatus.CAPTURED
        with pytest.raises(PaymentNotFound):
            await service.get_charge_status(session, key="never")
