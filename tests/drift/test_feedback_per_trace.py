"""A trace's feedback is one user's one rating: thumbs_down_rate should count it once, however
many model calls (spans) the trace made: the daily scan counts it on one carrier call per
checkpoint, which ingest and POST /feedback keep (app/ingest/service._place_carriers)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from app.core.db import today_utc
from tests.drift.champions import checkpoints
from tests.drift.traffic import at, post_events, run_drift

Headers = dict[str, str]


def thumbs_down_rows(client: TestClient, auth: Headers) -> dict[tuple[str, str], dict[str, Any]]:
    items = client.get(
        "/api/v1/signals",
        params={"model": "m", "signal": "thumbs_down_rate", "limit": 100},
        headers=auth,
    ).json()["items"]
    return {(r["dimension"], r["value"]): r for r in items}


def test_a_rated_trace_of_several_calls_counts_once_in_thumbs_down_rate(
    client: TestClient, auth: Headers
) -> None:
    """Before, the trace's feedback (copied onto each of its events) counted once per call:
    an agent trace of 6 calls rated down weighed six ratings, so the rate leaned to long
    traces and its denominator (the band's binomial n) was inflated, which narrows the band
    and pages on one unhappy user's long session."""
    checkpoints(client, auth, "m", ["v1"])
    day = today_utc() - timedelta(days=1)
    events: list[dict[str, Any]] = []
    for t in range(60):
        spans = 6 if t < 10 else 1  # ten long agent traces, fifty single calls
        for s in range(spans):
            event: dict[str, Any] = {
                "trace_id": f"trace-{t}",
                "span_id": f"s{s}",
                "timestamp": at(day, t * 600 + s),
                "model": "m",
                "checkpoint_version": "v1",
                "cohort": {"route": "/agent" if spans > 1 else "/chat"},
            }
            events.append(event)
    # A rating sent on the trace's third call only (no POST /feedback): it still counts once.
    for s in range(3):
        events.append(
            {
                "trace_id": "rated-late",
                "span_id": f"s{s}",
                "timestamp": at(day, 50_000 + s),
                "model": "m",
                "checkpoint_version": "v1",
                "cohort": {"route": "/mixed"},
                **({"feedback": "down"} if s == 2 else {}),
            }
        )
    post_events(client, auth, events)
    for t in range(40):  # feedback posted later, by trace: copied onto each of its events
        value = "down" if t < 10 else "up"
        r = client.post(
            "/api/v1/feedback", json={"trace_id": f"trace-{t}", "value": value}, headers=auth
        )
        assert r.is_success, r.text
    run_drift(client, auth, day)
    rows = thumbs_down_rows(client, auth)
    # 41 rated traces, 11 of them down.
    assert (rows["all", "all"]["numerator"], rows["all", "all"]["denominator"]) == (11, 41)
    assert (rows["route", "/mixed"]["numerator"], rows["route", "/mixed"]["denominator"]) == (1, 1)
    assert (rows["route", "/agent"]["numerator"], rows["route", "/agent"]["denominator"]) == (
        10,
        10,
    )
    assert (rows["route", "/chat"]["numerator"], rows["route", "/chat"]["denominator"]) == (0, 30)


def thumbs_down(client: TestClient, auth: Headers) -> dict[tuple[str, str, str], tuple[int, int]]:
    """(checkpoint version, dimension, value) -> (numerator, denominator) of the day's
    thumbs_down_rate rows."""
    items = client.get(
        "/api/v1/signals",
        params={"model": "m", "signal": "thumbs_down_rate", "limit": 100},
        headers=auth,
    ).json()["items"]
    return {
        (r["checkpoint_version"], r["dimension"], r["value"]): (
            int(r["numerator"]),
            r["denominator"],
        )
        for r in items
    }


def call(trace: str, span: str, seconds: int, route: str, **fields: Any) -> dict[str, Any]:
    """One call of model m, yesterday at `seconds` past midnight (on v1 unless told)."""
    return {
        "trace_id": trace,
        "span_id": span,
        "timestamp": at(today_utc() - timedelta(days=1), seconds),
        "model": "m",
        "checkpoint_version": "v1",
        "cohort": {"route": route},
        **fields,
    }


def rate(client: TestClient, auth: Headers, trace: str, value: str) -> None:
    r = client.post("/api/v1/feedback", json={"trace_id": trace, "value": value}, headers=auth)
    assert r.is_success, r.text


def judge_yesterday(
    client: TestClient, auth: Headers
) -> dict[tuple[str, str, str], tuple[int, int]]:
    run_drift(client, auth, today_utc() - timedelta(days=1))
    return thumbs_down(client, auth)


def test_a_changed_rating_still_counts_once(client: TestClient, auth: Headers) -> None:
    """Re-rating a trace (up, then down) rewrites its calls and its carrier's copy: one
    rating before and after, and it is the latest one."""
    checkpoints(client, auth, "m", ["v1"])
    post_events(client, auth, [call("t", f"s{s}", 100 + s, "/agent") for s in range(4)])
    rate(client, auth, "t", "up")
    assert judge_yesterday(client, auth)["v1", "all", "all"] == (0, 1)
    rate(client, auth, "t", "down")
    assert judge_yesterday(client, auth)["v1", "all", "all"] == (1, 1)


def test_a_rating_posted_before_its_calls_arrive_counts_once(
    client: TestClient, auth: Headers
) -> None:
    """Every call of a trace rated before any arrived takes the rating at ingest; the trace
    still counts once, and beside a trace rated after its calls."""
    checkpoints(client, auth, "m", ["v1"])
    rate(client, auth, "early", "down")
    events = [call("early", f"s{s}", 100 + s, "/agent") for s in range(5)]
    events += [call("later", f"s{s}", 200 + s, "/agent") for s in range(2)]
    post_events(client, auth, events)
    rate(client, auth, "later", "up")
    assert judge_yesterday(client, auth)["v1", "all", "all"] == (1, 2)


def test_a_rated_trace_whose_calls_arrive_in_two_batches_counts_once_on_its_last_rated_call(
    client: TestClient, auth: Headers
) -> None:
    """A trace rated before any of its calls arrived: every call takes the rating, in
    whichever batch it comes, so the trace counts once, on its latest call. Until 2026-12-01
    the calls of the first batch stood for the rating's time: a later batch's call made after
    them ("/after") took nothing, and the trace counted on "/last", where one batch of the
    same four calls counts it on "/after"."""
    checkpoints(client, auth, "m", ["v1"])
    rate(client, auth, "t", "down")
    post_events(client, auth, [call("t", "a", 3600, "/first"), call("t", "b", 7200, "/last")])
    post_events(client, auth, [call("t", "c", 1800, "/late"), call("t", "d", 10800, "/after")])
    rows = judge_yesterday(client, auth)
    assert rows["v1", "all", "all"] == (1, 1)
    assert rows["v1", "route", "/after"] == (1, 1)
    # No other call carries it: the day stores no thumbs-down row for those routes.
    assert not {("v1", "route", r) for r in ("/first", "/late", "/last")} & set(rows)


def test_a_trace_rated_before_its_calls_counts_alike_however_its_calls_are_batched(
    client: TestClient, auth: Headers
) -> None:
    """Two traces rated down before any call arrived, with the same three calls (v1, then v2,
    then v1 on another route), one delivered in one batch and one call by call (as an
    exporter flushing each span sends them). Which of them came after the rating is unknown
    for both, so both count alike: once on each checkpoint, on its latest call there. Before,
    the trace sent call by call counted on its first call's route and not at all on v2
    (v2: 1 rated trace of 2)."""
    checkpoints(client, auth, "m", ["v1", "v2"])

    def calls(trace: str) -> list[dict[str, Any]]:
        return [
            call(trace, "a", 3600, "/a"),
            call(trace, "b", 3660, "/a", checkpoint_version="v2"),
            call(trace, "c", 3720, "/b"),
        ]

    rate(client, auth, "together", "down")
    rate(client, auth, "one-by-one", "down")
    post_events(client, auth, calls("together"))
    for one in calls("one-by-one"):
        post_events(client, auth, [one])
    rows = judge_yesterday(client, auth)
    assert rows["v1", "all", "all"] == rows["v2", "all", "all"] == (2, 2)
    assert rows["v1", "route", "/b"] == rows["v2", "route", "/a"] == (2, 2)
    assert ("v1", "route", "/a") not in rows


def test_a_rating_again_bounds_the_calls_after_it_even_when_the_first_came_before_any(
    client: TestClient, auth: Headers
) -> None:
    """Rated before any call arrived, the trace's calls all take the rating; rated again once
    two of them are stored (the user changed their mind after those answers), a call made
    after them and delivered later takes nothing: the bound is the calls stored before the
    latest rating, as for any trace rated after its calls."""
    checkpoints(client, auth, "m", ["v1"])
    rate(client, auth, "t", "down")
    post_events(client, auth, [call("t", "a", 3600, "/a")])
    post_events(client, auth, [call("t", "b", 7200, "/b")])
    rate(client, auth, "t", "up")
    post_events(client, auth, [call("t", "c", 10800, "/c")])
    rows = judge_yesterday(client, auth)
    assert rows["v1", "all", "all"] == rows["v1", "route", "/b"] == (0, 1)
    assert ("v1", "route", "/c") not in rows


def test_a_shadow_answer_never_carries_its_traces_rating(client: TestClient, auth: Headers) -> None:
    """A shadow answer in the rated trace, later than its served calls and sent with a
    rating of its own, reached no user: the served calls carry the trace's one rating."""
    checkpoints(client, auth, "m", ["v1"])
    served = [call("t", f"s{s}", 100 + s, "/chat") for s in range(2)]
    shadow = call("t", "shadow", 500, "/chat", shadow_of="t", feedback="up")
    post_events(client, auth, [*served, shadow])
    rate(client, auth, "t", "down")
    assert judge_yesterday(client, auth)["v1", "all", "all"] == (1, 1)


def test_a_trace_two_checkpoints_served_counts_once_on_each_at_its_last_rated_call_there(
    client: TestClient, auth: Headers
) -> None:
    """Each checkpoint's rate is about its own answers: the trace counts once on each, in
    the cohort of its last rated call on that checkpoint. A call of v1 delivered late but made
    before the rating (and after v1's carrier) becomes v1's carrier."""
    checkpoints(client, auth, "m", ["v1", "v2"])
    post_events(
        client,
        auth,
        [
            call("x", "a", 3600, "/a"),
            call("x", "b", 7200, "/b", checkpoint_version="v2"),
            *(call("y", f"s{s}", 100 + s, "/a") for s in range(3)),
        ],
    )
    rate(client, auth, "x", "down")
    rate(client, auth, "y", "up")
    post_events(client, auth, [call("x", "c", 5400, "/c")])
    rows = judge_yesterday(client, auth)
    assert rows["v1", "all", "all"] == (1, 2)
    assert (rows["v1", "route", "/a"], rows["v1", "route", "/c"]) == ((0, 1), (1, 1))
    assert (rows["v2", "all", "all"], rows["v2", "route", "/b"]) == ((1, 1), (1, 1))


def test_the_same_rating_sent_again_is_not_a_new_rating(client: TestClient, auth: Headers) -> None:
    """Two traces rated down before their calls; one rating is sent again (a client's retry)
    between the two batches of calls. A retry is not a new rating: both traces count on their
    latest call. Before, the retry dated the rating after the first batch, so the second
    batch's call took nothing and that trace counted on its first call ("/a")."""
    checkpoints(client, auth, "m", ["v1"])
    for trace in ("once", "retried"):
        rate(client, auth, trace, "down")
    post_events(client, auth, [call(t, "a", 3600, "/a") for t in ("once", "retried")])
    rate(client, auth, "retried", "down")
    post_events(client, auth, [call(t, "b", 7200, "/b") for t in ("once", "retried")])
    rows = judge_yesterday(client, auth)
    assert rows["v1", "route", "/b"] == (2, 2)
    assert ("v1", "route", "/a") not in rows
