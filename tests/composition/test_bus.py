"""Which bus a deployable gets: the topology says; building it connects to nothing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest
from pydantic import SecretStr, ValidationError

import composition.app
from composition.app import _bus
from composition.settings import DeployableSettings
from monolith.app import create_app
from shop.kernel.broker import RabbitBus
from shop.kernel.events import Deliver, InProcessBus
from shop.kernel.topology import parse
from tests import support

SERVICES = {"catalog": {"contexts": ["catalog"], "port": 8101}}


def test_the_monolith_and_an_in_process_topology_get_the_in_process_bus() -> None:
    settings = DeployableSettings()
    assert isinstance(_bus(settings, None), InProcessBus)
    topology = parse({"name": "t", "services": SERVICES})
    assert isinstance(_bus(settings, topology), InProcessBus)


def test_a_rabbitmq_topology_gets_the_broker_at_the_settings_url() -> None:
    url = "amqp://shop:secret@broker.internal:5672/shop"
    settings = DeployableSettings(broker_url=SecretStr(url))
    bus = _bus(settings, parse({"name": "t", "bus": "rabbitmq", "services": SERVICES}))
    assert isinstance(bus, RabbitBus)
    assert bus.url == url
    assert bus.exchange_name("inventory") == "shop.inventory"
    assert bus.queue_name("cart") == "shop.cart"
    assert bus.dead_queue_name("cart") == "shop.cart.dead"


def test_the_bus_prefix_names_every_exchange_and_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    """Deployments sharing one broker keep apart with ``SHOP_BUS_PREFIX``."""
    monkeypatch.setenv("SHOP_BUS_PREFIX", "staging-2")
    bus = _bus(DeployableSettings(), parse({"name": "t", "bus": "rabbitmq", "services": SERVICES}))
    assert isinstance(bus, RabbitBus)
    assert bus.exchange_name("inventory") == "staging-2.inventory"
    assert bus.queue_name("cart") == "staging-2.cart"
    assert bus.dead_queue_name("cart") == "staging-2.cart.dead"
    assert bus.dead_letter_exchange == "staging-2.dead-letter"


@pytest.mark.parametrize("prefix", ["shop-services", "shop-my.run_2", "bench-0123abcd"])
def test_a_bus_prefix_may_hold_the_launchers_data_names(prefix: str) -> None:
    assert DeployableSettings(bus_prefix=prefix).bus_prefix == prefix


@pytest.mark.parametrize("prefix", ["", "amq", "amq.shop", ".shop", "a b", "x" * 201])
def test_a_bus_prefix_that_would_make_odd_names_is_refused(prefix: str) -> None:
    with pytest.raises(ValidationError):
        DeployableSettings(bus_prefix=prefix)


class FlakyBus(InProcessBus):
    """The in-process bus whose second subscription fails the first time."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.changed = anyio.Event()

    async def subscribe(self, consumer: str, types: Sequence[str], deliver: Deliver) -> None:
        self.calls.append(consumer)
        self.changed.set()
        if len(self.calls) == 2:
            raise ConnectionError("the broker went away between two subscriptions")
        await super().subscribe(consumer, types, deliver)


@pytest.mark.anyio
async def test_a_subscription_tried_again_does_not_subscribe_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two consuming contexts in one process, the bus failing between their subscriptions:
    the retry subscribes the one left, not the one in place again (a second consumer on
    its queue would split its order)."""
    monkeypatch.setattr(composition.app, "EVENTS_RETRY_SECONDS", 0.01)
    bus = FlakyBus()
    async with support.scratch_database(tmp_path) as url:
        await support.migrate(url, None)
        app = create_app(support.monolith_settings(url), bus=bus)
        async with app.router.lifespan_context(app):
            with anyio.fail_after(10):
                while len(bus.calls) < 3:
                    await bus.changed.wait()
                    bus.changed = anyio.Event()
    first, failed, again = bus.calls
    assert failed == again != first, bus.calls
