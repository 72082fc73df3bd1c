"""Constructed traffic for canary tests, sent through the public API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from app.core.db import utcnow
from tests.drift.traffic import post_events

Headers = dict[str, str]
MODEL = "support-bot"
Flags = Callable[[int], dict[str, Any]]


def candidate_and_champion(client: TestClient, auth: Headers, model: str = MODEL) -> dict[str, int]:
    """v1 is the champion, v2 the candidate."""
    ids = {}
    for version in ("v1", "v2", "v3"):
        created = client.post(
            "/api/v1/checkpoints", json={"model": model, "version": version}, headers=auth
        )
        assert created.status_code == 201, created.text
        ids[version] = created.json()["id"]
    client.post(
        f"/api/v1/models/{model}/promote",
        json={"checkpoint_id": ids["v1"], "reason": "first champion"},
        headers=auth,
    ).raise_for_status()
    return ids


def start_canary(
    client: TestClient, auth: Headers, checkpoint_id: int, model: str = MODEL, **fields: Any
) -> dict[str, Any]:
    response = client.post(
        f"/api/v1/models/{model}/canaries",
        json={"checkpoint_id": checkpoint_id, **fields},
        headers=auth,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def hours_ago(hours: float) -> datetime:
    return utcnow() - timedelta(hours=hours)


def served(
    version: str,
    count: int,
    flags: Flags,
    since: datetime,
    span: timedelta,
    prefix: str | None = None,
    model: str = MODEL,
    cohort: Callable[[int], dict[str, str]] | None = None,
) -> Iterator[dict[str, Any]]:
    """`count` served events of `version`, evenly over [since, since + span), with the
    flags `flags(i)` of the i-th; trace ids `<prefix>-<i>`."""
    for i in range(count):
        yield {
            "trace_id": f"{prefix or version}-{i}",
            "timestamp": (since + span * (i / count)).isoformat(),
            "model": model,
            "checkpoint_version": version,
            "cohort": (cohort or _default_cohort)(i),
            **flags(i),
        }


def shadows(
    version: str,
    of_prefix: str,
    count: int,
    flags: Flags,
    since: datetime,
    span: timedelta,
    model: str = MODEL,
) -> Iterator[dict[str, Any]]:
    """The candidate's shadow answers to the served traces `<of_prefix>-<i>`, in the same
    trace (another span)."""
    for i in range(count):
        yield {
            "trace_id": f"{of_prefix}-{i}",
            "span_id": "shadow",
            "timestamp": (since + span * (i / count)).isoformat(),
            "model": model,
            "checkpoint_version": version,
            "shadow_of": f"{of_prefix}-{i}",
            **flags(i),
        }


def every(period: int, **flag: bool) -> Flags:
    """Flags set on every `period`-th event (i % period == 0), the opposite otherwise:
    an exact rate of 1/period."""

    def flags(i: int) -> dict[str, Any]:
        hit = i % period == 0
        return {name: value if hit else not value for name, value in flag.items()}

    return flags


def _default_cohort(i: int) -> dict[str, str]:
    return {"route": "/chat", "user_segment": "free" if i % 2 else "pro", "region": "eu"}


def send(client: TestClient, auth: Headers, *streams: Iterator[dict[str, Any]]) -> None:
    post_events(client, auth, [event for stream in streams for event in stream])
