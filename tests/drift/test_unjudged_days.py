"""A day whose drift run failed for good is a verdict nobody gave: the overview's "last drift
run" says only how the newest run went, so once the next day ran, nothing said that a day
was never judged (the scheduler gives up after its retries and a failed API or CLI run is
not retried at all). The API and the overview list such days with the run that judges them."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.drift.champions import calls, champions_since, days_ending_day_before_yesterday
from tests.drift.traffic import fail_rollup_on, post_events, run_drift
from tests.web.test_pages import sign_in

Headers = dict[str, str]


def unjudged(client: TestClient, auth: Headers) -> list[dict[str, Any]]:
    response = client.get("/api/v1/drift/unjudged-days", headers=auth)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def test_a_day_whose_run_failed_is_listed_until_a_run_judges_it(
    app: FastAPI,
    client: TestClient,
    auth: Headers,
    admin_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Day 1's rollup fails twice (a backfill of days 0-1, then day 1 alone); days 2 and 3
    then run fine, so the last run shown is a success. Day 1 must be listed, with its error,
    its two failed runs and the run that judges it (day 1 alone: day 2 was judged); the
    overview says so; rerunning it empties the list."""
    day = days_ending_day_before_yesterday(4)
    champions_since(app, client, auth, {"A": day[0] - timedelta(days=1)})
    post_events(client, auth, [e for d in day for e in calls(d, "A", refused=50)])
    fail_rollup_on(monkeypatch, day[1])
    for body in ({"date": day[1].isoformat(), "backfill": 2}, {"date": day[1].isoformat()}):
        assert client.post("/api/v1/drift/run", json=body, headers=auth).status_code == 500
    monkeypatch.undo()
    run_drift(client, auth, day[2])
    run_drift(client, auth, day[3])

    [lost] = unjudged(client, auth)
    assert lost["day"] == day[1].isoformat()
    assert lost["attempts"] == 2
    assert lost["error"] == f"RuntimeError in the rollup of {day[1]} (details in the server log)"
    assert lost["rerun"] == {"date": day[1].isoformat(), "backfill": 1}

    sign_in(client, admin_key)
    page = client.get("/")
    assert "last drift run: succeeded" in page.text  # what the overview said before, alone
    assert "Days never judged" in page.text
    assert f"--date {day[1]} --backfill 1" in page.text

    run_drift(client, auth, day[1], backfill=1)
    assert unjudged(client, auth) == []
    assert "Days never judged" not in client.get("/").text


def test_a_failure_with_no_day_judged_after_it_reruns_through_yesterday(
    app: FastAPI, client: TestClient, auth: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The newest run failed on day 0 of a 3-day backfill: days 1-2 were stopped with it and
    never run, so the rerun goes from day 0 through yesterday, in order."""
    day = days_ending_day_before_yesterday(3)
    champions_since(app, client, auth, {"A": day[0] - timedelta(days=1)})
    post_events(client, auth, [e for d in day for e in calls(d, "A", refused=50)])
    fail_rollup_on(monkeypatch)
    body = {"date": day[2].isoformat(), "backfill": 3}
    assert client.post("/api/v1/drift/run", json=body, headers=auth).status_code == 500
    [lost] = unjudged(client, auth)
    yesterday = day[2] + timedelta(days=1)
    assert (lost["day"], lost["rerun"]) == (
        day[0].isoformat(),
        {"date": yesterday.isoformat(), "backfill": 4},
    )
