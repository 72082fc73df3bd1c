"""What a canary counts of feedback: one user's rating of a trace, once, as the drift rollup
counts it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from tests.canaries.support import (
    MODEL,
    candidate_and_champion,
    hours_ago,
    send,
    start_canary,
)

Headers = dict[str, str]


def test_a_traces_feedback_counts_once_however_many_calls_it_made(
    client: TestClient, auth: Headers
) -> None:
    """Both checkpoints leave a quarter of their rated traces thumbs-down. The candidate's
    rated-down traces are agent sessions of six calls, each call carrying the trace's rating:
    counted per call that read 150 of 225 (67%) against 25%, and a canary could roll back a
    checkpoint users like as much. Counted once per trace, as the drift rollup does, both arms
    judge 100 traces."""
    ids = candidate_and_champion(client, auth)
    canary = start_canary(
        client,
        auth,
        ids["v2"],
        start=hours_ago(30).isoformat(),
        signals=["thumbs_down_rate"],
        comparisons=["served"],
    )
    since, window = hours_ago(28), timedelta(hours=24)

    def rated(version: str, calls_when_down: int) -> Iterator[dict[str, Any]]:
        for trace in range(100):
            down = trace % 4 == 0
            for call in range(calls_when_down if down else 1):
                yield {
                    "trace_id": f"{version}-{trace}",
                    "span_id": f"call-{call}",
                    "timestamp": (since + window * (trace / 100)).isoformat(),
                    "model": MODEL,
                    "checkpoint_version": version,
                    "feedback": "down" if down else "up",
                }

    send(client, auth, rated("v1", 1), rated("v2", 6))
    decided = client.post(f"/api/v1/canaries/{canary['id']}/evaluate", headers=auth).json()
    [everyone] = [
        c
        for c in decided["evidence"]["comparisons"]
        if c["signal"] == "thumbs_down_rate" and c["cohort"]["dimension"] == "all"
    ]
    assert everyone["candidate"] == {"events": 100, "with_signal": 25, "rate": 0.25}
    assert everyone["champion"] == {"events": 100, "with_signal": 25, "rate": 0.25}
    assert decided["decision"] != "rollback"
