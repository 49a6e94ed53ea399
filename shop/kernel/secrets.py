"""Secrets kept in files: made once and readable by their owner only, shared by replicas.

One place for what every key file needs (the JWT signing keys, the orders' fingerprint
key): a private folder, files created 0600 whatever the umask, and a refusal to read a
file that its group or others may access.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path


class InsecureSecretFile(RuntimeError):
    """A secret file that others than its owner may access, or that holds no secret."""


def private_folder(folder: Path) -> None:
    """Create ``folder`` (and its parents) if missing; the folder itself 0700 when made here."""
    if folder.is_dir():
        return
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)  # mkdir's mode goes through the umask


def write_private(path: Path, text: str) -> None:
    """Write a new file readable by its owner only (0600 whatever the umask)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o600)
        out.write(text)


def read_private(path: Path, *, what: str = "the secret") -> str:
    """The text of ``path``; a file that its group or others may access is refused, loudly."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise InsecureSecretFile(
            f"{what} {path} is accessible to its group or others (mode {mode:04o}): a secret"
            f" must be readable by its owner only; run `chmod 600 {path}`"
        )
    return path.read_text(encoding="ascii")


def shared_secret(path: Path) -> bytes:
    """The secret in ``path``, created first (32 random bytes, hex) if missing.

    Replicas that start together agree on one secret: it is written to a private temporary
    file and linked into place, so a reader never sees a half-written file and the losers
    of the race read the winner's.
    """
    if not path.exists():
        private_folder(path.parent)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        write_private(temporary, secrets.token_hex(32))
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass  # another process made it first: use theirs
        finally:
            temporary.unlink()
    value = read_private(path).strip()
    if len(value) < 32:
        raise InsecureSecretFile(f"{path} holds fewer than 32 characters: not a secret")
    return value.encode()
