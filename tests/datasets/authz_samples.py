"""Project A's datasets, suites and runs, for the generic authorization test."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

ORDER = 20

ROWS = [
    {"key": "alpha-secret-k1", "input": "alpha-secret question", "expected": "alpha-secret"},
    {"key": "alpha-secret-k2", "input": "another", "cohort": {"route": "alpha-secret-route"}},
]


def seed(client: TestClient, auth: dict[str, str], ids: dict[str, Any]) -> None:
    client.post("/api/v1/datasets", json={"name": "alpha-secret-ds"}, headers=auth)
    version = client.post(
        "/api/v1/datasets/alpha-secret-ds/versions", json={"rows": ROWS}, headers=auth
    )
    assert version.status_code == 201, version.text
    # The suite's name carries no marker: B may PUT its own suite of that name.
    suite = client.put(
        "/api/v1/suites/golden-suite",
        json={"description": "alpha-secret suite", "evaluators": [{"name": "exact_match"}]},
        headers=auth,
    )
    assert suite.status_code == 201, suite.text
    run = client.post(
        "/api/v1/datasets/alpha-secret-ds/evaluations",
        json={
            "checkpoint_id": ids["checkpoint_id"],
            "suite": "golden-suite",
            "outputs": [{"key": row["key"], "output": "alpha-secret"} for row in ROWS],
        },
        headers=auth,
    )
    assert run.status_code == 202, run.text
    ids.update(
        dataset_name="alpha-secret-ds",
        dataset_version=1,
        suite_name="golden-suite",
        run_id=run.json()["run_id"],
    )


BODIES: dict[tuple[str, str], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("POST", "/api/v1/datasets"): lambda ids: {"name": "b-dataset"},
    ("POST", "/api/v1/datasets/{dataset_name}/versions"): lambda ids: {
        "rows": [{"key": "b1", "input": "hello"}]
    },
    ("POST", "/api/v1/datasets/{dataset_name}/versions/from-traces"): lambda ids: {
        "trace_ids": ["b-trace"]
    },
    ("POST", "/api/v1/datasets/{dataset_name}/evaluations"): lambda ids: {
        "checkpoint_id": ids["checkpoint_id"],
        "evaluators": [{"name": "exact_match"}],
        "outputs": [{"key": "alpha-secret-k1", "output": "x"}],
    },
    ("PUT", "/api/v1/suites/{suite_name}"): lambda ids: {"evaluators": [{"name": "exact_match"}]},
}
