"""Run one service of a topology (settings from the environment, as in production).

    python -m services migrate <service>                 its contexts' migrations, DATABASE_URL
    python -m services serve <service> [--host 127.0.0.1] [--port P] [--workers 1]
    python -m services worker <service> [--host 127.0.0.1] [--port P]

The topology (``SHOP_TOPOLOGY``, default topologies/services.toml) says which app a service
runs, which contexts it serves and its port; ``--port`` overrides it (replicas, tests).
``worker`` runs the service's event consumers in a process of their own, when its topology
entry says ``consumers = "worker"``; it listens on the port after its replicas' (``port +
9``) for its health checks only.
"""

from __future__ import annotations

import argparse
import os
import sys

from services.settings import ServiceSettings
from shop.identity.settings import IdentitySettings
from shop.kernel import process
from shop.kernel.migrations import upgrade
from shop.kernel.topology import TopologyError, load


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    migrate = sub.add_parser("migrate", help="apply the service's migration streams")
    migrate.add_argument("service")
    serve = sub.add_parser("serve", help="serve the service with uvicorn")
    serve.add_argument("service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--workers", type=int, default=1)
    worker = sub.add_parser("worker", help="run the service's event consumers (its worker)")
    worker.add_argument("service")
    worker.add_argument("--host", default="127.0.0.1")
    worker.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)

    try:
        topology = load()
        spec = topology.services[args.service]
    except TopologyError as exc:
        sys.exit(str(exc))
    except KeyError:
        sys.exit(f"{topology.name} has no service {args.service!r}: {sorted(topology.services)}")

    if args.command == "migrate":
        url = os.environ.get("DATABASE_URL") or f"sqlite+aiosqlite:///var/services/{spec.name}.db"
        if url.startswith("sqlite") and "var/services/" in url:
            os.makedirs("var/services", exist_ok=True)
        upgrade(url, list(spec.contexts))
        print(f"{spec.name}: migrated {', '.join(spec.contexts)}")
        return

    if args.command == "worker":
        if spec.worker_port is None:
            sys.exit(
                f"{topology.name}: {spec.name} has no worker (its entry says consumers ="
                ' "in-service"): its own processes consume its events'
            )
        app, port, workers = "services.app:create_worker", spec.worker_port, 1
    else:
        if "identity" in spec.contexts:
            try:
                IdentitySettings().check_listener(args.host)
            except ValueError as exc:
                sys.exit(str(exc))
        app, port, workers = spec.app, spec.port, args.workers
    process.serve(
        app,
        # The app reads which service of the topology it is from there (its workers too).
        environment={"SHOP_SERVICE": spec.name},
        host=args.host,
        port=args.port or port,
        workers=workers,
        # SERVICE_* settings: every process here is a service behind the gateway (a kata
        # step's monolith included).
        limits=ServiceSettings().server_limits(),
        # Behind the gateway the caller's address comes with the edge token, never from
        # X-Forwarded-For (shop.kernel.security.client_address).
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
