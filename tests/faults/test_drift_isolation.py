"""One project's failing day must not cost the other projects their drift run: each project
runs in its own transactions, a failure is recorded as that project's failed run, and the
period names it. The failure is injected (a rollup that raises for one project): with the
cohort key `all` refused, no stored data is known to fail a day any more."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core.links import Links
from app.drift import job
from app.drift.job import DRIFT_JOB, run_scheduled_drift
from app.models import DriftRun, JobRun, Project
from tests.conftest import new_key

NOW = datetime(2026, 3, 2, 0, 15, tzinfo=UTC)
DAY = NOW.date() - timedelta(days=1)


def send_traffic(client: TestClient, key: str) -> None:
    auth = {"Authorization": f"Bearer {key}"}
    client.post("/api/v1/checkpoints", json={"model": "m", "version": "v1"}, headers=auth)
    events = [
        {
            "trace_id": f"t{i}",
            "timestamp": (datetime(2026, 3, 1, 12, tzinfo=UTC) + timedelta(seconds=i)).isoformat(),
            "model": "m",
            "checkpoint_version": "v1",
            "refusal": i % 10 == 0,
        }
        for i in range(50)
    ]
    response = client.post("/api/v1/events", json={"events": events}, headers=auth)
    assert response.json()["accepted"] == 50, response.text


def test_a_failing_project_is_recorded_and_the_others_still_run(
    app: FastAPI, client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = [new_key(app, "first"), new_key(app, "second")]
    for key in keys:
        send_traffic(client, key)
    with app.state.sessionmaker() as session:
        first, second = session.scalars(
            select(Project.id).where(Project.name.in_(["first", "second"])).order_by(Project.id)
        ).all()
    compute_day = job.compute_day

    def failing_for_first(session: Any, project_id: int, day: Any) -> Any:
        if project_id == first:
            raise RuntimeError("injected rollup failure")
        return compute_day(session, project_id, day)

    monkeypatch.setattr(job, "compute_day", failing_for_first)
    results = run_scheduled_drift(app.state.sessionmaker, Links.of(app.state.settings), NOW)
    assert results is not None and [r.signals > 0 for r in results] == [True]
    with app.state.sessionmaker() as session:
        runs = {
            run.project_id: (run.status, run.error, run.signals)
            for run in session.scalars(select(DriftRun).where(DriftRun.day == DAY))
        }
        claim = session.scalars(select(JobRun).where(JobRun.job == DRIFT_JOB)).one()
    error = f"RuntimeError in the rollup of {DAY} (details in the server log)"
    assert runs[first] == ("failed", error, 0)
    assert runs[second][0] == "succeeded" and runs[second][2] > 0
    assert (claim.status, claim.error) == ("failed", f"project {first}: RuntimeError")
