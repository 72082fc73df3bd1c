"""Where the daily drift job's one scan spends its time, next to bench/drift.py's bare GROUP BY.

Seeds the day bench/drift.py seeds, then runs variants of the rollup's scan
(app.drift.rollup's fine GROUP BY) one at a time in one backend without parallel workers, and
reports the backend's CPU time (user + system, read from /proc, so PostgreSQL must run on this
host) per variant: the least of --repeats runs, which a shared machine disturbs far less than
wall time. Each variant drops one ingredient of the scan, so the differences say what each
costs. Prints one JSON object.

    nice -n 10 .venv/bin/python bench/drift_profile.py [--events 1000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from drift import BARE, DAY, price_checkpoints, seed
from scratch import BENCH_DATABASE_URL, scratch_schema
from sqlalchemy import Connection, text

from app.core.db import make_engine, make_sessionmaker
from app.core.settings import Settings
from app.drift import rollup

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def variants() -> dict[str, str]:
    """The scan as the job runs it, and the same scan without one of its ingredients."""
    aggregates = rollup.scan_aggregates(priced=False, postgres=True)
    source = f"FROM events e WHERE {rollup.DAY_FILTER}"
    interned = "e.checkpoint_id, e.cohort_id, e.probability, e.label"
    columns = "e.checkpoint_id, e.route, e.prompt_version, e.user_segment, e.probability, e.label"
    json_keys = columns.replace("e.user_segment, ", "e.user_segment, e.cohort, ")
    return {
        "bare_group_by": BARE,
        "job_scan": rollup._fine_sql(legacy_rows=False, priced=False, postgres=True),
        # A day that also holds events stored before cohorts were interned (migration 0010).
        "job_scan_with_legacy_fallback": rollup._fine_sql(
            legacy_rows=True, priced=False, postgres=True
        ),
        # The log moments as SUM(ln x) and SUM(ln x * ln x), as SQLite takes them (ln three
        # times per event and metric; the job's avg/var_pop share one ln).
        "job_scan_summed_logs": rollup._fine_sql(legacy_rows=False, priced=False, postgres=False),
        # A project with priced checkpoints: the scan joins their prices and sums the cost.
        "job_scan_priced": rollup._fine_sql(legacy_rows=False, priced=True, postgres=True),
        "job_scan_priced_summed_logs": rollup._fine_sql(
            legacy_rows=False, priced=True, postgres=False
        ),
        "scan_only_count": f"SELECT COUNT(*) {source}",
        "checkpoint_all_aggregates": (
            f"SELECT e.checkpoint_id, {aggregates} {source} GROUP BY e.checkpoint_id"
        ),
        "interned_keys_count_only": f"SELECT {interned}, COUNT(*) {source} GROUP BY {interned}",
        # The scan before cohorts were interned (migration 0010): grouped by the JSON.
        "json_cohort_scan": f"SELECT {json_keys}, {aggregates} {source} GROUP BY {json_keys}",
        "json_keys_count_only": f"SELECT {json_keys}, COUNT(*) {source} GROUP BY {json_keys}",
    }


def backend_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS  # utime, stime


def least_cpu_s(conn: Connection, pid: int, sql: str, params: dict, repeats: int) -> float:
    conn.execute(text(sql), params).all()  # warm: the day's pages in the cache for every variant
    timings = []
    for _ in range(repeats):
        before = backend_cpu_s(pid)
        conn.execute(text(sql), params).all()
        time.sleep(0.05)  # /proc's counters catch up with the backend
        timings.append(backend_cpu_s(pid) - before)
    return min(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=BENCH_DATABASE_URL)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with scratch_schema(args.url, "bench_drift_profile") as url:
        engine = make_engine(Settings(database_url=url))
        sessions = make_sessionmaker(engine)
        project_id = seed(sessions, args.events)
        price_checkpoints(sessions, project_id)  # only job_scan_priced reads the prices
        start, end = rollup.day_bounds(DAY)
        params = {"project_id": project_id, "start": start, "end": end}
        cpu: dict[str, float] = {}
        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            # The job's own settings (rollup.compute_day), minus parallel workers, whose CPU
            # would not show in this backend's counters.
            conn.execute(text("SET jit = off"))
            conn.execute(text("SET work_mem = '64MB'"))
            conn.execute(text("SET max_parallel_workers_per_gather = 0"))
            for name, sql in variants().items():
                cpu[name] = round(least_cpu_s(conn, pid, sql, params, args.repeats), 3)
        engine.dispose()
    bare = cpu["bare_group_by"]
    print(
        json.dumps(
            {
                "events": args.events,
                "repeats": args.repeats,
                "backend_cpu_s": cpu,
                "vs_bare_group_by": {name: round(s / bare, 2) for name, s in cpu.items()},
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
