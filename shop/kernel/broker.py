"""The services' bus: integration events over RabbitMQ (:class:`RabbitBus`, aio-pika).

Each publishing context has a durable topic exchange, ``shop.<context>``; each event is a
persistent message routed by its type (``inventory.StockChanged``), its body the
:class:`~shop.kernel.events.Envelope` as JSON, its id, type and time also in the message's
properties and the request's ``traceparent`` in a header. ``publish`` returns once the
broker has confirmed every message: a nack or a lost connection raises, and the relay leaves
the rows to publish again. Every process declares every consumer's queue before its relays
start (:meth:`RabbitBus.declare`), so an event published before its consumer's first start
waits in that consumer's queue; an event no context reads is confirmed and dropped.

Each consuming context has a durable quorum queue, ``shop.<context>``, bound to the
exchanges of the types it reads. One subscription applies its messages in queue order, in
batches of what has arrived (up to the prefetch), each batch one ``deliver`` and one ack; a
batch that fails is delivered again one message at a time, and a message that fails alone
is returned to the queue (it comes back after the ones already fetched). The quorum queue
counts the deliveries and, past the delivery limit, moves the message through
``shop.dead-letter`` to ``shop.<context>.dead``. A body that is no envelope goes there at
once.

aio-pika's robust connection reconnects after the broker restarts and declares the
exchanges, queues, bindings and consumers again; publishing fails while it is away.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)

from shop.kernel.events import Deliver, Envelope

logger = logging.getLogger("shop.events.broker")

DEAD_LETTER = "dead-letter"
"""The direct exchange (``<prefix>.dead-letter``) every consumer's rejected messages go to."""


