"""/compare: any two runs decided as a gate would, shown with its forest plot, stored nowhere."""

from __future__ import annotations

import html
import json
import re
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.models import AuditLog, Checkpoint, Gate
from app.models.registry import CheckpointStatus
from tests.datasets.support import drain_worker
from tests.web.test_pages import sign_in

Headers = dict[str, str]
FIGURE = re.compile(r'data-plotly="([^"]*)"')
ROWS = [
    {
        "key": f"{route}-{i:02d}",
        "input": f"question {i}",
        "expected": "right",
        "cohort": {"route": route},
        "risk": "high" if route == "billing" else "low",
    }
    for route in ("billing", "returns")
    for i in range(40)
]


def run_of(client: TestClient, auth: Headers, version: str, wrong: set[str]) -> int:
    checkpoint = client.post(
        "/api/v1/checkpoints", json={"model": "bot", "version": version}, headers=auth
    )
    outputs = [
        {"key": row["key"], "output": "wrong" if row["key"] in wrong else "right"} for row in ROWS
    ]
    created = client.post(
        "/api/v1/datasets/golden/evaluations",
        json={
            "checkpoint_id": checkpoint.json()["id"],
            "evaluators": [{"name": "exact_match"}],
            "outputs": outputs,
        },
        headers=auth,
    )
    assert created.status_code == 202, created.text
    return int(created.json()["run_id"])


def counts(app: FastAPI) -> tuple[int, int, list[Any]]:
    with app.state.sessionmaker() as session:
        return (
            session.scalar(select(func.count()).select_from(Gate)) or 0,
            session.scalar(select(func.count()).select_from(AuditLog)) or 0,
            list(session.scalars(select(Checkpoint.status).order_by(Checkpoint.id))),
        )


def test_two_runs_compare_with_a_forest_plot_and_nothing_is_stored(
    app: FastAPI, client: TestClient, admin_key: str
) -> None:
    auth = {"Authorization": f"Bearer {admin_key}"}
    client.post("/api/v1/datasets", json={"name": "golden"}, headers=auth)
    version = client.post("/api/v1/datasets/golden/versions", json={"rows": ROWS}, headers=auth)
    assert version.status_code in (200, 201), version.text
    baseline = run_of(client, auth, "v1", wrong=set())
    # The candidate gets half the high-risk billing rows wrong: the gate would block.
    candidate = run_of(client, auth, "v2", wrong={f"billing-{i:02d}" for i in range(20)})
    drain_worker(app)
    sign_in(client, admin_key)
    before = counts(app)

    run_page = client.get(f"/runs/{candidate}")
    assert 'action="/compare"' in run_page.text
    assert f'name="candidate_run" value="{candidate}"' in run_page.text
    assert f'<option value="{baseline}">' in run_page.text

    page = client.get("/compare", params={"baseline_run": baseline, "candidate_run": candidate})

    assert page.status_code == 200, page.text
    assert "A comparison, not a gate" in page.text
    assert "badge-block" in page.text and "regressed" in page.text
    [forest] = [json.loads(html.unescape(raw)) for raw in FIGURE.findall(page.text)]
    labels = forest["data"][0]["y"]
    deltas = dict(zip(labels, forest["data"][0]["x"], strict=True))
    assert deltas["exact_match · route=billing"] == -0.5
    assert deltas["exact_match · route=returns"] == 0.0
    # The same decision as a stored gate would reach, yet nothing was stored or changed.
    assert counts(app) == before
    assert CheckpointStatus.blocked not in before[2]
    gate = client.post(
        "/api/v1/gates",
        json={"candidate_run_id": candidate, "baseline_run_id": baseline},
        headers=auth,
    ).json()
    assert gate["verdict"] == "block"
    assert counts(app)[2][1] is CheckpointStatus.blocked  # what storing it does


def test_compare_explains_runs_it_cannot_compare(client: TestClient, admin_key: str) -> None:
    sign_in(client, admin_key)
    missing = client.get("/compare", params={"baseline_run": 998, "candidate_run": 999})
    assert missing.status_code == 404 and "no evaluation run 999" in missing.text
    bad = client.get("/compare", params={"baseline_run": "x", "candidate_run": 1})
    assert bad.status_code == 422 and "baseline_run" in bad.text
