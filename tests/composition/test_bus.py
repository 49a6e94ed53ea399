"""Which bus a deployable gets: the topology says; building it connects to nothing."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from composition.app import _bus
from composition.settings import DeployableSettings
from shop.kernel.broker import RabbitBus
from shop.kernel.events import InProcessBus
from shop.kernel.topology import parse

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
