"""`plumbline serve|migrate|keys ...`: the operator's entry points."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Any

import httpx
import uvicorn

from app import demo
from app.core import migrate
from app.core.db import make_engine, make_sessionmaker, today_utc
from app.core.errors import Unprocessable
from app.core.jobs import daily_jobs_lock
from app.core.links import Links
from app.core.settings import Settings
from app.drift import job as drift_job
from app.ingest.retention import retention_cutoff
from app.keys import service as keys
from app.models.project import Role


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    """N worker processes (default: the machine's cores) on one port, each a whole service:
    API, pages, background loops and scheduler, sharing nothing but the database (claims,
    leases and job claims keep the background work exactly-once; docs/scale-out.md)."""
    migrate.upgrade(settings.database_url)
    if settings.is_sqlite and settings.print_admin_key:
        _print_bootstrap_key(settings)
    workers = args.workers or settings.workers or os.cpu_count() or 1
    uvicorn.run(
        # An import string, so each worker process builds its own app (from the same
        # environment this process read its settings from).
        "app.main:create_app",
        factory=True,
        workers=workers,
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
    serve = commands.add_parser(
        "serve", help="migrate, then serve on PLUMBLINE_HOST:PLUMBLINE_PORT"
    )
    serve.add_argument(
        "--workers",
        type=int,
        help="worker processes (default PLUMBLINE_WORKERS, else the machine's cores)",
    )
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
    drift_parser = commands.add_parser("drift", help="daily drift signals and alerts")
    drift_commands = drift_parser.add_subparsers(dest="drift_command", required=True)
    drift_run = drift_commands.add_parser("run", help="compute a day (default yesterday, UTC)")
    drift_run.add_argument("--date", type=date.fromisoformat, help="UTC day, YYYY-MM-DD")
    drift_run.add_argument("--backfill", type=int, default=1, help="days ending with --date")
    gate = commands.add_parser(
        "gate", help="gate a run against the champion's: exit 0 pass, 1 block, 3 inconclusive"
    )
    gate.add_argument("--candidate-run", type=int, required=True)
    gate.add_argument("--baseline-run", type=int, help="default: the champion's latest run")
    gate.add_argument("--url", default="http://127.0.0.1:8000", help="the Plumbline server")
    gate.add_argument("--api-key", default=os.environ.get("PLUMBLINE_API_KEY"))
    gate.add_argument("--all", action="store_true", help="also print unguarded cohorts")
    demo = commands.add_parser("demo", help="seed the demo project (support-bot, 45 days)")
    demo.add_argument("--if-empty", action="store_true", help="skip when any model exists")
    return parser


def _drift(settings: Settings, args: argparse.Namespace) -> int:
    """Computes signals and evaluates monitors for a day (default yesterday, UTC) or a run of
    days ending there, for every project; serialised with the scheduler by its lock."""

    day = args.date or today_utc() - timedelta(days=1)
    sessions = make_sessionmaker(make_engine(settings))
    try:
        drift_job.ended_day(day)
    except Unprocessable as exc:
        print(f"error: {exc.detail}", file=sys.stderr)
        return 2
    with daily_jobs_lock(sessions):
        results, failures = drift_job.run_all_projects(
            sessions,
            Links.of(settings),
            day,
            "cli",
            backfill=args.backfill,
            expired_before=retention_cutoff(settings),
        )
    for result in results:
        print(
            f"{result.day}\t{result.signals} signals\t{result.alerts_opened} alerts opened"
            f"\t{result.alerts_resolved} resolved"
        )
    for failure in failures:
        print(f"error: drift failed for {failure} (the other projects ran)", file=sys.stderr)
    return 1 if failures else 0


GATE_EXIT_CODES = {"pass": 0, "block": 1, "inconclusive": 3}


def _gate(_settings: Settings, args: argparse.Namespace) -> int:
    """CI's deploy gate over HTTP: prints a table of the guarded cohorts (and the ones that
    warn) with the rows each needs, the notes and reasons, and the verdict; the exit code is
    the verdict (2 for any error)."""
    if not args.api_key:
        print("error: --api-key (or PLUMBLINE_API_KEY) is required", file=sys.stderr)
        return 2
    body = {"candidate_run_id": args.candidate_run, "baseline_run_id": args.baseline_run}
    try:
        response = httpx.post(
            f"{args.url.rstrip('/')}/api/v1/gates",
            json=body,
            headers={"Authorization": f"Bearer {args.api_key}"},
            timeout=120,
        )
    except httpx.HTTPError as exc:
        print(f"error: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 2
    if response.status_code != 201:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        print(f"error: HTTP {response.status_code}: {detail}", file=sys.stderr)
        return 2
    gate = response.json()
    print(_gate_table(gate["comparisons"], args.all))
    for note in gate["notes"]:
        print(f"note: {note}")
    for reason in gate["reasons"]:
        print(f"{reason['severity']}: {reason['message']}")
    print(
        f"gate {gate['id']}: {gate['verdict'].upper()} (attempt {gate['attempt']} of this "
        f"checkpoint on {gate['dataset']} v{gate['dataset_version']}, alpha {gate['alpha']:.4g})"
    )
    return GATE_EXIT_CODES[gate["verdict"]]


def _gate_table(comparisons: list[dict[str, Any]], show_all: bool) -> str:
    """Guarded comparisons and unguarded ones that warn (all with --all). `bounds` are the
    one-sided bounds of the change; `needs` the rows a guarded cohort needs to decide; `p` the
    margin test's (adjusted), so a status shown below a floor says so."""

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    header = (
        "evaluator",
        "cohort",
        "risk",
        "n",
        "needs",
        "baseline",
        "candidate",
        "delta [bounds]",
        "p",
        "status",
    )
    lines = [header]
    for c in comparisons:
        if not (c["guarded"] or c["status"] == "warn" or show_all):
            continue
        delta = number(c["delta"])
        if c["ci_low"] is not None and c["ci_high"] is not None:
            delta += f" [{number(c['ci_low'])}, {number(c['ci_high'])}]"
        p = c["p_adjusted"] if c["p_adjusted"] is not None else c["p_value"]
        status = "regressed" if c["status"] == "block" else c["status"]
        if c.get("below_floor"):  # the block is the floor's, whatever p (the margin's) says
            status += ",below-floor"
        needs = str(c["required_n"]) if c["required_n"] is not None else "-"
        cohort = f"{c['dimension']}={c['value']}"
        row = (c["evaluator"], cohort, c["risk"] or "-", str(c["n"]), needs)
        lines.append(
            (*row, number(c["baseline"]), number(c["candidate"]), delta, f"{p:.3g}", status)
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    migrate.upgrade(settings.database_url)
    sessions = make_sessionmaker(make_engine(settings))
    if args.if_empty and demo.has_data(sessions):
        print("the database already has models; demo data not added")
        return 0
    summary = demo.seed(sessions, settings)
    print(
        f"demo project '{summary.project}': {summary.checkpoints} checkpoints, {summary.runs} "
        f"runs, {summary.gates} gates, {summary.events} events, "
        f"{summary.alerts_opened} alerts opened"
    )
    return 0


HANDLERS = {
    "serve": _serve,
    "migrate": _migrate,
    "keys": _keys,
    "drift": _drift,
    "gate": _gate,
    "demo": _demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return HANDLERS[args.command](Settings(), args)


if __name__ == "__main__":
    sys.exit(main())
