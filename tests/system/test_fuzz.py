"""Schema-driven fuzzing of the running monolith: every operation, every check, as an admin.

The settings live in ``schemathesis.toml`` (shared with anyone running ``st`` by hand); the
services get the same run through their gateway in ``test_services_contract.py``.
"""

from __future__ import annotations

from tests.system.conftest import LiveServer, assert_fuzzing_finds_nothing


def test_schemathesis_finds_nothing(live_monolith: LiveServer) -> None:
    assert_fuzzing_finds_nothing(live_monolith.base_url, [live_monolith.log_file])
