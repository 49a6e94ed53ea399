"""Run a topology as processes on 127.0.0.1, and control a running one.

python -m launcher up [--topology topologies/services.toml] [--replicas catalog=2]
                      [--port 8000] [--port-offset 0] [--database sqlite|postgres|URL]
                      [--data NAME] [--no-seed]
    migrate each service's own database, start every service and the gateway, wait until
    every /readyz answers, seed through the gateway (or, in a topology without a gateway,
    through the service that serves identity, catalog and inventory), print the URLs;
    Ctrl-C (or SIGTERM, or `python -m launcher down`) stops every process it started.
    --data NAME (default: the topology's name) names where the run keeps its files and
    databases: var/NAME/<service>.db (or PostgreSQL databases shopkata_NAME_<service>),
    var/NAME/logs/ and the control socket var/run/launcher-NAME.sock. Several topologies
    run on the same data with the same NAME: every kata step uses --data kata.

python -m launcher status | down
python -m launcher start | stop | restart <service | service-i | gateway>
    act on the running `up` through its control socket, var/run/launcher-<data>.sock
    (found on its own when one `up` runs; otherwise pass --data, --topology or --socket).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from types import FrameType

from launcher import databases, topologies
from launcher.control import RUN_DIR, ControlError, ControlServer, request, socket_path
from launcher.core import DEFAULT_GATEWAY_APP, Launcher, LauncherError
from launcher.databases import DatabaseSetupError, check_data_name
from shop.kernel.topology import DEFAULT_TOPOLOGY, Topology, TopologyError

DEFAULT_KEY_FILE = "var/keys/jwt-ed25519.pem"
BUS_PREFIX_ENV = "SHOP_BUS_PREFIX"
"""Where a deployment's names on the broker begin (composition.settings.bus_prefix)."""


