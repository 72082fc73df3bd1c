"""Which reference a day is judged against when the champion changes back, or when an old day
is run again: references move only with the newest day, and a returning champion gets its own
reference back."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core.db import today_utc
from app.models import DriftJudgement, DriftReference
from tests.drift.champions import (
    calls,
    checkpoints,
    date_history,
    days_ending_day_before_yesterday,
    promote,
    rollback,
    settings,
)
from tests.drift.traffic import post_events, run_drift

Headers = dict[str, str]


def story(
    app: FastAPI, client: TestClient, auth: Headers, champions: list[tuple[str, date]]
) -> dict[str, int]:
    """Checkpoints A and B of model m and the champion history `champions` (version, from
    day), with 14-day references and no warm-up."""
    settings(client, auth)
    ids = checkpoints(client, auth, "m", ["A", "B"])
    for index, (version, _) in enumerate(champions):
        if index and champions[index - 1][0] == "B" and version == "A":
            rollback(client, auth, "m", "A")
        else:
            promote(client, auth, "m", ids[version])
    date_history(app, [start for _, start in champions])
    return ids


def references(app: FastAPI) -> list[tuple[int, int, str, str]]:
    with app.state.sessionmaker() as session:
        return [
            (r.version, r.checkpoint_id, r.status, r.trigger)
            for r in session.scalars(select(DriftReference).order_by(DriftReference.version))
        ]


def refusal_alerts(client: TestClient, auth: Headers) -> list[dict[str, Any]]:
    params = {"model": "m", "signal": "refusal_rate"}
    return list(client.get("/api/v1/alerts", params=params, headers=auth).json()["items"])


def a_then_b_then_a(
    app: FastAPI, client: TestClient, auth: Headers, days: int, b_from: int, a_again: int
) -> tuple[list[date], dict[str, int]]:
    """`days` days ending the day before yesterday: A (refusing 5%, its normal) until day
    `b_from`, B (2%) until day `a_again`, A again after; the traffic sent, nothing run."""
    first = today_utc() - timedelta(days=days + 1)
    day = [first + timedelta(days=i) for i in range(days)]
    ids = story(
        app,
        client,
        auth,
        [("A", day[0] - timedelta(days=1)), ("B", day[b_from]), ("A", day[a_again])],
    )
    served_by_b = range(b_from, a_again)
    post_events(
        client,
        auth,
        [
            event
            for i in range(days)
            for event in calls(
                day[i], "B" if i in served_by_b else "A", 10 if i in served_by_b else 25
            )
        ],
    )
    return day, ids


def test_rerunning_an_old_day_keeps_the_references_and_the_open_alert(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """A from day 0, B from day 16; from day 30 B refuses 6.4% instead of 5% for good (1.35
    predictive SD a day: the CUSUM holds the alert open). A late event makes the team rerun
    day 15, A's last: it must neither freeze A again nor restart B's CUSUM."""
    first = today_utc() - timedelta(days=52)
    day = [first + timedelta(days=i) for i in range(50)]
    story(app, client, auth, [("A", day[0] - timedelta(days=1)), ("B", day[16])])
    post_events(
        client,
        auth,
        [
            e
            for i in range(50)
            for e in calls(day[i], "A" if i < 16 else "B", 32 if i >= 30 else 25)
        ],
    )
    run_drift(client, auth, day[46], 47)
    assert [a["status"] for a in refusal_alerts(client, auth)] == ["open"]
    before = references(app)
    with app.state.sessionmaker() as session:
        judged_before = session.scalar(
            select(DriftJudgement.reference_version).where(
                DriftJudgement.day == day[15], DriftJudgement.signal == "refusal_rate"
            )
        )
    run_drift(client, auth, day[15])  # a late event: day 15 again
    for i in (47, 48, 49):  # the shift goes on
        run_drift(client, auth, day[i])
    assert references(app) == before
    with app.state.sessionmaker() as session:
        again = session.scalar(
            select(DriftJudgement.reference_version).where(
                DriftJudgement.day == day[15], DriftJudgement.signal == "refusal_rate"
            )
        )
    assert again == judged_before
    assert [a["status"] for a in refusal_alerts(client, auth)] == ["open"]


def test_a_champion_rolled_back_to_is_judged_against_its_own_reference(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """A refuses 5% (its normal), B 2%. After the rollback to A, judging A's normal traffic
    against B's reference would alert for good (and keep A's days out of any new reference)."""
    day, ids = a_then_b_then_a(app, client, auth, 46, 16, 36)
    run_drift(client, auth, day[45], 46)
    assert refusal_alerts(client, auth) == []
    frozen = references(app)
    assert [(checkpoint, trigger) for _, checkpoint, _, trigger in frozen] == [
        (ids["A"], "warmup"),
        (ids["B"], "warmup"),
        (ids["A"], "champion_returned"),
    ]
    with app.state.sessionmaker() as session:
        restored, original = session.scalars(
            select(DriftReference)
            .where(DriftReference.checkpoint_id == ids["A"])
            .order_by(DriftReference.version)
        ).all()[::-1]
    assert (restored.days, restored.stats) == (original.days, original.stats)


def test_a_day_never_judged_and_filled_later_is_judged_as_it_would_have_been_in_order(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """A, then B from day 16, A again from day 36. Day 33 (B's) was missed and is run after
    days 34-45: it is judged against B's reference, which judged day 32, not against A's
    restored copy (whose window ended before day 33 too)."""
    day, ids = a_then_b_then_a(app, client, auth, 46, 16, 36)
    run_drift(client, auth, day[32], 33)
    run_drift(client, auth, day[45], 12)  # days 34 to 45
    run_drift(client, auth, day[33])  # the missed day
    with app.state.sessionmaker() as session:
        judged = session.execute(
            select(DriftJudgement.checkpoint_id, DriftJudgement.reference_version).where(
                DriftJudgement.day == day[33],
                DriftJudgement.signal == "refusal_rate",
                DriftJudgement.dimension == "all",
            )
        ).one()
        b_reference = session.scalar(
            select(DriftReference.version).where(DriftReference.checkpoint_id == ids["B"])
        )
    assert tuple(judged) == (ids["B"], b_reference)


def test_a_returning_champions_copied_reference_stands_in_until_its_own_window_is_full(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """A served 8 days before B replaced it (frozen from those 8 at the change), B 22 days,
    then A again: A's 8-day copy judges it until A has 14 known-good days of its new period,
    which are then frozen as for any champion."""
    day, ids = a_then_b_then_a(app, client, auth, 50, 8, 30)
    run_drift(client, auth, day[49], 50)
    assert [(checkpoint, trigger) for _, checkpoint, _, trigger in references(app)] == [
        (ids["A"], "champion_change"),
        (ids["B"], "warmup"),
        (ids["A"], "champion_returned"),
        (ids["A"], "warmup"),
    ]


def test_without_champion_history_the_most_called_checkpoint_is_the_reference(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """No promotion on record: the reference is the checkpoint with the most calls. A's 200
    calls a day report five fields each and B's 400 calls only refusal; a call counted once
    per field it reports would make A the most served (1,000 a day against 400)."""
    settings(client, auth)
    ids = checkpoints(client, auth, "m", ["A", "B"])
    first = today_utc() - timedelta(days=16)
    days = [first + timedelta(days=i) for i in range(15)]  # the 14-day window freezes
    a_fields = {"eval_passed": True, "fallback": False, "should_refuse": False}
    post_events(
        client,
        auth,
        [
            *(
                {**e, **a_fields, "trace_id": f"A{e['trace_id']}", "latency_ms": 300.0}
                for d in days
                for e in calls(d, "A", 10)[:200]
            ),
            *(e for d in days for e in calls(d, "B", 20)[:400]),
        ],
    )
    run_drift(client, auth, days[-1], len(days))
    assert {checkpoint for _, checkpoint, _, _ in references(app)} == {ids["B"]}


def test_a_day_marked_as_incident_does_not_enter_a_reference_frozen_after_the_mark(
    app: FastAPI, client: TestClient, auth: dict[str, str]
) -> None:
    """A is champion from day 0 (14-day reference, no warm-up: days 0-13 frozen on day 14);
    day 3 was an outage (refusals 30%). The team marks day 3 as an incident on day 20. B is
    promoted on day 16 (its reference frozen on day 30) and rolled back to A on day 33: A's
    reference frozen again then (a copy used to hold day 3) is re-summarised without it."""
    day = days_ending_day_before_yesterday(38)
    settings(client, auth)
    ids = checkpoints(client, auth, "m", ["A", "B"])
    promote(client, auth, "m", ids["A"])
    promote(client, auth, "m", ids["B"])
    rollback(client, auth, "m", "A")
    date_history(app, [day[0], day[16], day[33]])
    events = []
    for i in range(38):
        version = "B" if 16 <= i < 33 else "A"
        events += calls(day[i], version, 150 if i == 3 else (10 if version == "B" else 25))
    post_events(client, auth, events)
    run_drift(client, auth, day[19], 20)
    r = client.post(
        "/api/v1/incident-days",
        json={"model": "m", "day": day[3].isoformat(), "note": "outage"},
        headers=auth,
    )
    assert r.status_code == 201, r.text
    run_drift(client, auth, day[37], 18)  # days 20..37
    with app.state.sessionmaker() as session:
        active = session.scalar(select(DriftReference).where(DriftReference.status == "active"))
        assert active is not None
        created_after_mark = active.version
        assert active.checkpoint_id == ids["A"]
        trigger, taken = active.trigger, active.days
    assert created_after_mark >= 3 and trigger == "champion_returned"
    assert day[3].isoformat() not in taken and len(taken) == 13, (trigger, taken)


def test_a_shift_accepted_as_the_new_normal_is_rebaselined_and_stops_paging(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """A refuses 5% (reference days 0-13); B, promoted on day 16, refuses 10% by design (a
    stricter safety policy). Every day B serves is an alert day, so B has no known-good day
    and a plain rebaseline is refused; accepting the alert days freezes B's days (incident
    days still out) and, judged against them, the alert recovers and nothing reopens."""
    day = days_ending_day_before_yesterday(36)
    settings(client, auth)
    ids = checkpoints(client, auth, "m", ["A", "B"])
    promote(client, auth, "m", ids["A"])
    promote(client, auth, "m", ids["B"])
    date_history(app, [day[0], day[16]])
    post_events(
        client,
        auth,
        [e for i in range(36) for e in calls(day[i], "A" if i < 16 else "B", 25 if i < 16 else 50)],
    )
    run_drift(client, auth, day[29], 30)
    assert [a["status"] for a in refusal_alerts(client, auth)] == ["open"]
    incident = {"model": "m", "day": day[20].isoformat(), "note": "upstream outage"}
    assert client.post("/api/v1/incident-days", json=incident, headers=auth).status_code == 201
    body: dict[str, Any] = {"reason": "B's refusals are intended"}
    plain = client.post("/api/v1/models/m/rebaseline", json=body, headers=auth)
    assert plain.status_code == 422 and "0 known-good day(s)" in plain.json()["detail"]
    accepted = client.post(
        "/api/v1/models/m/rebaseline", json={**body, "accept_alert_days": True}, headers=auth
    )
    assert accepted.status_code == 201, accepted.text
    reference = accepted.json()
    assert reference["checkpoint_id"] == ids["B"] and reference["trigger"] == "rebaseline"
    assert day[20].isoformat() not in reference["days"]
    assert reference["first_day"] >= day[16].isoformat()
    for i in range(30, 36):
        run_drift(client, auth, day[i])
    assert [(a["status"], a["resolution"]) for a in refusal_alerts(client, auth)] == [
        ("resolved", "recovered")
    ]
