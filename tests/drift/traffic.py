"""Synthetic production traffic, sent through the public ingest API.

Rough like real traffic, not binomial: each segment's daily refusal and eval-failure rates
wobble from day to day (logit-normal, relative SD ``wobble``), and a ``Shift`` multiplies a
segment's rate from a start day, as a step or a linear ramp, until an optional end day. The
day's randomness comes from a per (seed, day, segment) stream, so adding a shift to one
segment leaves every other segment's events unchanged.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.drift import job

Headers = dict[str, str]
BATCH = 5000
SHOULD_REFUSE_SHARE = 0.05


def post_events(client: TestClient, auth: Headers, events: Sequence[dict[str, Any]]) -> None:
    """Every event through POST /api/v1/events; all must be accepted."""
    for start in range(0, len(events), BATCH):
        chunk = list(events[start : start + BATCH])
        response = client.post("/api/v1/events", json={"events": chunk}, headers=auth)
        assert response.status_code == 202, response.text
        assert response.json()["rejected"] == [], response.json()["rejected"][:3]


def run_drift(client: TestClient, auth: Headers, last_day: date, backfill: int = 1) -> Any:
    """POST /api/v1/drift/run for `backfill` days ending with `last_day`; must succeed."""
    response = client.post(
        "/api/v1/drift/run",
        json={"date": last_day.isoformat(), "backfill": backfill},
        headers=auth,
    )
    assert response.status_code == 200, response.text
    return response.json()


def fail_rollup_on(
    monkeypatch: pytest.MonkeyPatch, *days: date, error: Exception | None = None
) -> None:
    """The daily job's rollup of `days` (of every day, when none are given) raises `error`
    (by default a RuntimeError); the other days compute as ever."""
    compute_day = job.compute_day

    def failing(session: Any, project_id: int, when: date) -> Any:
        if not days or when in days:
            raise error or RuntimeError("injected rollup failure")
        return compute_day(session, project_id, when)

    monkeypatch.setattr(job, "compute_day", failing)


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
    eval_fail_rate: float = 0.10
    under_refusal_rate: float = 0.02


@dataclass(frozen=True)
class Shift:
    """From `start` the segment's `signal` ("refusal", "eval_fail", "under_refusal" or
    "latency") is multiplied by a factor growing linearly from 1 to `multiplier` over
    `ramp_days` (0: a step), until `end` (exclusive; None: for good)."""

    segment: str
    signal: str
    start: date
    multiplier: float
    ramp_days: int = 0
    end: date | None = None

    def factor(self, day: date) -> float:
        if day < self.start or (self.end is not None and day >= self.end):
            return 1.0
        if self.ramp_days <= 0:
            return self.multiplier
        progress = min(1.0, ((day - self.start).days + 1) / self.ramp_days)
        return 1.0 + (self.multiplier - 1.0) * progress


def wobbled(rate: float, wobble: float, rng: random.Random) -> float:
    """The day's true rate: logit-normal around `rate` with relative SD ~`wobble`."""
    if wobble <= 0 or rate <= 0:
        return rate
    logit = math.log(rate / (1 - rate)) + rng.gauss(0.0, wobble / (1 - rate))
    return 1 / (1 + math.exp(-logit))


def day_of_traffic(
    rng: random.Random,
    day: date,
    model: str,
    version: str,
    segments: Sequence[Segment],
    refusal_override: dict[str, float] | None = None,
    *,
    wobble: float = 0.0,
    shifts: Sequence[Shift] = (),
    seed: int = 0,
) -> Iterator[dict[str, Any]]:
    """One day of events: per segment, wobbled rates times any shift in force that day.

    `rng` draws timestamps only; the rates and outcomes come from a stream per (seed, day,
    segment). Five percent of calls should be refused (under-refusal is their answered
    share); latency is log-normal around 800 ms, tokens around 300."""
    for segment in segments:
        stream = random.Random(f"{seed}-{day.isoformat()}-{segment.name}")
        factor = {
            s.signal: s.factor(day) for s in shifts if s.segment == segment.name and s.factor(day)
        }
        refusal = (refusal_override or {}).get(segment.name, segment.refusal_rate)
        refusal = min(0.95, wobbled(refusal, wobble, stream) * factor.get("refusal", 1.0))
        fail = min(0.95, wobbled(segment.eval_fail_rate, wobble, stream))
        fail = min(0.95, fail * factor.get("eval_fail", 1.0))
        under = wobbled(segment.under_refusal_rate, wobble, stream)
        under = min(0.95, under * factor.get("under_refusal", 1.0))
        slow = factor.get("latency", 1.0)
        for i in range(segment.per_day):
            risky = stream.random() < SHOULD_REFUSE_SHARE
            refused = stream.random() >= under if risky else stream.random() < refusal
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
                "eval_passed": stream.random() > fail,
                "fallback": stream.random() < 0.03,
                "refusal": refused,
                "should_refuse": risky,
                "latency_ms": round(800 * slow * math.exp(stream.gauss(0.0, 0.5)), 1),
                "input_tokens": int(200 * math.exp(stream.gauss(0.0, 0.4))),
                "output_tokens": int(100 * math.exp(stream.gauss(0.0, 0.6))),
            }
            if stream.random() < 0.3:
                event["feedback"] = "down" if stream.random() < 0.2 else "up"
            yield event
