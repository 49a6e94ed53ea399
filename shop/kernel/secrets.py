"""Secrets kept in files: made once, readable by their owner only, shared by replicas."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path


class InsecureSecretFile(RuntimeError):
    """A secret file that others than its owner may read."""


def shared_secret(path: Path) -> bytes:
    """The secret in ``path``, created first (32 random bytes, hex, mode 0600) if missing.

    Replicas that start together agree on one secret: it is written to a private temporary
    file and linked into place, so a reader never sees a half-written file and the losers
    of the race read the winner's. A file that the group or others may read is refused.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        finally:
            temporary.unlink()
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InsecureSecretFile(
            f"{path} may be read by others (mode {stat.filemode(mode)}): chmod 600 {path}"
        )
    value = path.read_text().strip()
    if len(value) < 32:
        raise InsecureSecretFile(f"{path} holds fewer than 32 characters: not a secret")
    return value.encode()
