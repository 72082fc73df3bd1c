"""A cohort that first serves after the reference froze is judged once it has its own window
of known-good days: its entries are added to the same reference version, so every running
CUSUM goes on (docs/statistics.md §8.1, §8.10). It used to go unjudged until a rebaseline or
a champion change, which restart every CUSUM: a regression on a new route never alerted."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from app.models import DriftJudgement, DriftReference
from app.stats.cusum import DEFAULT_HEADROOM, DEFAULT_K
from tests.drift.champions import (
    alerts,
    calls,
    champions_since,
    checkpoints,
    date_history,
    days_ending_day_before_yesterday,
    promote,
    rollback,
    settings,
)
from tests.drift.traffic import post_events, run_drift
from tests.web.test_pages import sign_in

Headers = dict[str, str]
WARMUP_DAYS = 2  # the project's warm-up, skipped by a new cohort too
C_FROM = 20  # route c first serves on day 20: its window is days 22-35, judged from day 36


def route_calls(day: date, version: str, route: str, fails: int, refused: int = 25) -> list[Any]:
    """500 calls of `route` that day: `fails` fail their evaluation, `refused` are refused."""
    return [
        {
            **event,
            "trace_id": f"{route}-{event['trace_id']}",
            "cohort": {"route": route},
            "eval_passed": k >= fails,
        }
        for k, event in enumerate(calls(day, version, refused))
    ]


def traffic(day: list[date], serving: dict[int, str]) -> list[Any]:
    """Routes a and b every day, c from day C_FROM, served by `serving[i]`. From day 30 route
    a refuses 6.4% instead of 5% (1.35 predictive SD a day: its CUSUM climbs slowly, well
    below its threshold by day 40); from day 36 route c fails its evaluation twice as often."""
    events = []
    for i, d in enumerate(day):
        version = serving[i]
        events += route_calls(d, version, "a", 25, 32 if i >= 30 else 25)
        events += route_calls(d, version, "b", 25)
        if i >= C_FROM:
            events += route_calls(d, version, "c", 50 if i >= 36 else 25)
    return events


def judgement(app: FastAPI, day: date, signal: str, route: str) -> DriftJudgement:
    with app.state.sessionmaker() as session:
        row = session.scalar(
            select(DriftJudgement).where(
                DriftJudgement.day == day,
                DriftJudgement.signal == signal,
                DriftJudgement.dimension == "route",
                DriftJudgement.value == route,
            )
        )
        assert row is not None
        return row


def frozen(app: FastAPI) -> list[tuple[int, int, dict[str, Any], list[tuple[Any, ...]]]]:
    """Every reference: version, checkpoint, entries and the cohorts added to it."""
    with app.state.sessionmaker() as session:
        refs = session.scalars(select(DriftReference).order_by(DriftReference.version)).all()
        return [
            (
                r.version,
                r.checkpoint_id,
                dict(r.stats),
                [(c.dimension, c.value, c.added_on, c.days) for c in r.cohorts_added],
            )
            for r in refs
        ]


def unjudged_notice(client: TestClient, day: list[date]) -> str:
    page = client.get("/drift", params={"model": "m", "from": day[0], "to": day[-1]})
    assert page.status_code == 200
    if 'data-testid="unjudged-cohorts"' not in page.text:
        return ""
    return page.text.split('data-testid="unjudged-cohorts"', 1)[1].split("</p>", 1)[0]


def test_a_cohort_that_appears_after_the_freeze_is_judged_from_its_own_window(
    app: FastAPI, client: TestClient, auth: Headers, admin_key: str
) -> None:
    """A's reference froze days 2-15 of routes a and b. Route c serves from day 20; after
    its 2-day warm-up, days 22-35 are its own 14 known-good days, added on day 36 to the same
    version, when c's eval-fail rate doubles: an alert opens on c, and route a's CUSUM,
    climbing since day 30, goes on from where it stood."""
    day = days_ending_day_before_yesterday(41)
    ids = champions_since(app, client, auth, {"A": day[0]})
    settings(client, auth, warmup_days=WARMUP_DAYS)
    post_events(client, auth, traffic(day, dict.fromkeys(range(41), "A")))
    run_drift(client, auth, day[30], 31)
    sign_in(client, admin_key)

    # Day 30 judged: c has 9 of its 14 known-good days (22-30), judged from day 36.
    notice = unjudged_notice(client, day)
    assert "route=c" in notice and "route=a" not in notice
    assert f"judged from {day[36]}" in notice and "9 of 14 known-good days" in notice
    [(version, checkpoint, stats, added)] = frozen(app)
    assert (checkpoint, added) == (ids["A"], [])

    run_drift(client, auth, day[40], 10)  # days 31-40, each the newest when run

    [(same_version, _, grown, added)] = frozen(app)
    assert same_version == version
    assert added == [("route", "c", day[36], [d.isoformat() for d in day[22:36]])]
    assert {k: v for k, v in grown.items() if k in stats} == stats  # no entry changed
    assert {k.split("|", 1)[1] for k in grown.keys() - stats.keys()} == {"route|c"}
    opened = alerts(client, auth, signal="eval_fail_rate", dimension="route")
    assert [(a["value"], a["status"]) for a in opened] == [("c", "open")]
    assert opened[0]["day"] >= day[36].isoformat()
    window = opened[0]["evidence"]["reference"]["cohort_window"]
    assert window == {
        "first_day": day[22].isoformat(),
        "last_day": day[35].isoformat(),
        "days": 14,
        "added_on": day[36].isoformat(),
    }
    assert "Cohort&#39;s own window" in client.get(f"/alerts/{opened[0]['id']}").text
    [listed] = client.get("/api/v1/models/m/references", headers=auth).json()["items"]
    assert [(c["value"], c["added_on"], len(c["days"])) for c in listed["cohorts_added"]] == [
        ("c", day[36].isoformat(), 14)
    ]
    assert "route=c" not in unjudged_notice(client, day)
    # Route a's CUSUM: the same version judged day 35 and day 36, and S went on from day 35.
    before, after = (judgement(app, day[i], "refusal_rate", "a") for i in (35, 36))
    assert before.reference_version == after.reference_version == version
    assert before.cusum > 0 and after.score is not None and after.cusum_h is not None
    cap = after.cusum_h + DEFAULT_HEADROOM
    assert after.cusum == min(cap, max(0.0, before.cusum + after.score - DEFAULT_K))
    # c's own statistic started at 0 on day 36.
    first = judgement(app, day[36], "eval_fail_rate", "c")
    assert first.score is not None and first.cusum == max(0.0, first.score - DEFAULT_K)

    # A rerun of day 30 (late events) is judged as before: c without entries, none added.
    run_drift(client, auth, day[30])
    assert frozen(app) == [(version, checkpoint, grown, added)]
    assert judgement(app, day[30], "eval_fail_rate", "c").score is None


def test_a_day_run_late_adds_no_entries_and_a_stand_in_reference_gains_none(
    app: FastAPI, client: TestClient, auth: Headers, admin_key: str
) -> None:
    """c's window under A is full for day 36, but day 36 is run only after B, promoted on
    day 37, had days 37-40 judged: only the newest day moves references, so the late day adds
    nothing; and A's reference, a stand-in for B, gains nothing from B's days either (B's own
    freeze will take c). The page says c waits for the champion's own reference."""
    day = days_ending_day_before_yesterday(41)
    settings(client, auth, warmup_days=WARMUP_DAYS)
    ids = checkpoints(client, auth, "m", ["A", "B"])
    promote(client, auth, "m", ids["A"])
    promote(client, auth, "m", ids["B"])
    date_history(app, [day[0], day[37]])
    serving = {i: "A" if i < 37 else "B" for i in range(41)}
    post_events(client, auth, traffic(day, serving))
    run_drift(client, auth, day[35], 36)
    run_drift(client, auth, day[40], 4)  # days 37-40
    before = frozen(app)
    run_drift(client, auth, day[36])  # the missed day
    assert frozen(app) == before
    [(_, checkpoint, stats, added)] = before
    assert checkpoint == ids["A"] and added == []
    assert not any("|route|c" in key for key in stats)
    sign_in(client, admin_key)
    notice = unjudged_notice(client, day)
    assert "route=c" in notice and "judged once the champion's own reference is frozen" in notice


