"""A new reference frozen while an alert is open: a rebaseline that leaves the alert's days
out (the default) is a new estimate of the same normal, so a shift that goes on keeps its
alert open; one that accepts them (`accept_alert_days`) takes the shift as the new normal,
and the alert resolves."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core.links import Links
from app.drift import job
from app.models import DriftJudgement, Project
from app.stats.cusum import DEFAULT_HEADROOM, DEFAULT_K, cusum_update
from tests.drift.champions import alerts, calls, champions_since, days_ending_day_before_yesterday
from tests.drift.test_late_data_cusum import cusum_by_day
from tests.drift.traffic import fail_rollup_on, post_events, run_drift

Headers = dict[str, str]


def shifted_refusals(app: FastAPI, client: TestClient, auth: Headers, days: int) -> list[date]:
    """A from day 0, 2,000 calls a day, refusals 10% -> 11% from day 20 for good (a mild
    shift: the CUSUM opens the alert, each day adds about 0.4 to it), posted for `days`
    days and judged to day 39. -> the days."""
    day = days_ending_day_before_yesterday(days)
    champions_since(app, client, auth, {"A": day[0]})
    events = []
    for i in range(days):
        events += calls(day[i], "A", 220 if i >= 20 else 200, n=2000)
    post_events(client, auth, events)
    run_drift(client, auth, day[39], 40)
    return day


def shifted_then_rebaselined(
    app: FastAPI, client: TestClient, auth: Headers, accept_alert_days: bool
) -> tuple[list[Any], dict[str, Any], list[date]]:
    """`shifted_refusals` for 60 days (reference days 0-13); the model is rebaselined after
    day 39, then the job runs day by day to 59.
    -> (the population's refusal alerts, the new reference, the days)."""
    day = shifted_refusals(app, client, auth, 60)
    [opened] = alerts(client, auth, signal="refusal_rate", dimension="all")
    assert opened["status"] == "open" and opened["evidence"]["rules"] == ["cusum"]
    body = {"reason": "refresh", "last_day": day[39].isoformat()}
    if accept_alert_days:
        body["accept_alert_days"] = True
    response = client.post("/api/v1/models/m/rebaseline", json=body, headers=auth)
    assert response.status_code == 201, response.text
    for i in range(40, 60):
        run_drift(client, auth, day[i])
    return alerts(client, auth, signal="refusal_rate", dimension="all"), response.json(), day


def test_a_rebaseline_without_the_alert_days_keeps_the_alert_of_a_shift_that_goes_on(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The rebaseline takes the known-good days before the shift. Before, the CUSUM restarted
    at 0 against it, stood below its release level for three days, and the alert resolved
    `recovered` on day 42 while the shift went on; a second alert opened on day 47. Now the
    statistic the alert stands on is carried to the new reference: one alert, open to day 59."""
    found, reference, day = shifted_then_rebaselined(app, client, auth, accept_alert_days=False)
    assert reference["last_day"] < found[0]["day"]  # the window holds none of its days
    assert [(a["status"], a["resolution"]) for a in found] == [("open", None)], found
    [alert] = found
    assert alert["last_day"] == day[59].isoformat()
    assert alert["evidence"]["reference"]["version"] == reference["version"]
    assert alert["evidence"]["cusum"]["statistic"] > alert["evidence"]["cusum"]["release"]


def test_a_rebaseline_accepting_the_alert_days_resolves_the_alert(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The window is the last 14 days, all at 11%: the shift is the new normal, the
    statistic restarts at 0 and the alert resolves `recovered` three days later."""
    found, reference, day = shifted_then_rebaselined(app, client, auth, accept_alert_days=True)
    assert reference["last_day"] == day[39].isoformat()  # the window holds its days
    assert [(a["status"], a["resolution"]) for a in found] == [("resolved", "recovered")]
    assert found[0]["last_day"] == day[42].isoformat()


def test_a_backfill_stopped_after_a_rebaseline_mid_alert_keeps_the_carried_statistic(
    app: FastAPI, client: TestClient, auth: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As above (no `accept_alert_days`), the job then running days 40-44 on the new
    reference, day 40 starting from the open alert's statistic. A backfill of days 38-41
    commits day 38 and fails on day 39; the days after day 38 get their CUSUM carried from
    it (judge.carry_forward_after), and nothing about them changed, so every one must hold
    the statistic it held. Before, the recomputation started the new reference's first day
    (40) from 0, as if no alert stood on it, and every later day with it."""
    day = shifted_refusals(app, client, auth, 45)
    body = {"reason": "refresh", "last_day": day[39].isoformat()}
    response = client.post("/api/v1/models/m/rebaseline", json=body, headers=auth)
    assert response.status_code == 201, response.text
    for i in range(40, 45):
        run_drift(client, auth, day[i])
    judged = cusum_by_day(app)
    assert judged[day[40]][0] > judged[day[39]][0] / 2  # carried over, not restarted

    fail_rollup_on(monkeypatch, day[39])
    with app.state.sessionmaker() as session, pytest.raises(job.BackfillStopped):
        project_id = session.scalars(select(Project.id).where(Project.name == "acme")).one()
        job.run_days(session, Links.of(app.state.settings), project_id, day[41], 4, "cli")
    after_failure = cusum_by_day(app)
    for d in day[38:45]:
        assert after_failure[d] == pytest.approx(judged[d]), d


def test_a_rerun_after_the_alert_resolved_keeps_the_statistic_it_stood_on(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """A from day 0, 2,000 calls a day, refusals 10% -> 11% on days 20-44 (then fixed);
    the alert opens on the CUSUM, the model is rebaselined after day 39 (the alert's days
    left out), and the job runs day by day to 59: day 40 starts from the alert's statistic,
    and the alert resolves `recovered` once the shift has ended. Day 40 is then run again
    with nothing changed (a rerun for late events that brought none): every day must keep
    the statistic and rules it had. The alert was open when day 40 was judged, though it is
    resolved now."""
    day = days_ending_day_before_yesterday(60)
    champions_since(app, client, auth, {"A": day[0]})
    events = []
    for i in range(60):
        events += calls(day[i], "A", 220 if 20 <= i < 45 else 200, n=2000)
    post_events(client, auth, events)
    run_drift(client, auth, day[39], 40)
    body = {"reason": "refresh", "last_day": day[39].isoformat()}
    response = client.post("/api/v1/models/m/rebaseline", json=body, headers=auth)
    assert response.status_code == 201, response.text
    for i in range(40, 60):
        run_drift(client, auth, day[i])
    [alert] = alerts(client, auth, signal="refusal_rate", dimension="all")
    assert (alert["status"], alert["resolution"]) == ("resolved", "recovered")
    assert alert["last_day"] > day[44].isoformat()
    judged = cusum_by_day(app)
    assert judged[day[40]][0] > judged[day[39]][0] / 2  # carried over, not restarted

    run_drift(client, auth, day[40])
    rerun = cusum_by_day(app)
    changed = {d: (judged[d], rerun[d]) for d in day[40:] if rerun[d] != pytest.approx(judged[d])}
    assert not changed, changed
    assert alerts(client, auth, signal="refusal_rate", dimension="all") == [alert]


def test_late_events_before_a_rebaseline_reach_the_days_judged_after_it(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """`shifted_refusals` for 45 days, except that day 39's calls first arrive without the
    shift (200 refused of 2,000); the model is rebaselined after day 39 (the alert's days
    left out) and judged day by day to 44, day 40 starting from day 39's statistic. Then 40
    late calls of day 39, all refused, arrive and day 39 is run again: its S rises, and
    every later day must start from it, though they were judged against the new reference.
    Before, the rerun recomputed only the days on day 39's reference: day 40 kept the
    statistic it had built on the incomplete day."""
    day = days_ending_day_before_yesterday(45)
    champions_since(app, client, auth, {"A": day[0]})
    events = []
    for i in range(45):
        events += calls(day[i], "A", 220 if i >= 20 and i != 39 else 200, n=2000)
    post_events(client, auth, events)
    run_drift(client, auth, day[39], 40)
    body = {"reason": "refresh", "last_day": day[39].isoformat()}
    response = client.post("/api/v1/models/m/rebaseline", json=body, headers=auth)
    assert response.status_code == 201, response.text
    for i in range(40, 45):
        run_drift(client, auth, day[i])
    before = cusum_by_day(app)

    late = [{**e, "trace_id": f"{e['trace_id']}-late"} for e in calls(day[39], "A", 40, n=40)]
    post_events(client, auth, late)
    run_drift(client, auth, day[39])
    after = cusum_by_day(app)
    assert after[day[39]][0] > before[day[39]][0]  # the late calls raised day 39's S
    with app.state.sessionmaker() as session:
        stored = {
            j.day: j
            for j in session.scalars(
                select(DriftJudgement).where(
                    DriftJudgement.signal == "refusal_rate", DriftJudgement.dimension == "all"
                )
            )
        }
    statistic = after[day[39]][0]
    for d in day[40:45]:
        row = stored[d]
        assert row.score is not None and row.cusum_h is not None
        statistic = float(
            cusum_update(statistic, row.score, DEFAULT_K, row.cusum_h + DEFAULT_HEADROOM)
        )
        assert row.cusum == pytest.approx(statistic), (d, before[d], after[d], statistic)
