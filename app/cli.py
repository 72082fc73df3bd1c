"""`plumbline serve|migrate|keys ...`: the operator's entry points."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from app import migrate
from app.db import make_engine, make_sessionmaker
from app.models.project import Role
from app.services import keys
from app.settings import Settings


def _serve(settings: Settings, _args: argparse.Namespace) -> int:
    import uvicorn

    from app.main import create_app

    migrate.upgrade(settings.database_url)
    if settings.is_sqlite and settings.print_admin_key:
        _print_bootstrap_key(settings)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=20,
        access_log=False,
    )
    return 0


def _print_bootstrap_key(settings: Settings) -> None:
    """The embedded default is for trying things out: hand the newcomer a working admin key.
    The previous bootstrap key is revoked, so only the latest printed key works."""
    sessions = make_sessionmaker(make_engine(settings))
    with sessions() as session:
        project = keys.get_or_create_project(session, settings.bootstrap_project)
        keys.revoke_named(session, project.id, "bootstrap")
        _key, plaintext = keys.create_key(session, project.id, Role.admin, "bootstrap")
        session.commit()
    print(f"Admin API key for project '{settings.bootstrap_project}' (shown once):", flush=True)
    print(plaintext, flush=True)


def _migrate(settings: Settings, _args: argparse.Namespace) -> int:
    migrate.upgrade(settings.database_url)
    print("database is at the latest schema")
    return 0


def _keys(settings: Settings, args: argparse.Namespace) -> int:
    sessions = make_sessionmaker(make_engine(settings))
    with sessions() as session:
        project = keys.get_or_create_project(session, args.project)
        if args.keys_command == "create":
            key, plaintext = keys.create_key(session, project.id, Role(args.role), args.name)
            session.commit()
            print(f"created key {key.id} ({key.role.value}) for project '{project.name}'")
            print(plaintext)
        elif args.keys_command == "revoke":
            key = keys.revoke_key(session, project.id, args.id)
            session.commit()
            print(f"revoked key {key.id}")
        else:
            rows, _ = keys.list_keys(session, project.id, None, 1000)
            for row in rows:
                state = "revoked" if row.revoked_at else "active"
                print(f"{row.id}\t{row.prefix}\t{row.role.value}\t{state}\t{row.name}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="plumbline", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="migrate, then serve on PLUMBLINE_HOST:PLUMBLINE_PORT")
    commands.add_parser("migrate", help="apply database migrations")
    keys_parser = commands.add_parser("keys", help="manage API keys")
    keys_commands = keys_parser.add_subparsers(dest="keys_command", required=True)
    create = keys_commands.add_parser("create", help="create a key; prints it on the last line")
    create.add_argument("--project", required=True)
    create.add_argument("--role", choices=[r.value for r in Role], default="read")
    create.add_argument("--name", default="cli")
    listing = keys_commands.add_parser("list")
    listing.add_argument("--project", required=True)
    revoke = keys_commands.add_parser("revoke")
    revoke.add_argument("--project", required=True)
    revoke.add_argument("id", type=int)
    return parser


HANDLERS = {"serve": _serve, "migrate": _migrate, "keys": _keys}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return HANDLERS[args.command](Settings(), args)


if __name__ == "__main__":
    sys.exit(main())
