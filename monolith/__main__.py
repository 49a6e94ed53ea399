"""The monolith's command line (settings come from the environment, like the server's).

python -m monolith keygen          create the JWT signing key if missing
python -m monolith rotate-key      sign with a new key; the current one stays published
python -m monolith retire-keys [--kid KID]   unpublish keys set aside a token lifetime ago
                                   (or the one named, at once)
python -m monolith migrate         apply every context's migrations
python -m monolith seed [--if-empty]
python -m monolith create-admin --email EMAIL [--promote]
                                   (password from SHOP_ADMIN_PASSWORD or a prompt)
python -m monolith serve [--host 127.0.0.1] [--port 8000] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

import httpx2

from loadtests.seed import SeedError, SeedPlan, is_seeded, seed
from monolith.app import create_app, served_contexts
from monolith.settings import MonolithSettings
from shop.identity import service
from shop.identity.dependencies import IdentityRuntime
from shop.identity.exceptions import EmailTaken
from shop.identity.settings import IdentitySettings
from shop.identity.tokens import retire_key_files, rotate_key_file, write_key_file
from shop.kernel import process
from shop.kernel.db import Database
from shop.kernel.migrations import CONTEXTS, upgrade
from shop.kernel.security import Role


def _keygen(settings: MonolithSettings) -> None:
    path = settings.contexts(IdentitySettings).signing_key_file
    if write_key_file(path):
        print(f"created signing key {path}")
    else:
        print(f"signing key {path} exists")


def _rotate_key(settings: MonolithSettings) -> None:
    path = settings.contexts(IdentitySettings).signing_key_file
    if not path.is_file():
        sys.exit(f"no signing key at {path} to rotate: run keygen first")
    try:
        old, new = rotate_key_file(path)
    except RuntimeError as exc:
        sys.exit(str(exc))
    ttl = settings.contexts(IdentitySettings).access_token_ttl_seconds
    print(f"new signing key {new.kid} in {path}; new tokens are signed with it")
    print(
        f"the previous key {old.kid} stays published for its tokens' lifetime ({ttl} s), then"
        " leaves the JWKS by itself; `retire-keys` deletes it then, `retire-keys --kid"
        f" {old.kid}` retires it at once"
    )


def _retire_keys(settings: MonolithSettings, kid: str | None) -> None:
    path = settings.contexts(IdentitySettings).signing_key_file
    retired = retire_key_files(
        path, ttl_seconds=settings.contexts(IdentitySettings).access_token_ttl_seconds, kid=kid
    )
    if kid is not None and kid not in retired:
        sys.exit(f"no set-aside key {kid} beside {path} (the signing key itself cannot be retired)")
    print(f"retired {', '.join(retired)}" if retired else "no key to retire yet")


def _migrate(settings: MonolithSettings) -> None:
    upgrade(settings.database_url, CONTEXTS)
    print(f"migrated {', '.join(CONTEXTS)}")


async def _seed(settings: MonolithSettings, plan: SeedPlan, if_empty: bool) -> None:
    """Seed through the API of an in-process app: the same path as a remote seed."""
    email = settings.contexts(IdentitySettings).bootstrap_admin_email
    password = settings.contexts(IdentitySettings).bootstrap_admin_password
    if not email or password is None:
        sys.exit("seed needs IDENTITY_BOOTSTRAP_ADMIN_EMAIL and IDENTITY_BOOTSTRAP_ADMIN_PASSWORD")
    app = create_app(settings.model_copy(update={"recover_checkouts": False}))
    async with (
        app.router.lifespan_context(app),
        httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app), base_url="http://monolith", timeout=60
        ) as client,
    ):
        if if_empty and await is_seeded(client, plan):
            print("seed: the catalog is already seeded")
            return
        await seed(client, admin_email=email, admin_password=password.get_secret_value(), plan=plan)


async def _create_admin(
    settings: MonolithSettings, email: str, password: str, *, promote: bool
) -> None:
    """Create an admin; with ``promote``, make an existing account one and set its password."""
    identity = IdentityRuntime.from_settings(settings.contexts(IdentitySettings))
    db = Database.connect(settings.database_url)
    try:
        async with db.writer() as session, session.begin():
            if promote:
                _, created = await service.promote_admin(
                    session, passwords=identity.passwords, email=email, password=password
                )
            else:
                await service.create_user(
                    session,
                    passwords=identity.passwords,
                    email=email,
                    password=password,
                    name="Admin",
                    role=Role.ADMIN,
                )
                created = True
    except EmailTaken:
        sys.exit(
            f"{email} is already registered: pass --promote to make that account an admin"
            " and set its password to this one"
        )
    finally:
        await db.dispose()
    print(f"{'created' if created else 'promoted'} admin {email}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m monolith", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("keygen", help="create the JWT signing key file if it is missing")
    sub.add_parser("rotate-key", help="sign with a new key, keep the current one published")
    retire = sub.add_parser("retire-keys", help="unpublish keys rotated out a token lifetime ago")
    retire.add_argument("--kid", help="retire this key at once (a compromised key)")
    sub.add_parser("migrate", help="apply every context's migrations to DATABASE_URL")
    seed_cmd = sub.add_parser("seed", help="load the deterministic demo catalog")
    seed_cmd.add_argument("--if-empty", action="store_true")
    seed_cmd.add_argument("--products", type=int, default=SeedPlan.products)
    seed_cmd.add_argument("--categories", type=int, default=SeedPlan.categories)
    seed_cmd.add_argument("--stock", type=int, default=SeedPlan.stock)
    admin = sub.add_parser("create-admin", help="create an admin account (or promote one)")
    admin.add_argument("--email", required=True)
    admin.add_argument(
        "--promote",
        action="store_true",
        help="if the email is registered, make that account an admin and set its password",
    )
    serve = sub.add_parser("serve", help="serve the shop with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)

    settings = MonolithSettings()
    if args.command == "keygen":
        _keygen(settings)
    elif args.command == "rotate-key":
        _rotate_key(settings)
    elif args.command == "retire-keys":
        _retire_keys(settings, args.kid)
    elif args.command == "migrate":
        _migrate(settings)
    elif args.command == "seed":
        plan = SeedPlan(categories=args.categories, products=args.products, stock=args.stock)
        try:
            asyncio.run(_seed(settings, plan, args.if_empty))
        except SeedError as exc:
            sys.exit(f"seed failed: {exc}")
    elif args.command == "create-admin":
        password = os.environ.get("SHOP_ADMIN_PASSWORD") or getpass.getpass("Password: ")
        if len(password) < 8:
            sys.exit("the password needs at least 8 characters")
        asyncio.run(_create_admin(settings, args.email, password, promote=args.promote))
    else:
        if "identity" in served_contexts(settings):
            try:
                settings.contexts(IdentitySettings).check_listener(args.host)
            except ValueError as exc:
                sys.exit(str(exc))
        process.serve(
            "monolith.app:create_app",
            host=args.host,
            port=args.port,
            workers=args.workers,
            limits=settings.server_limits(),
            # X-Forwarded-For is the caller's to write: the address sign-in limits count is the
            # connection's peer, or the gateway's word for it (shop.kernel.security).
            proxy_headers=False,
        )


if __name__ == "__main__":
    main()
