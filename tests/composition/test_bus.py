"""Which bus a deployable gets: the topology says; building it connects to nothing."""

from __future__ import annotations

from pydantic import SecretStr

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
