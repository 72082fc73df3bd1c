"""Synthetic production traffic, sent through the public ingest API."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from fastapi.testclient import TestClient

Headers = dict[str, str]
BATCH = 5000


def post_events(client: TestClient, auth: Headers, events: Sequence[dict[str, Any]]) -> None:
    """Every event through POST /api/v1/events; all must be accepted."""
    for start in range(0, len(events), BATCH):
        chunk = list(events[start : start + BATCH])
        response = client.post("/api/v1/events", json={"events": chunk}, headers=auth)
        assert response.status_code == 202, response.text
        assert response.json()["rejected"] == [], response.json()["rejected"][:3]


def at(day: date, seconds: int) -> str:
    moment = datetime.combine(day, time.min, tzinfo=UTC) + timedelta(seconds=seconds % 86400)
    return moment.isoformat()


@dataclass(frozen=True)
class Segment:
    """A population of users: its size per day, where it lives and how often it is refused."""

    name: str
    per_day: int
    routes: tuple[str, ...]
    regions: tuple[str, ...]
    refusal_rate: float


def day_of_traffic(
    rng: random.Random,
    day: date,
    model: str,
    version: str,
    segments: Sequence[Segment],
    refusal_override: dict[str, float] | None = None,
) -> Iterator[dict[str, Any]]:
    """One day of events: stable eval, fallback and feedback rates, refusal per segment."""
    for segment in segments:
        refusal = (refusal_override or {}).get(segment.name, segment.refusal_rate)
        for i in range(segment.per_day):
            event: dict[str, Any] = {
                "trace_id": f"{day.isoformat()}-{segment.name}-{i}",
                "timestamp": at(day, rng.randrange(86400)),
                "model": model,
                "checkpoint_version": version,
                "cohort": {
                    "route": segment.routes[i % len(segment.routes)],
                    "prompt_version": "p3",
                    "user_segment": segment.name,
                    "region": segment.regions[i % len(segment.regions)],
                },
                "eval_passed": rng.random() > 0.10,
                "fallback": rng.random() < 0.03,
                "refusal": rng.random() < refusal,
                "should_refuse": False,
            }
            if rng.random() < 0.3:
                event["feedback"] = "down" if rng.random() < 0.2 else "up"
            yield event
