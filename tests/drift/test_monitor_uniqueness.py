"""Default monitors are created once per model, however many processes ask at the same time."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from app.drift.monitors import DEFAULT_BAND, DEFAULT_SIGNALS, ensure_defaults
from app.drift.signals import ALL_SIGNALS
from app.models import Model, Monitor

Headers = dict[str, str]


def test_concurrent_first_uses_create_one_set_of_default_monitors(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    client.post("/api/v1/checkpoints", json={"model": "m", "version": "v1"}, headers=auth)
    sessions = app.state.sessionmaker
    with sessions() as session:
        model = session.scalars(select(Model)).one()
        project_id, model_id = model.project_id, model.id
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def first_use() -> None:
        try:
            with sessions() as session:
                start.wait(timeout=10)
                ensure_defaults(session, project_id, model_id)
                session.commit()
        except BaseException as exc:  # reported below: a thread's exception is otherwise lost
            errors.append(exc)

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    with sessions() as session:
        signals = session.scalars(select(Monitor.signal).where(Monitor.model_id == model_id))
        assert sorted(signals) == sorted(DEFAULT_SIGNALS)
        # The database itself refuses a second model-wide monitor of the same signal.
        session.add(
            Monitor(
                project_id=project_id,
                model_id=model_id,
                signal=DEFAULT_SIGNALS[0],
                band=dict(DEFAULT_BAND),
            )
        )
        with pytest.raises(IntegrityError):
            session.flush()
        session.rollback()


def test_the_api_still_shows_any_cohort_as_null_and_refuses_a_second_monitor(
    client: TestClient, auth: Headers
) -> None:
    client.post("/api/v1/checkpoints", json={"model": "m", "version": "v1"}, headers=auth)
    body: dict[str, Any] = {
        "model": "m",
        "signal": "refusal_rate",
        "dimension": "user_segment",
        "value": "free",
        "band": {"type": "fixed", "high": 0.2},
    }
    assert client.post("/api/v1/monitors", json=body, headers=auth).status_code == 201
    again = client.post("/api/v1/monitors", json=body, headers=auth)
    assert again.status_code == 409
    # Monitors of other cohorts of the same signal coexist.
    other = client.post("/api/v1/monitors", json={**body, "value": "pro"}, headers=auth)
    assert other.status_code == 201
    listed = client.get("/api/v1/monitors", params={"model": "m"}, headers=auth).json()["items"]
    defaults = [m for m in listed if m["is_default"]]
    assert len(defaults) == len(ALL_SIGNALS)
    assert all(m["dimension"] is None and m["value"] is None for m in defaults)