def test_a_returning_champion_gets_its_added_cohorts_back(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """Route c, first serving on day 16 after A's reference froze (days 2-15), is added to it
    on day 32; B serves from day 33 (its own reference frozen on day 49), A again from day 50:
    A's reference comes back as a copy with c's entries, and with their record."""
    day = days_ending_day_before_yesterday(52)
    settings(client, auth, warmup_days=WARMUP_DAYS)
    ids = checkpoints(client, auth, "m", ["A", "B"])
    promote(client, auth, "m", ids["A"])
    promote(client, auth, "m", ids["B"])
    rollback(client, auth, "m", "A")
    date_history(app, [day[0], day[33], day[50]])
    events = []
    for i, d in enumerate(day):
        version = "B" if 33 <= i < 50 else "A"
        events += route_calls(d, version, "a", 25)
        if i >= 16:
            events += route_calls(d, version, "c", 25)
    post_events(client, auth, events)
    run_drift(client, auth, day[51], 52)
    window = [d.isoformat() for d in day[18:32]]
    references = frozen(app)
    assert [(checkpoint, added) for _, checkpoint, _, added in references] == [
        (ids["A"], [("route", "c", day[32], window)]),
        (ids["B"], []),
        (ids["A"], [("route", "c", day[32], window)]),
    ]
    assert references[2][2] == references[0][2]
    assert judgement(app, day[51], "refusal_rate", "c").score is not None


def test_a_rebaseline_is_not_undone_by_adding_a_cohort_from_the_days_it_left_out(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """Route c serves days 20-37 and is added to A's first reference on day 36. A rebaseline
    then freezes days 34-47, where c served 4 days (too few for an entry). Days 22-35 are
    exactly what the rebaseline left behind: c must wait for a window of its own from the new
    reference's first day on, not get its pre-rebaseline days added back to the new version
    (they were, on the next day run, so the old normal judged c again)."""
    day = days_ending_day_before_yesterday(50)
    champions_since(app, client, auth, {"A": day[0]})
    settings(client, auth, warmup_days=WARMUP_DAYS)
    events = []
    for i, d in enumerate(day):
        events += route_calls(d, "A", "a", 25)
        if 20 <= i <= 37:
            events += route_calls(d, "A", "c", 25)
    post_events(client, auth, events)
    run_drift(client, auth, day[39], 40)
    [(_, _, _, added)] = frozen(app)
    assert [(dimension, value) for dimension, value, _, _ in added] == [("route", "c")]
    body = {
        "reason": "new normal",
        "first_day": day[34].isoformat(),
        "last_day": day[47].isoformat(),
    }
    rebased = client.post("/api/v1/models/m/rebaseline", json=body, headers=auth)
    assert rebased.status_code == 201, rebased.text
    assert not any("|route|c" in key for key in frozen(app)[1][2])

    run_drift(client, auth, day[49], 10)  # days 40-49, each the newest when run

    [_, (version, _, _, added_since)] = frozen(app)
    assert version == rebased.json()["version"]
    assert added_since == []
    listed = client.get("/api/v1/models/m/references", headers=auth).json()["items"]
    assert listed[0]["cohorts_added"] == []


def test_a_dimension_named_with_a_bar_is_held_by_its_reference_and_never_added_again(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """A cohort dimension may hold "|" ("team|region"), and so may a value: a stats key
    "signal|team|region|eu" split from the left read as dimension "team", value "region|eu",
    so the frozen cohort looked held by nothing, was summarised again once its own window was
    full, and adding entries the reference already held failed the daily job for the model."""
    day = days_ending_day_before_yesterday(24)
    champions_since(app, client, auth, {"A": day[0]})
    settings(client, auth, warmup_days=WARMUP_DAYS)
    events = []
    for d in day:
        for call in route_calls(d, "A", "a", 25):
            events.append({**call, "cohort": {"team|region": "eu|west"}})
    post_events(client, auth, events)
    run_drift(client, auth, day[23], 24)
    [(_, _, stats, added)] = frozen(app)
    assert "refusal_rate|team|region|eu|west" in stats
    assert added == []
    assert judgement_of(app, day[23], "refusal_rate", "team|region", "eu|west").score is not None


def judgement_of(app: FastAPI, day: date, signal: str, dimension: str, value: str) -> Any:
    with app.state.sessionmaker() as session:
        return session.scalar(
            select(DriftJudgement).where(
                DriftJudgement.day == day,
                DriftJudgement.signal == signal,
                DriftJudgement.dimension == dimension,
                DriftJudgement.value == value,
            )
        )


def test_a_cohort_seen_now_and_then_costs_the_daily_job_no_known_good_days(
    app: FastAPI, client: TestClient, auth: Headers, admin_key: str
) -> None:
    """Route s serves on 3 days, far fewer than a window's 14: it cannot be added, yet every
    newest day recomputed the model's known-good days for it (incident days, and an onset
    query per alert of the model since s first served), a cost growing with the history for
    as long as such a cohort exists. The day's job now looks no further than the one query
    that finds it cannot fill a window; the page still shows its progress."""
    day = days_ending_day_before_yesterday(36)
    champions_since(app, client, auth, {"A": day[0]})
    settings(client, auth, warmup_days=WARMUP_DAYS)
    events = []
    for i, d in enumerate(day):
        events += route_calls(d, "A", "a", 25)
        if i in (18, 25, 30):
            events += route_calls(d, "A", "s", 25)
    post_events(client, auth, events)
    run_drift(client, auth, day[34], 35)
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = app.state.sessionmaker.kw["bind"]
    event.listen(engine, "before_cursor_execute", record)
    try:
        run_drift(client, auth, day[35])
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert statements and not [s for s in statements if "incident_days" in s]
    [(_, _, _, added)] = frozen(app)
    assert added == []
    sign_in(client, admin_key)
    notice = unjudged_notice(client, day)  # its first day is its own warm-up's
    assert "route=s" in notice and "2 of 14 known-good days" in notice