class RabbitBus:
    """:class:`~shop.kernel.events.Bus` on a RabbitMQ broker, one robust connection per bus.

    ``delivery_limit`` is how many times one message is handed to a consumer's ``deliver``
    before it is dead-lettered (the in-process bus's meaning; the queue's
    ``x-delivery-limit`` counts the redeliveries, one fewer). ``prefetch`` bounds the
    messages a subscription holds unacked. ``retry_delay`` is the pause before a failed
    message is returned, so that a dependency that is briefly away (the database restarting)
    does not use up the limit at once. ``prefix`` names every exchange and queue (tests use
    their own). A queue's arguments are fixed when it is first declared: changing
    ``delivery_limit`` for an existing queue needs the queue deleted (or a policy).
    """

    def __init__(
        self,
        url: str,
        *,
        prefetch: int = 16,
        delivery_limit: int = 5,
        retry_delay: float = 0.5,
        publish_timeout: float = 10.0,
        reconnect_interval: float = 1.0,
        prefix: str = "shop",
    ) -> None:
        if delivery_limit < 1:
            raise ValueError("delivery_limit must be at least 1")
        self.url = url
        self.prefetch = prefetch
        self.delivery_limit = delivery_limit
        self.retry_delay = retry_delay
        self.publish_timeout = publish_timeout
        self.reconnect_interval = reconnect_interval
        self.prefix = prefix
        self._connection: AbstractRobustConnection | None = None
        self._publishing: AbstractRobustChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._subscriptions: list[tuple[AbstractRobustChannel, AbstractQueue]] = []
        self._lock = asyncio.Lock()
        self._closed = False

    # --- names -----------------------------------------------------------------------

    def exchange_name(self, source: str) -> str:
        """The topic exchange the ``source`` context publishes to."""
        return f"{self.prefix}.{source}"

    def queue_name(self, consumer: str) -> str:
        """The queue the ``consumer`` context reads from."""
        return f"{self.prefix}.{consumer}"

    def dead_queue_name(self, consumer: str) -> str:
        """Where the ``consumer`` context's undeliverable messages end."""
        return f"{self.prefix}.{consumer}.dead"

    @property
    def dead_letter_exchange(self) -> str:
        return f"{self.prefix}.{DEAD_LETTER}"

    async def delete(self, *, consumers: Iterable[str], sources: Iterable[str]) -> None:
        """Delete the queues of ``consumers``, the exchanges of ``sources`` and the
        dead-letter exchange, under this bus's prefix, with whatever they hold: for a
        deployment taken down for good (a benchmark's, a test's), whose names would
        otherwise stay on the broker."""
        connection = await aio_pika.connect(self.url, timeout=10)
        async with connection:
            channel = await connection.channel()
            for consumer in consumers:
                await channel.queue_delete(self.queue_name(consumer))
                await channel.queue_delete(self.dead_queue_name(consumer))
            for source in sources:
                await channel.exchange_delete(self.exchange_name(source))
            await channel.exchange_delete(self.dead_letter_exchange)

    # --- the connection ----------------------------------------------------------------

    async def _connect(self) -> AbstractRobustConnection:
        async with self._lock:
            return await self._connected()

    async def _connected(self) -> AbstractRobustConnection:
        if self._closed:
            raise RuntimeError("the bus is closed")
        if self._connection is None:
            self._connection = await aio_pika.connect_robust(
                self.url,
                reconnect_interval=self.reconnect_interval,
                client_properties={"connection_name": f"{self.prefix} bus"},
            )
        return self._connection

    async def _publisher(self, source: str) -> AbstractExchange:
        """``source``'s exchange on the publishing channel (confirms, returns raise)."""
        async with self._lock:
            if source not in self._exchanges:
                if self._publishing is None:
                    channel = (await self._connected()).channel(
                        publisher_confirms=True, on_return_raises=True
                    )
                    await channel
                    self._publishing = channel
                self._exchanges[source] = await self._exchange(self._publishing, source)
            return self._exchanges[source]

    async def _exchange(self, channel: AbstractRobustChannel, source: str) -> AbstractExchange:
        return await channel.declare_exchange(
            self.exchange_name(source), aio_pika.ExchangeType.TOPIC, durable=True
        )

    # --- publishing --------------------------------------------------------------------

    async def publish(self, source: str, envelopes: Sequence[Envelope]) -> None:
        """Publish in order and wait for every confirm; raises if any is missing."""
        if not envelopes:
            return
        async with asyncio.timeout(self.publish_timeout):
            exchange = await self._publisher(source)
            # One channel writes its publishes in the order they are made, and the broker
            # keeps that order on each queue; the confirms are awaited together.
            results = await asyncio.gather(
                *(
                    exchange.publish(_message(source, envelope), envelope.type, mandatory=False)
                    for envelope in envelopes
                ),
                return_exceptions=True,
            )
        for result in results:
            if isinstance(result, BaseException):
                raise result

    # --- consuming ---------------------------------------------------------------------

    async def declare(self, consumers: Mapping[str, Sequence[str]]) -> None:
        """Every consumer's queue, bound to the types it reads, whoever declares them first.

        Each process of the shop declares them all at start (the declarations say who
        consumes what), so an event published before its consumer's first start waits in
        that consumer's queue instead of being dropped for want of one.
        """
        connection = await self._connect()
        channel = await connection.channel()
        try:
            for consumer, types in consumers.items():
                await self._queue(channel, consumer, types)
        finally:
            await channel.close()

    async def _queue(
        self, channel: AbstractRobustChannel, consumer: str, types: Sequence[str]
    ) -> AbstractQueue:
        dead_letters = await channel.declare_exchange(
            self.dead_letter_exchange, aio_pika.ExchangeType.DIRECT, durable=True
        )
        name = self.queue_name(consumer)
        dead = await channel.declare_queue(self.dead_queue_name(consumer), durable=True)
        await dead.bind(dead_letters, routing_key=name)
        queue = await channel.declare_queue(
            name,
            durable=True,
            arguments={
                "x-queue-type": "quorum",
                "x-delivery-limit": self.delivery_limit - 1,
                "x-dead-letter-exchange": self.dead_letter_exchange,
                "x-dead-letter-routing-key": name,
            },
        )
        for type_ in sorted(set(types)):
            source, _, _ = type_.partition(".")
            exchange = await self._exchange(channel, source)
            await queue.bind(exchange, routing_key=type_)
        return queue

    async def subscribe(self, consumer: str, types: Sequence[str], deliver: Deliver) -> None:
        """Declare ``consumer``'s queue, bind it to ``types`` and start consuming."""
        connection = await self._connect()
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=self.prefetch)
        queue = await self._queue(channel, consumer, types)
        # Held by the bus: after a reconnect aio-pika restores only the channels still alive,
        # and holds them by weak references. Once the lost connection's objects are dropped
        # (at the first attempt to reconnect), a garbage collection would take an unheld
        # channel, and the consumer with it: its queue would fill, and nothing be applied.
        self._subscriptions.append((channel, queue))
        await queue.consume(_Consumer(consumer, deliver, self.retry_delay), no_ack=False)

    async def aclose(self) -> None:
        """Close the connection: consumers stop, unacked messages return to their queues."""
        # Not under the lock: a publish may hold it while the broker is away.
        self._closed = True
        connection, self._connection = self._connection, None
        self._publishing = None
        self._exchanges.clear()
        self._subscriptions.clear()
        if connection is not None:
            await connection.close()


