"""What a canary's cohort-mix check (`mix_differs`) counts: traces, each once, on the arm and
in the cohort of its first served call (docs/statistics.md §12.9). Routing and cohort are
decided per trace or session, so a trace's calls share both: counted per call, fair routing
of ten-call traces was flagged, and a truly worse candidate went undecided instead of rolled
back."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.canaries.evidence import mix_differs
from tests.canaries.support import MODEL, candidate_and_champion, hours_ago, send, start_canary

Headers = dict[str, str]
REGIONS = ("eu", "us", "apac", "latam")
REGION_MIX = np.array([0.4, 0.3, 0.2, 0.1])
SEGMENTS = ("free", "pro")


def calls(
    trace: str, versions: list[str], refused: list[bool], cohort: dict[str, str], at: datetime
) -> Iterator[dict[str, Any]]:
    """One trace's calls, a second apart, all in its cohort: call j served by versions[j]."""
    for j, (version, refusal) in enumerate(zip(versions, refused, strict=True)):
        yield {
            "trace_id": trace,
            "span_id": f"call-{j}",
            "timestamp": (at + timedelta(seconds=j)).isoformat(),
            "model": MODEL,
            "checkpoint_version": version,
            "cohort": cohort,
            "refusal": refusal,
        }


def evaluate(client: TestClient, auth: Headers, events: list[dict[str, Any]]) -> dict[str, Any]:
    """A refusal-rate canary of v2 against v1, started three hours ago, evaluated on
    `events` (sent after it started)."""
    ids = candidate_and_champion(client, auth)
    canary = start_canary(
        client, auth, ids["v2"], start=hours_ago(3).isoformat(), signals=["refusal_rate"]
    )
    send(client, auth, iter(events))
    decided: dict[str, Any] = client.post(
        f"/api/v1/canaries/{canary['id']}/evaluate", headers=auth
    ).json()
    return decided


@pytest.mark.parametrize("seed", range(8))
def test_a_worse_candidate_routed_per_trace_is_rolled_back_not_flagged(
    client: TestClient, auth: Headers, seed: int
) -> None:
    """The reviewer's case: 750 traces of 10 calls over two hours, each with one region and
    segment, 150 of them (drawn at random) served by v2, which refuses 40% of its calls
    against v1's 10%. Counted per call, G was about ten times its null size and
    `mix differs on region` (p ~ 1e-7) kept the canary from rolling back in some seeds;
    counted per trace, both arms are random samples of one mix of traces."""
    rng = np.random.default_rng(seed)
    since, span = hours_ago(2.5), timedelta(hours=2)
    candidate = set(rng.choice(750, size=150, replace=False).tolist())
    events: list[dict[str, Any]] = []
    for t in range(750):
        version, rate = ("v2", 0.4) if t in candidate else ("v1", 0.1)
        cohort = {
            "region": REGIONS[rng.choice(len(REGIONS), p=REGION_MIX)],
            "user_segment": SEGMENTS[int(rng.integers(2))],
        }
        refused = (rng.random(10) < rate).tolist()
        events += calls(f"t{t}", [version] * 10, refused, cohort, since + span * (t / 750))
    decided = evaluate(client, auth, events)
    assert decided["evidence"]["mix_differs"] == [], decided["evidence"]["mix_differs"]
    assert decided["decision"] == "rollback", decided["evidence"]["reasons"]


@pytest.mark.parametrize("seed", range(3))
def test_fair_per_call_routing_of_traces_whose_length_depends_on_the_cohort_is_not_flagged(
    client: TestClient, auth: Headers, seed: int
) -> None:
    """Every call routed to v2 at random (20%): an eu trace makes 12 calls, any other 2. The
    arm of a trace's first call is a coin toss, so counting each trace there keeps one mix on
    both arms. Counting a trace on every arm that served it would not: 93% of eu traces reach
    v2 against 36% of the others, and v2's traces would read 63% eu against v1's 41%."""
    rng = np.random.default_rng(100 + seed)
    since, span = hours_ago(2.5), timedelta(hours=2)
    events: list[dict[str, Any]] = []
    for t in range(400):
        region = REGIONS[rng.choice(len(REGIONS), p=REGION_MIX)]
        length = 12 if region == "eu" else 2
        versions = ["v2" if routed else "v1" for routed in rng.random(length) < 0.2]
        refused = (rng.random(length) < 0.1).tolist()
        cohort = {"region": region}
        events += calls(f"t{t}", versions, refused, cohort, since + span * (t / 400))
    decided = evaluate(client, auth, events)
    assert decided["evidence"]["mix_differs"] == [], decided["evidence"]["mix_differs"]
    assert not any(r.startswith("inconclusive: mix") for r in decided["evidence"]["reasons"])


