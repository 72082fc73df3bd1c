"""Retention on PostgreSQL: dropping whole day partitions against deleting the same rows.

Seeds DAYS days of EVENTS_PER_DAY events (with their exactly-once keys) for one project, then
removes the oldest EXPIRED days twice, from identical copies of the data:

* partitions: `drop_expired_partitions` (detach, delete the days' keys, drop), the path the
  daily retention job takes for whole expired days;
* rows: `delete_expired_rows` in 5,000-row batches until nothing expired is left, the path
  it takes for the day the cutoff falls in (and the only path before partitioning).

Both remove the same rows and keys; the JSON says how long each took, and what the deleted
rows leave behind (dead tuples until VACUUM; a dropped partition leaves none).

    nice .venv/bin/python bench/retention.py [--days 6 --expired 3 --per-day 100000]
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock

from scratch import BENCH_DATABASE_URL, bench_model, scratch_schema
from sqlalchemy import Engine, text

from app.core.db import make_engine, make_sessionmaker
from app.core.settings import Settings
from app.ingest.partitions import create_partitions
from app.ingest.retention import delete_expired_rows, drop_expired_partitions

FIRST_DAY = date(2031, 3, 1)
GENERATE = """
INSERT INTO events (project_id, model_id, checkpoint_id, trace_id, span_id, ts, route, cohort,
  input, output, truncated, eval_passed, attributes, source, received_at)
SELECT :project_id, :model_id, :checkpoint_id, :prefix || g, '',
  CAST(:start AS timestamptz) + (g % 86400) * interval '1 second', '/route-' || (g % 8),
  jsonb_build_object('route', '/route-' || (g % 8)), repeat('q', 200), repeat('a', 300), false,
  random() > 0.1, '{}'::jsonb, 'rest', now()
FROM generate_series(1, :n) AS g
"""


def seed(engine: Engine, days: int, per_day: int) -> tuple[int, int]:
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        project, model, [checkpoint] = bench_model(session, f"bench-retention-{time.time_ns()}")
        session.commit()
        ids = project.id, model.id, checkpoint.id
    create_partitions(engine, [FIRST_DAY + timedelta(days=n) for n in range(days)])
    with engine.begin() as conn:
        for n in range(days):
            day = FIRST_DAY + timedelta(days=n)
            conn.execute(
                text(GENERATE),
                {
                    "project_id": ids[0],
                    "model_id": ids[1],
                    "checkpoint_id": ids[2],
                    "prefix": f"{day.isoformat()}-",
                    "start": f"{day.isoformat()} 00:00:00+00",
                    "n": per_day,
                },
            )
        conn.execute(
            text(
                "INSERT INTO event_keys (project_id, trace_id, span_id) "
                "SELECT project_id, trace_id, span_id FROM events WHERE project_id = :p"
            ),
            {"p": ids[0]},
        )
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("events", "event_keys"):
            conn.execute(text(f"VACUUM ANALYZE {table}"))
    return ids[0], days * per_day


def counts(engine: Engine, project_id: int) -> tuple[int, int, int]:
    with engine.connect() as conn:
        events = conn.execute(
            text("SELECT count(*) FROM events WHERE project_id = :p"), {"p": project_id}
        ).scalar_one()
        keys = conn.execute(
            text("SELECT count(*) FROM event_keys WHERE project_id = :p"), {"p": project_id}
        ).scalar_one()
        conn.execute(text("SELECT pg_stat_force_next_flush()"))
        dead = conn.execute(
            text(
                "SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables "
                "WHERE schemaname = current_schema() AND relname LIKE 'events%'"
            )
        ).scalar_one()
    return int(events), int(keys), int(dead)


def one_path(base_url: str, path: str, days: int, expired: int, per_day: int) -> dict[str, object]:
    with scratch_schema(base_url, f"bench_ret_{path}") as url:
        engine = make_engine(Settings(database_url=url))
        project_id, seeded = seed(engine, days, per_day)
        cutoff = datetime.combine(FIRST_DAY + timedelta(days=expired), clock(), tzinfo=UTC)
        started = time.perf_counter()
        if path == "partitions":
            drop_expired_partitions(engine, [project_id], cutoff)
            batches = 0
        else:
            sessions = make_sessionmaker(engine)
            batches = 1
            with sessions() as session:
                while delete_expired_rows(session, project_id, cutoff):
                    batches += 1
        seconds = time.perf_counter() - started
        events, keys, dead = counts(engine, project_id)
        engine.dispose()
    removed = seeded - events
    return {
        "seconds": round(seconds, 3),
        "events_removed": removed,
        "events_left": events,
        "keys_left": keys,
        "row_batches": batches,
        "removed_per_s": round(removed / seconds),
        "dead_tuples_left": dead,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=BENCH_DATABASE_URL)
    parser.add_argument("--days", type=int, default=6)
    parser.add_argument("--expired", type=int, default=3)
    parser.add_argument("--per-day", type=int, default=100_000)
    args = parser.parse_args()
    drop = one_path(args.url, "partitions", args.days, args.expired, args.per_day)
    rows = one_path(args.url, "rows", args.days, args.expired, args.per_day)
    assert drop["events_removed"] == rows["events_removed"] == args.expired * args.per_day
    assert drop["keys_left"] == rows["keys_left"] == drop["events_left"]
    print(
        json.dumps(
            {
                "days": args.days,
                "expired_days": args.expired,
                "events_per_day": args.per_day,
                "partition_drop": drop,
                "row_delete": rows,
                "ratio": round(float(rows["seconds"]) / float(drop["seconds"]), 1),  # type: ignore[arg-type]
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
