"""``python -m bench.broker``: aio-pika against FastStream on a local RabbitMQ.

Each client, in turn, ``--rounds`` times (the best round kept): declares a durable topic
exchange and a durable quorum queue bound to it (the shop's settings: ``x-delivery-limit``,
names with a random suffix, deleted afterwards), publishes ``--count`` small persistent JSON
messages with publisher confirms, awaiting the confirms in batches of ``--batch``, then
consumes them with manual acks (prefetch ``--prefetch``) until every one has arrived. Each
client uses its own ordinary API: aio-pika's ``connect_robust`` channel, exchange and
queue objects; FastStream's ``RabbitBroker.publish`` and a subscriber with
``AckPolicy.MANUAL`` that acks each message itself. It prints messages per second for each
phase and the ratio aio-pika / FastStream. A program, not a test.

FastStream is not a dependency of the project (it wraps aio-pika for RabbitMQ; the shop
uses aio-pika directly). Without it installed, only aio-pika is measured and the script
says so. The comparison was run with both installed in a virtualenv of their own::

    uv venv /tmp/broker-bench && uv pip install --python /tmp/broker-bench/bin/python \\
        'faststream[rabbit]' aio-pika
    PYTHONPATH=. /tmp/broker-bench/bin/python -m bench.broker

This module imports nothing else of the project, so that virtualenv needs nothing more.
Recorded on the 2-core development machine, RabbitMQ 3.10 on loopback, aio-pika 10.2.1,
FastStream 0.7.8, defaults (5,000 messages, batches of 100, prefetch 100, best of 3)::

    client          publish    consume
    aio-pika          9,511      8,226
    faststream        7,413      2,945
    aio-pika / FastStream: publish 1.28x, consume 2.79x

Publishing is the broker's confirms either way (FastStream publishes through aio-pika);
consuming pays FastStream's per-message dependency injection, validation and middleware.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aio_pika

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
ROUTING_KEY = "bench.Measured"
QUEUE_ARGUMENTS = {"x-queue-type": "quorum", "x-delivery-limit": 5}


@dataclass(frozen=True)
class Options:
    url: str
    count: int
    batch: int
    prefetch: int


@dataclass(frozen=True)
class Result:
    publish: float
    """Messages per second, confirms included."""
    consume: float
    """Messages per second, acks included."""


def _body(index: int) -> dict[str, Any]:
    return {"id": str(uuid.uuid4()), "index": index, "sku": f"SKU-{index:05d}", "level": 7}


def _names() -> tuple[str, str]:
    suffix = uuid.uuid4().hex[:8]
    return f"bench.broker.{suffix}", f"bench.broker.{suffix}.queue"


async def _cleanup(url: str, exchange: str, queue: str) -> None:
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.queue_delete(queue)
        await channel.exchange_delete(exchange)


async def _batched(count: int, batch: int, publish: Callable[[int], Awaitable[Any]]) -> None:
    for start in range(0, count, batch):
        await asyncio.gather(*(publish(i) for i in range(start, min(start + batch, count))))


async def aiopika_round(options: Options) -> Result:
    exchange_name, queue_name = _names()
    try:
        connection = await aio_pika.connect_robust(options.url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            exchange = await channel.declare_exchange(
                exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
            )
            queue = await channel.declare_queue(queue_name, durable=True, arguments=QUEUE_ARGUMENTS)
            await queue.bind(exchange, ROUTING_KEY)

            async def publish(index: int) -> None:
                body = _body(index)
                await exchange.publish(
                    aio_pika.Message(
                        json.dumps(body).encode(),
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        message_id=body["id"],
                        content_type="application/json",
                    ),
                    ROUTING_KEY,
                )

            started = time.perf_counter()
            await _batched(options.count, options.batch, publish)
            published = time.perf_counter() - started

            consumer = await connection.channel()
            await consumer.set_qos(prefetch_count=options.prefetch)
            queue = await consumer.declare_queue(
                queue_name, durable=True, arguments=QUEUE_ARGUMENTS
            )
            done = asyncio.Event()
            seen = 0

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                nonlocal seen
                json.loads(message.body)
                await message.ack()
                seen += 1
                if seen == options.count:
                    done.set()

            started = time.perf_counter()
            tag = await queue.consume(on_message, no_ack=False)
            await asyncio.wait_for(done.wait(), timeout=120)
            consumed = time.perf_counter() - started
            await queue.cancel(tag)
    finally:
        await _cleanup(options.url, exchange_name, queue_name)
    return Result(options.count / published, options.count / consumed)


async def faststream_round(options: Options, rabbit: Any) -> Result:
    exchange_name, queue_name = _names()
    exchange = rabbit.RabbitExchange(exchange_name, type=rabbit.ExchangeType.TOPIC, durable=True)
    queue = rabbit.RabbitQueue(
        queue_name,
        queue_type=rabbit.QueueType.QUORUM,
        durable=True,
        arguments={"x-delivery-limit": 5},
        routing_key=ROUTING_KEY,
    )
    faststream = importlib.import_module("faststream")
    try:
        publisher = rabbit.RabbitBroker(options.url, logger=None)
        await publisher.connect()
        try:
            declared_exchange = await publisher.declare_exchange(exchange)
            declared_queue = await publisher.declare_queue(queue)
            await declared_queue.bind(declared_exchange, ROUTING_KEY)

            async def publish(index: int) -> None:
                body = _body(index)
                await publisher.publish(
                    body,
                    exchange=exchange,
                    routing_key=ROUTING_KEY,
                    persist=True,
                    message_id=body["id"],
                )

            started = time.perf_counter()
            await _batched(options.count, options.batch, publish)
            published = time.perf_counter() - started
        finally:
            await publisher.stop()

        broker = rabbit.RabbitBroker(options.url, logger=None)
        done = asyncio.Event()
        seen = 0

        async def on_message(
            body: dict[str, Any], message: Any = faststream.Context("message")
        ) -> None:
            nonlocal seen
            await message.ack()
            seen += 1
            if seen == options.count:
                done.set()

        broker.subscriber(
            queue,
            exchange,
            ack_policy=faststream.AckPolicy.MANUAL,
            channel=rabbit.Channel(prefetch_count=options.prefetch),
        )(on_message)

        await broker.connect()
        try:
            started = time.perf_counter()
            await broker.start()
            await asyncio.wait_for(done.wait(), timeout=120)
            consumed = time.perf_counter() - started
        finally:
            await broker.stop()
    finally:
        await _cleanup(options.url, exchange_name, queue_name)
    return Result(options.count / published, options.count / consumed)


def _faststream() -> Any | None:
    try:
        return importlib.import_module("faststream.rabbit")
    except ImportError:
        return None


async def measure(options: Options, rounds: int) -> dict[str, Result]:
    """The best round of each client (highest rate per phase), rounds interleaved."""
    rabbit = _faststream()
    runs: dict[str, list[Result]] = {"aio-pika": []}
    if rabbit is None:
        print(
            "FastStream is not installed: measuring aio-pika only (the module's docstring"
            " says how the comparison was run)",
            file=sys.stderr,
        )
    else:
        runs["faststream"] = []
    for _ in range(rounds):
        runs["aio-pika"].append(await aiopika_round(options))
        if rabbit is not None:
            runs["faststream"].append(await faststream_round(options, rabbit))
    return {
        client: Result(max(r.publish for r in results), max(r.consume for r in results))
        for client, results in runs.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.broker", description=__doc__)
    parser.add_argument("--url", default=DEFAULT_URL)
    parser.add_argument("--count", type=int, default=5_000)
    parser.add_argument("--batch", type=int, default=100, help="confirms awaited together")
    parser.add_argument("--prefetch", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    options = Options(args.url, args.count, args.batch, args.prefetch)
    best = asyncio.run(measure(options, args.rounds))
    print(
        f"{options.count} persistent messages, confirms awaited {options.batch} at a time,"
        f" prefetch {options.prefetch}, best of {args.rounds} (messages per second)"
    )
    print(f"{'client':<12} {'publish':>10} {'consume':>10}")
    for client, result in best.items():
        print(f"{client:<12} {result.publish:>10,.0f} {result.consume:>10,.0f}")
    if "faststream" in best:
        ours, theirs = best["aio-pika"], best["faststream"]
        print(
            f"aio-pika / FastStream: publish {ours.publish / theirs.publish:.2f}x,"
            f" consume {ours.consume / theirs.consume:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
