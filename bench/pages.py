"""Server time per dashboard page (p50/p95) with a year of daily signals for 20 cohorts.

The demo project is seeded first (runs, gates, alerts, traces, webhooks), then a second model
gets 365 days x (all + 10 routes + 10 user segments) x every signal of rollups. Each page is
requested through the ASGI app in-process (no network), signed in with a dashboard session;
the time measured is the request's whole server-side handling including rendering.

    .venv/bin/python bench/pages.py [--url postgresql://...] [--repeats 30]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import tempfile
import time
from datetime import UTC, date, datetime, timedelta

from fastapi.testclient import TestClient
from scratch import BENCH_DATABASE_URL, scratch_schema
from sqlalchemy import insert, select, text

from app import demo
from app.core.db import make_engine
from app.core.settings import Settings
from app.keys import service as keys
from app.main import create_app
from app.models import Alert, ChampionHistory, Checkpoint, DailySignal, Event, Gate, Model
from app.models.drift import AlertStatus
from app.models.gates import GateVerdict
from app.models.project import Role
from app.models.registry import ChampionAction, CheckpointKind

SIGNALS = (
    "eval_fail_rate",
    "fallback_rate",
    "refusal_rate",
    "thumbs_down_rate",
    "over_refusal_rate",
    "under_refusal_rate",
    "brier_score",
    "ece",
)
COHORTS = [("all", "all")] + [("route", f"route-{i}") for i in range(10)]
COHORTS += [("user_segment", f"segment-{i}") for i in range(10)]
DAYS = 365


def seed_year_of_signals(settings: Settings, project_id: int, today: date) -> int:
    """A second model with one checkpoint and a year of rollups, bulk-inserted."""
    rng = random.Random(3)
    sessions = make_engine(settings)
    with sessions.begin() as conn:
        model_id = conn.execute(
            insert(Model).values(project_id=project_id, name="bench-bot").returning(Model.id)
        ).scalar_one()
        checkpoint_id = conn.execute(
            insert(Checkpoint)
            .values(
                project_id=project_id,
                model_id=model_id,
                version="b1",
                kind=CheckpointKind.full,
                training={},
                tags=[],
                spec_hash="0" * 64,
            )
            .returning(Checkpoint.id)
        ).scalar_one()
        conn.execute(
            insert(ChampionHistory).values(
                project_id=project_id,
                model_id=model_id,
                checkpoint_id=checkpoint_id,
                action=ChampionAction.promote,
                actor="bench",
                created_at=datetime.now(UTC) - timedelta(days=DAYS),
            )
        )
        rows = []
        for age in range(DAYS, 0, -1):
            day = today - timedelta(days=age)
            for dimension, value in COHORTS:
                volume = rng.randint(50, 5000)
                for signal in SIGNALS:
                    rate = rng.uniform(0.01, 0.2)
                    rows.append(
                        {
                            "project_id": project_id,
                            "model_id": model_id,
                            "checkpoint_id": checkpoint_id,
                            "day": day,
                            "signal": signal,
                            "dimension": dimension,
                            "value": value,
                            "numerator": rate * volume,
                            "denominator": volume,
                            "rate": rate,
                        }
                    )
        for start in range(0, len(rows), 10_000):
            conn.execute(insert(DailySignal), rows[start : start + 10_000])
    # A year of rollups accumulates over a year, and autovacuum analyzes the table long before
    # then; bulk-inserted here, the table would otherwise be read with or without statistics
    # depending on whether autovacuum happened to get there first (plans, and timings, differ).
    with sessions.begin() as conn:
        conn.execute(text("ANALYZE daily_signals"))
    sessions.dispose()
    return len(rows)


def sign_in(client: TestClient, key: str) -> None:
    page = client.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    client.post("/login", data={"csrf_token": token.group(1), "api_key": key})


def pages(settings: Settings, today: date) -> dict[str, str]:
    engine = make_engine(settings)
    with engine.connect() as conn:
        checkpoint = conn.scalar(select(Checkpoint.id).where(Checkpoint.version == "v3-rlhf"))
        gate = conn.scalar(select(Gate.id).where(Gate.verdict == GateVerdict.block))
        alert = conn.scalar(select(Alert.id).where(Alert.status == AlertStatus.open))
        trace = conn.scalar(select(Event.trace_id).limit(1))
        run = conn.scalar(text("SELECT max(id) FROM evaluation_runs"))
    engine.dispose()
    year_ago = (today - timedelta(days=DAYS)).isoformat()
    return {
        "overview": "/",
        "model": "/models/support-bot",
        "checkpoint": f"/checkpoints/{checkpoint}",
        "run": f"/runs/{run}",
        "gate": f"/gates/{gate}",
        "drift_45d_all": "/drift?model=bench-bot",
        "drift_year_routes": f"/drift?model=bench-bot&dimension=route&from={year_ago}",
        "drift_year_segments_refusal": (
            f"/drift?model=bench-bot&dimension=user_segment&signal=refusal_rate&from={year_ago}"
        ),
        "alerts": "/alerts",
        "alert": f"/alerts/{alert}",
        "traces": "/traces",
        "trace": f"/traces/{trace}",
        "dataset_diff": "/datasets/support-golden?version=2&compare=1",
        "webhooks": "/webhooks",
    }


def measure(settings: Settings, key: str, paths: dict[str, str], repeats: int) -> list[dict]:
    results = []
    with TestClient(create_app(settings)) as client:
        sign_in(client, key)
        for name, path in paths.items():
            client.get(path)  # warm: template compilation, first plotly import
            timings = []
            for _ in range(repeats):
                started = time.perf_counter()
                response = client.get(path)
                timings.append((time.perf_counter() - started) * 1000)
                assert response.status_code == 200, (path, response.status_code)
            timings.sort()
            results.append(
                {
                    "page": name,
                    "path": path,
                    "p50_ms": round(statistics.median(timings), 1),
                    "p95_ms": round(timings[int(0.95 * (len(timings) - 1))], 1),
                    "bytes": len(response.content),
                }
            )
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default=BENCH_DATABASE_URL)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    with scratch_schema(args.url, "bench_pages") as url, tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(
            database_url=url,
            data_dir=data_dir,
            run_workers=False,
            run_scheduler=False,
            log_level="WARNING",
        )
        app = create_app(settings)
        today = datetime.now(UTC).date()
        started = time.perf_counter()
        demo.seed(app.state.sessionmaker, settings, today)
        demo_s = time.perf_counter() - started
        with app.state.sessionmaker() as session:
            project = keys.get_or_create_project(session, demo.PROJECT)
            _row, key = keys.create_key(session, project.id, Role.read, "bench")
            session.commit()
        signal_rows = seed_year_of_signals(settings, project.id, today)
        results = measure(settings, key, pages(settings, today), args.repeats)
        app.state.engine.dispose()
    print(
        json.dumps(
            {
                "database": "postgresql",
                "demo_seed_s": round(demo_s, 2),
                "year_signal_rows": signal_rows,
                "cohorts": len(COHORTS) - 1,
                "repeats": args.repeats,
                "pages": results,
                "max_p95_ms": max(r["p95_ms"] for r in results),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
