"""The control channel of a running ``python -m launcher up``: a unix socket.

``up`` listens on ``var/run/launcher-<topology>.sock`` (mode 0600 in a 0700 folder: only
its user can talk to it; no TCP port is opened). One request per connection, one JSON
object per line each way::

    -> {"command": "restart", "target": "inventory"}
    <- {"ok": true, "message": "restarted inventory", "processes": [{...}, ...]}

Commands: ``status``, ``start <target>``, ``stop <target>``, ``restart <target>`` (a
target is a service, one replica such as ``catalog-1``, a worker such as ``catalog-worker``,
or ``gateway``) and ``down`` (stop everything and end ``up``). ``start`` and ``restart``
answer once the processes are ready, or with ``"ok": false`` and the error (which names the
process and shows its log's end).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from launcher.core import Launcher, LauncherError

RUN_DIR = Path("var/run")
CLIENT_TIMEOUT_SECONDS = 300.0
MAX_REQUEST_BYTES = 4096
# sun_path holds 108 bytes on Linux, 104 on macOS.
MAX_SOCKET_PATH = 100

__all__ = ["ControlError", "ControlServer", "request", "socket_path"]


class ControlError(RuntimeError):
    """The control socket is missing, refused the request or answered an error."""


def socket_path(data_name: str, run_dir: Path = RUN_DIR) -> Path:
    """Where ``up`` listens: ``var/run/launcher-<data>.sock`` (data: ``--data``, by default
    the topology's name)."""
    return run_dir / f"launcher-{data_name}.sock"


def running(data_name: str, run_dir: Path = RUN_DIR) -> Path | None:
    """The control socket of the ``up`` that runs on this data name, if one answers."""
    path = socket_path(data_name, run_dir)
    return path if path.exists() and _answers(path) else None


def _processes(launcher: Launcher) -> list[dict[str, Any]]:
    return [{**asdict(info), "log_file": str(info.log_file)} for info in launcher.processes()]


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        raw = self.rfile.readline(MAX_REQUEST_BYTES)
        try:
            message = json.loads(raw)
            command = str(message["command"])
            target = message.get("target")
            reply = self.server.control.dispatch(command, None if target is None else str(target))
        except (ValueError, KeyError, TypeError) as exc:
            reply = {"ok": False, "message": f"bad request: {exc}"}
        self.wfile.write(json.dumps(reply).encode() + b"\n")


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    control: ControlServer


class ControlServer:
    """Serves the control socket of one launcher in a background thread.

    ``on_down`` is called (from the server's thread) when a client asks for ``down``.
    """

    def __init__(self, launcher: Launcher, path: Path, *, on_down: Callable[[], None]) -> None:
        self.launcher = launcher
        self.path = path.resolve()
        self.on_down = on_down
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH:
            raise ControlError(
                f"the control socket path is too long for a unix socket: {self.path};"
                " pass a shorter one with --socket"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.parent.chmod(0o700)
        if self.path.exists():
            if _answers(self.path):
                raise ControlError(
                    f"another launcher already runs {path.stem.removeprefix('launcher-')}"
                    f" (it answers on {self.path}); stop it first (`python -m launcher down`)"
                )
            self.path.unlink()  # left by a launcher that did not exit cleanly
        old_umask = os.umask(0o177)
        try:
            self._server = _Server(str(self.path), _Handler)
        finally:
            os.umask(old_umask)
        self._server.control = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="launcher-control", daemon=True
        )

    def start(self) -> None:
        """Begin answering requests."""
        self._thread.start()

    def close(self) -> None:
        """Stop answering and remove the socket file."""
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def dispatch(self, command: str, target: str | None) -> dict[str, Any]:
        """Run one command against the launcher; the reply sent back to the client."""
        actions: dict[str, Callable[[str], None]] = {
            "start": self.launcher.start,
            "stop": self.launcher.stop,
            "restart": self.launcher.restart,
        }
        try:
            if command == "status":
                message = (
                    f"{self.launcher.topology.name}: {len(self.launcher.processes())} processes"
                )
            elif command == "down":
                self.on_down()
                message = "stopping every process"
            elif command in actions:
                if not target:
                    return {"ok": False, "message": f"{command} needs a service name"}
                actions[command](target)
                message = f"{command}{'ped' if command == 'stop' else 'ed'} {target}"
            else:
                return {"ok": False, "message": f"unknown command {command!r}"}
        except LauncherError as exc:
            return {"ok": False, "message": str(exc), "processes": _processes(self.launcher)}
        return {"ok": True, "message": message, "processes": _processes(self.launcher)}


def _answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def request(
    path: Path, command: str, target: str | None = None, *, timeout: float = CLIENT_TIMEOUT_SECONDS
) -> dict[str, Any]:
    """Send one command to the launcher listening on ``path``; its JSON reply."""
    body = {"command": command} if target is None else {"command": command, "target": target}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ControlError(
                f"no launcher answers on {path} ({exc.strerror}): is `python -m launcher up`"
                " running for this topology?"
            ) from exc
        sock.sendall(json.dumps(body).encode() + b"\n")
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError as exc:
            raise ControlError(f"the launcher did not answer within {timeout:g} s") from exc
    try:
        reply: dict[str, Any] = json.loads(b"".join(chunks))
    except ValueError as exc:
        raise ControlError(f"unreadable answer from the launcher: {exc}") from exc
    return reply
