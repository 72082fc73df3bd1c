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


def thumbs_down_canary(client: TestClient, auth: Headers) -> dict[str, Any]:
    """A served canary of v2 on thumbs-down alone, started 30 hours ago."""
    ids = candidate_and_champion(client, auth)
    return start_canary(
        client,
        auth,
        ids["v2"],
        start=hours_ago(30).isoformat(),
        signals=["thumbs_down_rate"],
        comparisons=["served"],
    )


def evaluate_thumbs_down(
    client: TestClient, auth: Headers, canary: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the evaluation, its whole-population thumbs-down comparison)."""
    decided = client.post(f"/api/v1/canaries/{canary['id']}/evaluate", headers=auth).json()
    [everyone] = [
        c
        for c in decided["evidence"]["comparisons"]
        if c["signal"] == "thumbs_down_rate" and c["cohort"]["dimension"] == "all"
    ]
    return decided, everyone


def test_a_traces_feedback_counts_once_however_many_calls_it_made(
    client: TestClient, auth: Headers
) -> None:
    """Both checkpoints leave a quarter of their rated traces thumbs-down. The candidate's
    rated-down traces are agent sessions of six calls, each call carrying the trace's rating:
    counted per call that read 150 of 225 (67%) against 25%, and a canary could roll back a
    checkpoint users like as much. Counted once per trace, as the drift rollup does, both arms
    judge 100 traces."""
    canary = thumbs_down_canary(client, auth)
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
    decided, everyone = evaluate_thumbs_down(client, auth, canary)
    assert everyone["candidate"] == {"events": 100, "with_signal": 25, "rate": 0.25}
    assert everyone["champion"] == {"events": 100, "with_signal": 25, "rate": 0.25}
    assert decided["decision"] != "rollback"


def test_a_trace_both_checkpoints_served_counts_its_rating_on_the_arm_that_answered_last(
    client: TestClient, auth: Headers
) -> None:
    """Each checkpoint serves 100 one-call traces, a quarter rated down; 40 conversations,
    rated down, were served by both (per-call routing): 20 went champion then candidate, 20
    candidate then champion. Counted on every arm that served a call, each of the 40 weighed
    on both arms (140 traces an arm, 65 down). A trace is one rating, counted once, on the
    arm of its last rated call: the answer the user rated after."""
    canary = thumbs_down_canary(client, auth)
    since, window = hours_ago(28), timedelta(hours=24)

    def call(trace: str, span: str, version: str, at: float, down: bool) -> dict[str, Any]:
        return {
            "trace_id": trace,
            "span_id": span,
            "timestamp": (since + window * at).isoformat(),
            "model": MODEL,
            "checkpoint_version": version,
            "feedback": "down" if down else "up",
        }

    def alone(version: str) -> Iterator[dict[str, Any]]:
        for trace in range(100):
            yield call(f"{version}-{trace}", "call-0", version, trace / 200, trace % 4 == 0)

    def mixed() -> Iterator[dict[str, Any]]:
        for trace in range(40):
            first, last = ("v1", "v2") if trace % 2 else ("v2", "v1")
            at = 0.5 + trace / 100
            yield call(f"mixed-{trace}", "call-0", first, at, True)
            yield call(f"mixed-{trace}", "call-1", last, at + 0.001, True)

    send(client, auth, alone("v1"), alone("v2"), mixed())
    _, everyone = evaluate_thumbs_down(client, auth, canary)
    assert everyone["candidate"] == {"events": 120, "with_signal": 45, "rate": 0.375}
    assert everyone["champion"] == {"events": 120, "with_signal": 45, "rate": 0.375}


def test_a_call_made_after_the_rating_does_not_take_it_to_its_arm(
    client: TestClient, auth: Headers
) -> None:
    """Each checkpoint serves 100 one-call traces, a quarter rated down. In 40 more
    conversations the champion answers, the user rates the answer down, and the conversation
    goes on: the candidate answers a next call (per-call routing), sent after the rating.
    Before, ingest stamped the stored rating on that later call, which became the trace's
    "last rated call": the candidate took 40 ratings about the champion's answers (140
    traces, 65 down, against the champion's 100 and 25) and looked worse. The rating is
    about the answers the user had seen: a call stored after the rating and made after the
    trace's last rated call does not take it; one made before it (a late delivery) does."""
    canary = thumbs_down_canary(client, auth)
    since, window = hours_ago(28), timedelta(hours=24)

    def call(trace: str, span: str, version: str, at: float, down: bool | None) -> dict[str, Any]:
        sent = {
            "trace_id": trace,
            "span_id": span,
            "timestamp": (since + window * at).isoformat(),
            "model": MODEL,
            "checkpoint_version": version,
        }
        return sent | ({} if down is None else {"feedback": "down" if down else "up"})

    def alone(version: str) -> Iterator[dict[str, Any]]:
        for trace in range(100):
            yield call(f"{version}-{trace}", "call-0", version, trace / 200, trace % 4 == 0)

    conversations = [f"went-on-{trace}" for trace in range(40)]
    send(
        client,
        auth,
        alone("v1"),
        alone("v2"),
        (call(t, "call-0", "v1", 0.5 + i / 100, None) for i, t in enumerate(conversations)),
    )
    for trace in conversations:
        rated = client.post(
            "/api/v1/feedback", json={"trace_id": trace, "value": "down"}, headers=auth
        )
        assert rated.status_code == 200 and rated.json()["events_updated"] == 1, rated.text
    send(
        client,
        auth,
        # The conversation goes on, on the candidate, after the rating.
        (call(t, "call-1", "v2", 0.5 + i / 100 + 0.002, None) for i, t in enumerate(conversations)),
        # A call of the first ten made before the rated one, delivered late: it was seen.
        (
            call(t, "early", "v2", 0.5 + i / 100 - 0.002, None)
            for i, t in enumerate(conversations[:10])
        ),
    )
    _, everyone = evaluate_thumbs_down(client, auth, canary)
    assert everyone["candidate"] == {"events": 100, "with_signal": 25, "rate": 0.25}
    assert everyone["champion"] == {"events": 140, "with_signal": 65, "rate": 65 / 140}
    trace = client.get(f"/api/v1/traces/{conversations[0]}", headers=auth).json()
    stamped = {e["span_id"]: e["feedback"] for e in trace["events"]}
    assert stamped == {"call-0": "down", "call-1": None, "early": "down"}
