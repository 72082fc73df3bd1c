"""Schemathesis over every operation of a live server while bench/load.py's load runs.

One `plumbline serve` (default worker processes, background loops and scheduler on, as in
production) on SQLite or PostgreSQL. For --seconds (default 180) two things hit it at once:

* the mixed load of bench/load.py (`drive`: REST and OTLP ingest, dashboards, API reads)
  in the project "load";
* Schemathesis, in a process of its own, cycling over every operation of the served OpenAPI
  document with generated valid and invalid requests (FUZZ_EXAMPLES of each per operation
  per pass, each pass new examples), with an admin key of a second project "fuzz" (so a
  fuzzed DELETE cannot remove the load's data, and tenant isolation is exercised too).

Printed (JSON, and written to bench/results/fuzz_under_load_<db>.json): every 5xx answer
(count and samples; the goal is 0) from either side, and the load project's events accepted
(as acknowledged by the ingest answers) against the events stored afterwards (the goal is
equal: nothing acknowledged is lost, nothing is stored twice).

    .venv/bin/python bench/fuzz_under_load.py --db sqlite --seconds 180
    .venv/bin/python bench/fuzz_under_load.py --db postgresql --seconds 180
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import schemathesis
from hypothesis import HealthCheck, Verbosity, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from load import MODEL, drive, memory_mb, serve
from schemathesis import GenerationMode
from scratch import BENCH_DATABASE_URL, scratch_schema
from sqlalchemy import text

from app.core import migrate
from app.core.db import make_engine, make_sessionmaker
from app.core.settings import Settings
from app.keys import service as keys
from app.models.project import Role

RESULTS = Path(__file__).resolve().parent / "results"
FUZZ_EXAMPLES = 4
SAMPLES = 20

# OTLP bodies are protobuf bytes: send what Hypothesis generates as it is (as tests/hardening).
schemathesis.serializer.alias("application/x-protobuf", "application/octet-stream")


@dataclass
class FuzzStats:
    requests: int = 0
    passes: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    transport_errors: list[str] = field(default_factory=list)
    operations: set[str] = field(default_factory=set)

    def as_json(self) -> dict[str, Any]:
        return {
            "operations": len(self.operations),
            "complete_passes_over_every_operation": self.passes,
            "requests": self.requests,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "server_error_samples": self.server_errors,
            "transport_or_generation_errors": self.transport_errors,
        }


def fuzz_process(base: str, key: str, seconds: float, results: Any) -> None:
    """The fuzzer's own process (no GIL shared with the load driver); sends its findings."""
    found = FuzzStats()
    fuzz(base, key, time.monotonic() + seconds, found)
    results.put(found.as_json())


def fuzz(base: str, key: str, deadline: float, found: FuzzStats) -> None:
    """Every operation, over and over until the deadline, each pass with fresh examples."""
    document = httpx.get(base + "/openapi.json", trust_env=False).json()
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    headers = {"Authorization": f"Bearer {key}"}
    while time.monotonic() < deadline:
        for operation in operations:
            if time.monotonic() >= deadline:
                return
            found.operations.add(operation.label)
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                _fuzz_operation(operation, mode, base, headers, deadline, found)
        found.passes += 1


def _fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    base: str,
    headers: dict[str, str],
    deadline: float,
    found: FuzzStats,
) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        verbosity=Verbosity.quiet,
        print_blob=False,
    )
    def one(case: Any) -> None:
        if time.monotonic() >= deadline:
            return
        try:
            response = case.call(base_url=base, headers=headers, timeout=120)
        except Exception as exc:  # a refused or cut connection is a finding too
            if len(found.transport_errors) < SAMPLES:
                found.transport_errors.append(f"{operation.label}: {type(exc).__name__}: {exc}")
            return
        found.requests += 1
        found.statuses[response.status_code] += 1
        if response.status_code >= 500 and len(found.server_errors) < SAMPLES:
            found.server_errors.append(
                f"{response.status_code} {case.method} {case.formatted_path} "
                f"query={case.query!r} body={str(case.body)[:300]!r}: {response.text[:300]}"
            )

    try:
        one()
    except Unsatisfiable:
        pass  # nothing to make invalid (an operation without parameters or body)
    except Exception as exc:  # other generation trouble is reported, though not a 5xx
        if len(found.transport_errors) < SAMPLES:
            found.transport_errors.append(f"{operation.label} ({mode}): generation: {exc!r}")


@contextmanager
def database(kind: str) -> Iterator[str]:
    if kind == "postgresql":
        with scratch_schema(BENCH_DATABASE_URL, "bench_fuzz") as url:
            yield url
        return
    with tempfile.TemporaryDirectory() as directory:
        url = f"sqlite:///{directory}/fuzz.db"
        migrate.upgrade(url)
        yield url


def run(kind: str, seconds: float) -> dict[str, Any]:
    load_before = [round(x, 2) for x in os.getloadavg()]
    with database(kind) as url:
        engine = make_engine(Settings(database_url=url))
        with make_sessionmaker(engine)() as session:
            load_project = keys.get_or_create_project(session, "load")
            _row, load_key = keys.create_key(session, load_project.id, Role.admin, "load")
            fuzz_project = keys.get_or_create_project(session, "fuzz")
            _row, fuzz_key = keys.create_key(session, fuzz_project.id, Role.admin, "fuzz")
            session.commit()
            load_project_id = load_project.id
        with serve(url) as (base, pid):
            for key in (load_key, fuzz_key):
                for version in ("v1", "v2"):
                    httpx.post(
                        base + "/api/v1/checkpoints",
                        json={"model": MODEL, "version": version},
                        headers={"Authorization": f"Bearer {key}"},
                        trust_env=False,
                    ).raise_for_status()
            context = multiprocessing.get_context("spawn")
            results = context.Queue()
            fuzzer = context.Process(target=fuzz_process, args=(base, fuzz_key, seconds, results))
            fuzzer.start()
            stats, elapsed = asyncio.run(drive(base, load_key, seconds))
            found = results.get(timeout=600)
            fuzzer.join(60)
            memory = memory_mb(pid)
        with engine.connect() as conn:
            stored = int(
                conn.execute(
                    text("SELECT count(*) FROM events WHERE project_id = :p"),
                    {"p": load_project_id},
                ).scalar_one()
            )
        engine.dispose()
    fuzz_5xx = sum(n for status, n in found["statuses"].items() if int(status) >= 500)
    return {
        "database": kind,
        "seconds": round(elapsed, 1),
        "server_errors_5xx": fuzz_5xx + stats.server_errors,
        "events_accepted": stats.accepted,
        "events_stored": stored,
        "accepted_equals_stored": stats.accepted == stored,
        "fuzz": found,
        "load": {
            "requests": sum(len(v) for v in stats.latencies.values()),
            "errors": sum(stats.errors.values()),
            "error_samples": stats.error_samples,
            "throttled": sum(stats.throttled.values()),
        },
        "server": memory,
        "measured_on": datetime.now(UTC).date().isoformat(),
        "cpus": os.cpu_count(),
        "load_average_before": load_before,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=["sqlite", "postgresql"], required=True)
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    result = run(args.db, args.seconds)
    print(json.dumps(result, indent=2))
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"fuzz_under_load_{args.db}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
