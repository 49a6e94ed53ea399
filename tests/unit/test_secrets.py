"""Secret files: created once and private, shared by replicas, refused when others can read."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from shop.kernel.secrets import InsecureSecretFile, shared_secret


def test_a_missing_secret_is_created_private_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "secret.key"

    first = shared_secret(path)

    assert len(first) == 64
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert shared_secret(path) == first
    assert list(path.parent.iterdir()) == [path], "no temporary file is left behind"


def test_replicas_starting_together_agree_on_one_secret(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    seen: list[bytes] = []
    start = threading.Barrier(8)

    def replica() -> None:
        start.wait()
        seen.append(shared_secret(path))

    threads = [threading.Thread(target=replica) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert len(seen) == 8
    assert len(set(seen)) == 1


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_secret_others_may_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "secret.key"
    path.write_text("s" * 64)
    os.chmod(path, mode)

    with pytest.raises(InsecureSecretFile, match="chmod 600"):
        shared_secret(path)


def test_a_short_secret_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    path.write_text("short")
    os.chmod(path, 0o600)

    with pytest.raises(InsecureSecretFile, match="fewer than 32"):
        shared_secret(path)
