"""A running canary keeps its window's events whatever the retention becomes: retention is a
setting of the deployment (PLUMBLINE_RETENTION_DAYS, read at start), so no request can be
refused when it is lowered; the retention run holds back what a running canary still counts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core.settings import Settings
from app.ingest.retention import purge_expired_events
from app.models import Event
from tests.canaries.support import (
    candidate_and_champion,
    every,
    hours_ago,
    send,
    served,
    start_canary,
)

Headers = dict[str, str]


def _refusal(evidence: dict[str, Any]) -> dict[str, Any]:
    [everyone] = [
        c
        for c in evidence["comparisons"]
        if c["signal"] == "refusal_rate"
        and c["comparison"] == "served"
        and c["cohort"]["dimension"] == "all"
    ]
    return everyone


def test_lowering_the_retention_below_a_running_canary_keeps_its_counts(
    app: FastAPI, client: TestClient, auth: Headers, settings: Settings, db: Session
) -> None:
    """A canary (max_days 14, fitting the 90-day retention) started 10 days ago has 300
    served calls an arm from its first days (days 10 to 7 ago). The deployment restarts with
    PLUMBLINE_RETENTION_DAYS=3: before, the next retention run deleted those 600 calls and
    the running canary's counts fell to 0 (and a harm it had shown could vanish). The
    retention run now holds back the two arms' events of a running canary's window; another
    model's old events, and the canary's arms' events from before its start, still go. Once
    the canary has ended, its events age out like any others."""
    ids = candidate_and_champion(client, auth)
    client.post(
        "/api/v1/checkpoints", json={"model": "other-bot", "version": "w1"}, headers=auth
    ).raise_for_status()
    canary = start_canary(
        client,
        auth,
        ids["v2"],
        start=hours_ago(240).isoformat(),
        signals=["refusal_rate"],
        comparisons=["served"],
    )
    since, span = hours_ago(239), timedelta(hours=72)
    send(
        client,
        auth,
        served("v1", 300, every(10, refusal=True), since, span),
        served("v2", 300, every(10, refusal=True), since, span),
        # Before the canary's start: not part of its window.
        served("v1", 5, every(2, refusal=True), hours_ago(300), timedelta(hours=1), "old"),
        # Another model's calls of the same days.
        served("w1", 7, every(2, refusal=True), since, span, model="other-bot"),
    )
    path = f"/api/v1/canaries/{canary['id']}"
    before = _refusal(client.post(f"{path}/evaluate", headers=auth).json()["evidence"])
    assert before["candidate"]["events"] == 300 and before["champion"]["events"] == 300

    short = settings.model_copy(update={"retention_days": 3})
    while purge_expired_events(app.state.sessionmaker, short):
        pass

    after = client.post(f"{path}/evaluate", headers=auth).json()
    assert after["status"] == "running"
    assert _refusal(after["evidence"])["candidate"] == before["candidate"]
    assert _refusal(after["evidence"])["champion"] == before["champion"]
    try:
        left = db.scalar(select(func.count()).select_from(Event))
    finally:
        db.rollback()
    assert left == 600  # the old calls and the other model's are gone

    client.post(f"{path}/stop", json={"reason": "done"}, headers=auth).raise_for_status()
    while purge_expired_events(app.state.sessionmaker, short):
        pass
    try:
        assert db.scalar(select(func.count()).select_from(Event)) == 0
    finally:
        db.rollback()