class _Consumer:
    """One subscription's message callback: deliveries applied in queue order, in batches.

    aio-pika runs each delivery in a task of its own. Each task adds its message to the
    pending ones; if no task is applying them, it does so itself: everything pending at
    once (up to the channel's prefetch), batch after batch until none is left. A consumer
    that fell behind catches up with one transaction per batch, not per event, and the
    tasks whose messages another took return at once. (They used to queue on a lock, each
    waiting one event-loop cycle to find nothing left: under load, most of an event's lag.)
    """

    def __init__(self, consumer: str, deliver: Deliver, retry_delay: float) -> None:
        self.consumer = consumer
        self.deliver = deliver
        self.retry_delay = retry_delay
        self._pending: list[AbstractIncomingMessage] = []
        self._applying = False

    async def __call__(self, message: AbstractIncomingMessage) -> None:
        self._pending.append(message)
        if self._applying:
            return  # the task applying the batches takes this one too, in order
        self._applying = True
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                await self._apply(batch)
        finally:
            self._applying = False

    async def _apply(self, messages: Sequence[AbstractIncomingMessage]) -> None:
        arrived: list[tuple[AbstractIncomingMessage, Envelope]] = []
        for message in messages:
            try:
                arrived.append((message, Envelope.from_json(json.loads(message.body))))
            except Exception as exc:
                logger.error(
                    "%s: message %s (%s) is not an event envelope (%s); dead-lettered",
                    self.consumer,
                    message.message_id,
                    message.type,
                    exc,
                )
                await _settle(message.reject(requeue=False))
        if len(arrived) > 1:
            try:
                await self.deliver([envelope for _, envelope in arrived])
            except Exception:  # noqa: S110 (found again, and logged, one by one below)
                pass
            else:
                # One ack for the batch: its channel is this consumer's alone, and every
                # delivery before the batch's last one is settled by now (in queue order).
                await _settle(arrived[-1][0].ack(multiple=True))
                return
        # One of them failed (or there is one): one by one, so that only that one goes back.
        for message, envelope in arrived:
            await self._one(message, envelope)

    async def _one(self, message: AbstractIncomingMessage, envelope: Envelope) -> None:
        try:
            await self.deliver([envelope])
        except Exception:
            count = (message.headers or {}).get("x-delivery-count", 0)
            logger.warning(
                "%s failed on %s %s (delivery %s); returned to the queue",
                self.consumer,
                envelope.type,
                envelope.id,
                int(count) + 1 if isinstance(count, int) else "?",
                exc_info=True,
            )
            if self.retry_delay > 0:
                await asyncio.sleep(self.retry_delay)
            # reject, not nack: RabbitMQ 4.3+ counts only a reject towards the delivery limit.
            await _settle(message.reject(requeue=True))
            return
        await _settle(message.ack())


async def _settle(settling: Awaitable[Any]) -> None:
    """Ack, nack or reject; if the channel went away meanwhile, the broker returns the
    message to its queue by itself."""
    try:
        await settling
    except Exception:
        logger.warning("could not settle a message; the broker will deliver it again")


def _message(source: str, envelope: Envelope) -> aio_pika.Message:
    return aio_pika.Message(
        json.dumps(envelope.to_json(), separators=(",", ":")).encode(),
        content_type="application/json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        message_id=str(envelope.id),
        type=envelope.type,
        timestamp=envelope.occurred_at,
        app_id=source,
        headers={"traceparent": envelope.traceparent} if envelope.traceparent else None,
    )
