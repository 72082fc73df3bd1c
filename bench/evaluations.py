"""End-to-end evaluation throughput on PostgreSQL: 10,000 rows x 6 deterministic evaluators.

Through the API (in-process ASGI client): create a dataset version, add_evaluation with
uploaded outputs, then run the worker in-process until the run has succeeded. `seconds`
is from the add_evaluation request to `succeeded` (outputs stored, 60,000 evaluations,
results bulk-inserted, summary computed in SQL); the upload is timed separately. Uses a
schema of its own, dropped at the end.

    .venv/bin/python bench/evaluations.py
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi.testclient import TestClient
from scratch import BENCH_DATABASE_URL, scratch_schema

from app.core.settings import Settings
from app.evaluations.worker import work_runs
from app.keys import service as keys
from app.main import create_app
from app.models.project import Role

ROWS = 10_000
ROUTES = ("billing", "shipping", "account", "returns")
SEGMENTS = ("free", "pro", "enterprise")
EVALUATORS: list[dict[str, Any]] = [
    {"name": "exact_match"},
    {"name": "contains", "params": {"substrings": ["days"]}},
    {"name": "regex", "params": {"pattern": r"\d+ days"}},
    {"name": "similarity"},
    {"name": "groundedness"},
    {"name": "length_budget", "params": {"max_chars": 200}},
]


def dataset_rows() -> list[dict[str, Any]]:
    return [
        {
            "key": f"row-{i:05d}",
            "input": f"How long does a refund take for order {i}?",
            "expected": f"Refunds take {i % 9 + 1} days.",
            "context": [f"Refunds for order {i} take {i % 9 + 1} days after we receive it."],
            "cohort": {"route": ROUTES[i % 4], "user_segment": SEGMENTS[i % 3]},
            "risk": ("high", "medium", "low")[i % 3],
        }
        for i in range(ROWS)
    ]


def outputs() -> list[dict[str, Any]]:
    return [
        {"key": f"row-{i:05d}", "output": f"Refunds take {(i * 7) % 9 + 1} days."}
        for i in range(ROWS)
    ]


def main() -> None:
    with scratch_schema(BENCH_DATABASE_URL, "bench_evals") as url:
        settings = Settings(
            database_url=url,
            run_workers=False,
            run_scheduler=False,
            log_level="WARNING",
            max_body_bytes=64 * 1024 * 1024,
        )
        app = create_app(settings)
        with app.state.sessionmaker() as session:
            project = keys.get_or_create_project(session, "bench")
            _key, api_key = keys.create_key(session, project.id, Role.admin, "bench")
            session.commit()
        auth = {"Authorization": f"Bearer {api_key}"}
        with TestClient(app) as client:
            checkpoint = client.post(
                "/api/v1/checkpoints", json={"model": "bench", "version": "v1"}, headers=auth
            ).json()
            client.post("/api/v1/datasets", json={"name": "bench"}, headers=auth)
            rows, outs = dataset_rows(), outputs()
            started = time.perf_counter()
            version = client.post(
                "/api/v1/datasets/bench/versions", json={"rows": rows}, headers=auth
            )
            upload_s = time.perf_counter() - started
            assert version.status_code == 201, version.text

            started = time.perf_counter()
            created = client.post(
                "/api/v1/datasets/bench/evaluations",
                json={"checkpoint_id": checkpoint["id"], "evaluators": EVALUATORS, "outputs": outs},
                headers=auth,
            )
            assert created.status_code == 202, created.text
            queued_s = time.perf_counter() - started
            while work_runs(app.state.sessionmaker, settings):
                pass
            run = client.get(f"/api/v1/runs/{created.json()['run_id']}", headers=auth).json()
            seconds = time.perf_counter() - started
            assert run["status"] == "succeeded", run
        app.state.engine.dispose()
        evaluations = ROWS * len(EVALUATORS)
        print(
            json.dumps(
                {
                    "rows": ROWS,
                    "evaluators": len(EVALUATORS),
                    "seconds": round(seconds, 2),
                    "evals_per_second": round(evaluations / seconds),
                    "add_evaluation_request_seconds": round(queued_s, 2),
                    "dataset_upload_seconds": round(upload_s, 2),
                    "database": "postgresql",
                }
            )
        )


if __name__ == "__main__":
    main()