class _Shutdown(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C does."""


def _say(message: str) -> None:
    print(message, flush=True)


def _ensure_signing_key(env: dict[str, str]) -> None:
    """Create the JWT signing key with ``python -m monolith keygen`` when it is missing."""
    if env.get("IDENTITY_SIGNING_KEY_PEM"):
        return
    key_file = Path(env.get("IDENTITY_SIGNING_KEY_FILE") or DEFAULT_KEY_FILE)
    if key_file.exists():
        return
    subprocess.run([sys.executable, "-m", "monolith", "keygen"], env=env, check=True, timeout=60)


def _database_urls(topology: Topology, choice: str, data: str) -> tuple[dict[str, str], str]:
    urls = databases.service_urls(data, topology.services, choice)
    server = databases.server_url(choice)
    if server is not None:
        created = databases.ensure_postgres_databases(server, urls)
        if created:
            _say(f"created PostgreSQL databases {', '.join(created)}")
    return urls, databases.describe(data, choice)


def _resolve(args: argparse.Namespace) -> Topology:
    """The topology file with replicas and ports applied.

    ``--port`` is where clients connect: the gateway's port, or in a topology without a
    gateway the port of its one service (the monolith of the kata's step 0).
    """
    topology = topologies.resolve(args.topology, replicas=args.replicas, offset=args.port_offset)
    if args.port is None:
        return topology
    if topology.gateway_port is not None:
        return topologies.relocate(topology, gateway_port=args.port)
    if len(topology.services) == 1:
        (spec,) = topology.services.values()
        return topologies.relocate(topology, offset=args.port - spec.port)
    raise TopologyError(
        f"{topology.name} has no gateway and {len(topology.services)} services: --port has"
        " nothing to move; use --port-offset"
    )


def _summary(launcher: Launcher, database_text: str, control: Path) -> None:
    rows: list[tuple[str, str, str]] = []
    processes = launcher.processes()
    by_url = {info.url: info for info in processes}
    entry = launcher.entry_url
    for group, urls in launcher.urls.items():
        for index, url in enumerate(urls):
            rows.append((group if index == 0 else "", url, f"pid {by_url[url].pid}"))
            if url == entry:
                rows.append(("docs", f"{url}/docs", ""))
        # Its consumers' worker: no requests, only its health checks.
        rows += [
            ("", f"{info.url}/readyz", f"pid {info.pid} ({info.name})")
            for info in processes
            if info.service == group and info.url not in urls
        ]
    admin = os.environ.get("IDENTITY_BOOTSTRAP_ADMIN_EMAIL")
    password = os.environ.get("IDENTITY_BOOTSTRAP_ADMIN_PASSWORD")
    _say("")
    _say(f"shopkata {launcher.topology.name!r} is up on 127.0.0.1:")
    for label, url, pid_text in rows:
        _say(f"  {label:<12} {url:<28} {pid_text}")
    _say(
        f"  {'admin':<12} {admin} / {password}"
        if admin
        else "  admin        (none: set IDENTITY_BOOTSTRAP_ADMIN_EMAIL/_PASSWORD)"
    )
    _say(f"  {'databases':<12} {database_text}")
    _say(f"  {'logs':<12} {launcher.log_dir}/<process>.log")
    _say(f"  {'control':<12} python -m launcher status|stop|start|restart <service>  ({control})")
    _say("Ctrl-C stops every process.")


def _up(args: argparse.Namespace) -> int:
    topology = _resolve(args)
    try:
        data = check_data_name(args.data or topology.name)
    except ValueError as exc:
        hint = "" if args.data else f" (the topology's name {topology.name!r}); pass --data NAME"
        raise ValueError(f"{exc}{hint}") from exc
    run_dir = databases.data_dir(data)
    env = dict(os.environ)
    _ensure_signing_key(env)
    # Runs on other data keep apart on a shared broker: each names its own exchanges and
    # queues (shop-services.catalog, shop-kata.catalog), as it has its own databases.
    env.setdefault(BUS_PREFIX_ENV, f"shop-{data}")
    urls, database_text = _database_urls(topology, args.database, data)
    launcher = Launcher(
        topology,
        databases=urls,
        run_dir=run_dir,
        env=env,
        gateway_app=args.gateway_app,
        progress=_say,
    )
    down = threading.Event()
    where = Path(args.socket) if args.socket else socket_path(data)
    control = ControlServer(launcher, where, on_down=down.set)

    def terminate(signum: int, _frame: FrameType | None) -> None:
        raise _Shutdown(signal.Signals(signum).name)

    def patient(_signum: int, _frame: FrameType | None) -> None:
        _say("already stopping; every wait is bounded")

    # Ctrl-C works even when the shell started us with SIGINT ignored (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, terminate)
    code = 0
    try:
        control.start()
        launcher.start_all()
        if not args.no_seed:
            launcher.seed()
        _summary(launcher, database_text, control.path)
        while not down.wait(0.5):
            for info in launcher.exited():
                _say(
                    f"! {info.name} (pid {info.pid}) {info.state} on its own;"
                    f" `python -m launcher start {info.service}` starts it again;"
                    f" log: {info.log_file}"
                )
    except (KeyboardInterrupt, _Shutdown):
        _say("")
    except LauncherError as exc:
        _say(f"error: {exc}")
        code = 1
    finally:
        signal.signal(signal.SIGINT, patient)
        signal.signal(signal.SIGTERM, patient)
        _say("stopping every process")
        control.close()
        launcher.stop_all()
        left = [pid for pids in launcher.pids.values() for pid in pids]
        _say(f"stopped; still running: {left}" if left else "stopped")
    return code


def _find_socket(args: argparse.Namespace) -> Path:
    if args.socket:
        return Path(args.socket)
    if args.data:
        return socket_path(check_data_name(args.data))
    if args.topology:
        try:
            data = tomllib.loads(Path(args.topology).read_text(encoding="utf-8"))
            return socket_path(str(data["name"]))
        except (OSError, tomllib.TOMLDecodeError, KeyError) as exc:
            raise ControlError(
                f"cannot read the topology name from {args.topology}: {exc}"
            ) from exc
    found = sorted(RUN_DIR.glob("launcher-*.sock"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise ControlError(f"no launcher is running (no {RUN_DIR}/launcher-*.sock)")
    raise ControlError(
        f"several launchers run ({', '.join(map(str, found))}); pass --topology or --socket"
    )


def _control(args: argparse.Namespace) -> int:
    reply = request(_find_socket(args), args.command, getattr(args, "target", None))
    _say(str(reply.get("message", "")))
    if args.command == "status" or not reply.get("ok"):
        for proc in reply.get("processes", []):
            _say(f"  {proc['name']:<14} {proc['url']:<24} pid {proc['pid']!s:<8} {proc['state']}")
    return 0 if reply.get("ok") else 1


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m launcher",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start a topology in the foreground; Ctrl-C stops it")
    up.add_argument(
        "--topology",
        default=None,
        help=f"topology file (default: SHOP_TOPOLOGY or {DEFAULT_TOPOLOGY})",
    )
    up.add_argument(
        "--replicas",
        default="",
        help="replica counts on top of the file (and SHOP_REPLICAS), e.g. catalog=2,orders=2",
    )
    up.add_argument(
        "--port",
        type=int,
        default=None,
        help="where clients connect: the gateway's port, or the one service's in a topology"
        " without a gateway (default: the file's)",
    )
    up.add_argument(
        "--port-offset", type=int, default=0, help="add this to every port of the topology"
    )
    up.add_argument(
        "--database",
        default=os.environ.get("SHOP_DATABASE", "sqlite"),
        help="sqlite (default), postgres, or a postgresql:// server URL (env SHOP_DATABASE)",
    )
    up.add_argument(
        "--data",
        default=None,
        metavar="NAME",
        help="where the run's databases, logs and control socket are: var/NAME/<service>.db"
        " or shopkata_NAME_<service>, var/run/launcher-NAME.sock (default: the topology's"
        " name; every kata step uses 'kata', so they share the same data)",
    )
    up.add_argument("--no-seed", action="store_true", help="do not load the demo catalog")
    up.add_argument(
        "--socket",
        default=None,
        help="control socket (default var/run/launcher-<data>.sock)",
    )
    up.add_argument(
        "--gateway-app",
        default=DEFAULT_GATEWAY_APP,
        help=f"uvicorn factory of the gateway (default {DEFAULT_GATEWAY_APP})",
    )
    for name, text in (
        ("status", "list the processes of the running launcher"),
        ("down", "stop every process and end the running launcher"),
        ("start", "start a service (or service-i, or gateway) and wait until it is ready"),
        ("stop", "stop a service (or service-i, or gateway); the others keep running"),
        ("restart", "stop a service (or service-i, or gateway), start it, wait until ready"),
    ):
        command = sub.add_parser(name, help=text)
        if name in {"start", "stop", "restart"}:
            command.add_argument(
                "target",
                help="service name, replica (catalog-1), worker (catalog-worker) or gateway",
            )
        command.add_argument("--topology", default=None, help="the topology `up` runs")
        command.add_argument("--data", default=None, help="the --data NAME `up` was given")
        command.add_argument("--socket", default=None, help="the control socket of `up`")
    args = parser.parse_args(argv)
    try:
        return _up(args) if args.command == "up" else _control(args)
    except (LauncherError, ControlError, TopologyError, DatabaseSetupError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
