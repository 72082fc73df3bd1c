"""The daily drift job on PostgreSQL: one day of 100k / 1M / 3M events, against a single bare
GROUP BY of the four seed rates over the same day's rows.

The "job" is app.drift.job.run_day: every signal (six rates, Brier, calibration error,
latency and token p50/p95; then again with both checkpoints priced, adding cost p50/p95) for
every cohort (all, route, prompt_version, user_segment, plus
a JSON-only `region`; each event's cohort interned as ingest interns it), replacing the
day's rows, then monitors and alerts. A neighbouring day of half the volume sits in the table
so the day's range scan is real. Prints one JSON line per size.

    .venv/bin/python bench/drift.py [--sizes 100000,1000000,3000000] [--url postgresql://...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import date, timedelta

from scratch import BENCH_DATABASE_URL, bench_model, scratch_schema
from sqlalchemy import Engine, text, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import make_engine, make_sessionmaker
from app.core.links import Links
from app.core.settings import Settings
from app.drift import job as drift
from app.drift import rollup
from app.ingest.cohorts import assign_cohort_ids
from app.ingest.partitions import create_partitions
from app.models import Checkpoint

DAY = date(2030, 1, 15)

# Every event is a trace of its own (trace id `prefix || g`), so each rated call is its trace's
# carrier and carries the rating in `carried_feedback` too, as ingest would place it.
GENERATE = """
INSERT INTO events (project_id, model_id, checkpoint_id, trace_id, span_id, ts, route,
  prompt_version, user_segment, cohort, cohort_id, truncated, eval_passed, fallback, refusal,
  should_refuse, feedback, carried_feedback, probability, label, latency_ms, input_tokens,
  output_tokens, attributes, source, received_at)
SELECT :project_id, :model_id, CASE WHEN g % 10 = 0 THEN :canary ELSE :champion END,
  :prefix || g, '', CAST(:start AS timestamptz) + (g % 86400) * interval '1 second',
  '/route-' || (g % 8), 'p' || (g % 3), seg, jsonb_build_object('route', '/route-' || (g % 8),
  'prompt_version', 'p' || (g % 3), 'user_segment', seg, 'region', 'r' || (g % 5)),
  (CAST(:cohort_ids AS bigint[]))[1 + g % :combinations],
  false, random() > 0.1, random() < 0.03, random() < 0.05, random() < 0.1,
  rating, rating,
  CASE WHEN g % 4 = 0 THEN round(random()::numeric, 2)::float END,
  CASE WHEN g % 4 = 0 THEN CASE WHEN random() < 0.5 THEN '1' ELSE '0' END END,
  round(exp(6.5 + 0.5 * random())::numeric, 1)::float, 200 + (random() * 400)::int,
  50 + (random() * 300)::int,
  '{}'::jsonb, 'rest', now()
FROM (SELECT g, (ARRAY['free', 'pro', 'enterprise', 'internal'])[1 + g % 4] AS seg,
        CASE WHEN g % 3 = 0 THEN CASE WHEN random() < 0.2 THEN -1 ELSE 1 END END AS rating
      FROM generate_series(1, :n) AS g) AS s
"""

BARE = """
SELECT checkpoint_id,
  COUNT(*) FILTER (WHERE NOT eval_passed), COUNT(eval_passed),
  COUNT(*) FILTER (WHERE fallback), COUNT(fallback),
  COUNT(*) FILTER (WHERE refusal), COUNT(refusal),
  COUNT(*) FILTER (WHERE feedback = -1), COUNT(feedback)