def fair_canary(
    rng: np.random.Generator, per_call: bool
) -> tuple[dict[str, int], dict[str, int], dict[str, int], dict[str, int]]:
    """One fair canary of 750 traces, a 20% share: each trace's region from REGION_MIX, its
    length 1 to 20 calls with a mean rising with the region (clustered calls), each trace (or,
    `per_call`, each call) routed at random. Returns the traces per region on each arm
    (counted on the arm of the first call), then the calls per region on each arm."""
    regions = rng.choice(len(REGIONS), size=750, p=REGION_MIX)
    lengths = np.minimum(1 + rng.poisson(3 + 4 * regions), 20)
    if per_call:
        arms = [rng.random(n) < 0.2 for n in lengths]
    else:
        arms = [np.full(n, rng.random() < 0.2) for n in lengths]
    first = np.array([a[0] for a in arms])
    candidate_calls = np.array([a.sum() for a in arms])
    champion_calls = lengths - candidate_calls

    def per_region(weights: Any) -> dict[str, int]:
        counts = np.bincount(regions, weights=weights, minlength=len(REGIONS))
        return {REGIONS[v]: int(c) for v, c in enumerate(counts)}

    return (
        per_region(first),
        per_region(~first),
        per_region(candidate_calls),
        per_region(champion_calls),
    )


@pytest.mark.parametrize("per_call", [False, True])
def test_fair_canaries_counted_per_trace_are_never_flagged(per_call: bool) -> None:
    """2,000 fair canaries of clustered traces (1 to 20 calls, longer in some regions):
    counted once per trace on its first call's arm, none is flagged at p < 1e-6, whether
    routing draws per trace or per call. Routed per trace and counted per call, the same
    canaries were flagged 40% of the time (G about the mean calls a trace times chi-square):
    the clustering the test is about is there."""
    rng = np.random.default_rng(2026 + per_call)
    by_trace = by_call = 0
    for _ in range(2000):
        traces_c, traces_b, calls_c, calls_b = fair_canary(rng, per_call)
        by_trace += bool(mix_differs({"region": (traces_c, traces_b)}))
        by_call += bool(mix_differs({"region": (calls_c, calls_b)}))
    assert by_trace == 0
    if not per_call:
        assert by_call > 500  # 811 of 2,000 with this seed


def test_sessions_begun_before_the_window_do_not_flag_a_fair_canary(
    client: TestClient, auth: Headers
) -> None:
    """Sticky sessions already open when the canary's window starts stay on v1, whose
    traffic they were routed to; long sessions are the likeliest to straddle the start, and
    here the eu ones are long. 600 new one-call traces, half eu, routed 50% to v2 at random,
    plus 300 eu sessions begun half an hour before the start and calling every 15 minutes:
    counted on the arm of their first call in the window, they put v1's traces at about 75%
    eu against v2's 50% (`mix differs on region`, p ~ 1e-13: an equal candidate held back
    from promotion). Counted where they began, they are no trace of the window's routing."""
    rng = np.random.default_rng(7)
    events: list[dict[str, Any]] = []
    opened = hours_ago(3.5)
    for t in range(300):
        at = opened + timedelta(seconds=t)
        versions, refused = ["v1"] * 12, (rng.random(12) < 0.1).tolist()
        for j, event in enumerate(calls(f"s{t}", versions, refused, {"region": "eu"}, at)):
            event["timestamp"] = (at + timedelta(minutes=15 * j)).isoformat()
            events.append(event)
    since, span = hours_ago(2.9), timedelta(hours=2)
    for t in range(600):
        version = "v2" if rng.random() < 0.5 else "v1"
        cohort = {"region": "eu" if rng.random() < 0.5 else "us"}
        refused = [bool(rng.random() < 0.1)]
        events += calls(f"t{t}", [version], refused, cohort, since + span * (t / 600))
    decided = evaluate(client, auth, events)
    assert decided["evidence"]["mix_differs"] == [], decided["evidence"]["mix_differs"]
