"""The gateway's command line (settings come from the environment: ``GATEWAY_*``).

python -m gateway serve [--host 127.0.0.1] [--port PORT] [--workers 1] [--access-log]

The port defaults to the topology's ``[gateway] port``.
"""

from __future__ import annotations

import argparse

from gateway.settings import GatewaySettings
from shop.kernel import process
from shop.kernel.topology import load


def main(argv: list[str] | None = None) -> None:
    """Parse the command line and run it."""
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the gateway with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument(
        "--access-log",
        action="store_true",
        # Off by default: every service logs its requests with the forwarded X-Request-ID,
        # and a second line per request at the edge costs measurable CPU on the hot path.
        help="log every request at the gateway too",
    )
    args = parser.parse_args(argv)

    settings = GatewaySettings()
    port = args.port or load(settings.topology).gateway_port or 8000
    process.serve(
        # The shop's gateway: this package's app with the table the contexts declare.
        "composition.gateway:create_app",
        host=args.host,
        port=port,
        workers=args.workers,
        limits=settings.server_limits(),
        access_log=args.access_log,
        # The gateway is the edge: X-Forwarded-* from a caller are not to be trusted, and the
        # gateway writes its own for the services.
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
