"""Champion histories and small, deterministic traffic for drift tests, through the API."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.core.db import today_utc
from app.models import ChampionHistory, Event, Feedback, Project
from tests.drift.traffic import at

Headers = dict[str, str]
CALLS = 500


def days_ending_day_before_yesterday(n: int) -> list[date]:
    first = today_utc() - timedelta(days=n + 1)
    return [first + timedelta(days=i) for i in range(n)]


def settings(client: TestClient, auth: Headers, **values: Any) -> None:
    body = {"reference_days": 14, "warmup_days": 0, **values}
    r = client.put("/api/v1/drift/settings", json=body, headers=auth)
    assert r.is_success, r.text


def checkpoints(
    client: TestClient, auth: Headers, model: str, versions: list[str]
) -> dict[str, int]:
    out = {}
    for v in versions:
        r = client.post("/api/v1/checkpoints", json={"model": model, "version": v}, headers=auth)
        assert r.status_code == 201, r.text
        out[v] = r.json()["id"]
    return out


def promote(client: TestClient, auth: Headers, model: str, checkpoint_id: int) -> None:
    body = {"checkpoint_id": checkpoint_id, "force": True, "reason": "ship"}
    r = client.post(f"/api/v1/models/{model}/promote", json=body, headers=auth)
    assert r.is_success, r.text


def rollback(client: TestClient, auth: Headers, model: str, to: str) -> None:
    r = client.post(
        f"/api/v1/models/{model}/rollback", json={"to": to, "reason": "back"}, headers=auth
    )
    assert r.is_success, r.text


def date_history(app: FastAPI, starts: list[date]) -> None:
    """Moves the champion history entries (in id order) to noon of `starts`."""
    with app.state.sessionmaker() as session:
        history = session.scalars(select(ChampionHistory).order_by(ChampionHistory.id)).all()
        assert len(history) == len(starts)
        for entry, start in zip(history, starts, strict=True):
            session.execute(
                update(ChampionHistory)
                .where(ChampionHistory.id == entry.id)
                .values(created_at=datetime.combine(start, time(12), tzinfo=UTC))
            )
        session.commit()


def champions_since(
    app: FastAPI, client: TestClient, auth: Headers, starts: dict[str, date]
) -> dict[str, int]:
    """Model m under the test drift settings, each version of `starts` promoted in turn and
    its champion history entry moved to noon of its day (the only model): their ids."""
    settings(client, auth)
    ids = checkpoints(client, auth, "m", list(starts))
    for version in starts:
        promote(client, auth, "m", ids[version])
    date_history(app, list(starts.values()))
    return ids


def calls(
    day: date, version: str, refused: int, model: str = "m", n: int = CALLS, **extra: Any
) -> list[dict[str, Any]]:
    return [
        {
            "trace_id": f"{model}-{version}-{day}-{k}",
            "timestamp": at(day, k),
            "model": model,
            "checkpoint_version": version,
            "refusal": k < refused,
            **extra,
        }
        for k in range(n)
    ]


def alerts(client: TestClient, auth: Headers, **params: Any) -> list[dict[str, Any]]:
    r = client.get("/api/v1/alerts", params={"limit": 200, **params}, headers=auth)
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def sent_an_hour_ago(app: FastAPI, project: str) -> None:
    """Restamp the project's stored events and ratings an hour earlier, in the order they
    came: sent well before a day judged now, not within JUDGED_AS_OF_MARGIN of it."""
    with app.state.sessionmaker() as session:
        project_id = session.scalar(select(Project.id).where(Project.name == project))
        for table, stamp, key in (
            (Event, Event.received_at, (Event.trace_id, Event.span_id)),
            (Feedback, Feedback.created_at, (Feedback.trace_id,)),
        ):
            rows = session.execute(select(stamp, *key).where(table.project_id == project_id)).all()
            for at, *ids in rows:
                session.execute(
                    update(table)
                    .where(table.project_id == project_id)
                    .where(*(column == value for column, value in zip(key, ids, strict=True)))
                    .values({stamp.key: at - timedelta(hours=1)})
                )
        session.commit()