FROM events WHERE project_id = :project_id AND ts >= :start AND ts < :end
GROUP BY checkpoint_id
"""


COMBINATIONS = 120
"""Distinct cohorts GENERATE writes: event g has combination g % 120 (route g % 8, prompt
version g % 3, segment g % 4, region g % 5)."""


def combination(index: int) -> dict[str, str]:
    segment = ("free", "pro", "enterprise", "internal")[index % 4]
    return {
        "route": f"/route-{index % 8}",
        "prompt_version": f"p{index % 3}",
        "user_segment": segment,
        "region": f"r{index % 5}",
    }


def interned_cohort_ids(session: Session, project_id: int) -> list[int]:
    """The ids ingest would give GENERATE's cohorts, in combination order (interned by the
    same function, app/ingest/cohorts.py)."""
    rows = [
        {
            "cohort": (cohort := combination(index)),
            "route": cohort["route"],
            "prompt_version": cohort["prompt_version"],
            "user_segment": cohort["user_segment"],
        }
        for index in range(COMBINATIONS)
    ]
    assign_cohort_ids(session, project_id, rows)
    return [row["cohort_id"] for row in rows]


def seed(sessions: sessionmaker[Session], n: int) -> int:
    with sessions() as session:
        engine = session.get_bind()
    # Rows written here bypass ingest, which would make their day partitions on demand. Made
    # first: attaching a partition waits for transactions writing the tables events refers to.
    assert isinstance(engine, Engine)
    create_partitions(engine, [DAY - timedelta(days=1), DAY])
    with sessions() as session:
        project, model, checkpoints = bench_model(
            session, f"bench-{uuid.uuid4().hex[:6]}", ("champion", "canary")
        )
        cohort_ids = interned_cohort_ids(session, project.id)
        for day, count in ((DAY, n), (DAY - timedelta(days=1), n // 2)):
            session.execute(
                text(GENERATE),
                {
                    "project_id": project.id,
                    "model_id": model.id,
                    "champion": checkpoints[0].id,
                    "canary": checkpoints[1].id,
                    "prefix": f"{day.isoformat()}-",
                    "start": f"{day.isoformat()} 00:00:00+00",
                    "n": count,
                    "cohort_ids": cohort_ids,
                    "combinations": COMBINATIONS,
                },
            )
        session.commit()
        session.execute(text("ANALYZE events"))
        session.commit()
        return project.id


PRICES = {"usd_per_million_input_tokens": 0.5, "usd_per_million_output_tokens": 1.5}


def price_checkpoints(sessions: sessionmaker[Session], project_id: int) -> None:
    """Prices both checkpoints, so the job also joins prices and sums each call's cost."""
    with sessions() as session:
        session.execute(
            update(Checkpoint).where(Checkpoint.project_id == project_id).values(**PRICES)
        )
        session.commit()


def median_seconds(action: Callable[[], object], repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def bench_size(sessions: sessionmaker[Session], n: int, repeats: int) -> dict[str, object]:
    project_id = seed(sessions, n)
    start, end = rollup.day_bounds(DAY)
    results: list[drift.DriftResult] = []

    def job() -> None:
        with sessions() as session:
            results.append(
                drift.run_day(session, Links("http://127.0.0.1:8000"), project_id, DAY, "bench")
            )

    def bare() -> None:
        with sessions() as session:
            params = {"project_id": project_id, "start": start, "end": end}
            session.execute(text(BARE), params).all()

    bare()  # warm the cache for both alike
    job_s = median_seconds(job, repeats)
    bare_s = median_seconds(bare, repeats)
    unpriced_rows = results[-1].signals
    price_checkpoints(sessions, project_id)
    priced_s = median_seconds(job, repeats)
    return {
        "events": n,
        "job_s": round(job_s, 3),
        "bare_group_by_s": round(bare_s, 3),
        "ratio": round(job_s / bare_s, 2),
        "signal_rows": unpriced_rows,
        # The same day once both checkpoints have prices: the cost signals are added.
        "priced_job_s": round(priced_s, 3),
        "priced_ratio": round(priced_s / bare_s, 2),
        "priced_signal_rows": results[-1].signals,
        "repeats": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=BENCH_DATABASE_URL)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with scratch_schema(args.url, "bench_drift") as url:
        engine = make_engine(Settings(database_url=url))
        sessions = make_sessionmaker(engine)
        for size in (int(s) for s in args.sizes.split(",")):
            print(json.dumps(bench_size(sessions, size, args.repeats)), flush=True)
        engine.dispose()


if __name__ == "__main__":
    main()
