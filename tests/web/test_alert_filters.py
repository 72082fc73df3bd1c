"""The alerts and drift pages list what their filters say: the form's "all" option, counts of
the chosen model, and an alert still open from before the chosen days."""

from __future__ import annotations

from datetime import date

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.drift.champions import (
    alerts,
    calls,
    champions_since,
    checkpoints,
    date_history,
    days_ending_day_before_yesterday,
    promote,
    settings,
)
from tests.drift.traffic import post_events, run_drift
from tests.web.test_pages import sign_in

Headers = dict[str, str]


def refusals_jump(app: FastAPI, client: TestClient, auth: Headers, models: list[str]) -> list[date]:
    """Each model's refusals go 5% -> 20% from day 16 of 20: one open all-traffic alert each."""
    day = days_ending_day_before_yesterday(20)
    settings(client, auth)
    for model in models:
        promote(client, auth, model, checkpoints(client, auth, model, ["A"])["A"])
    date_history(app, [day[0]] * len(models))
    post_events(
        client,
        auth,
        [
            event
            for model in models
            for i in range(20)
            for event in calls(day[i], "A", 100 if i >= 16 else 25, model=model)
        ],
    )
    run_drift(client, auth, day[19], 20)
    return day


def test_the_alerts_page_takes_its_own_all_option_and_counts_the_chosen_model(
    app: FastAPI, client: TestClient, auth: Headers, admin_key: str
) -> None:
    """Choosing "open and acknowledged" sends `status=`, which answered 422; the status
    counts covered every model whichever was chosen."""
    refusals_jump(app, client, auth, ["m", "n"])
    opened = alerts(client, auth, status="open")
    assert {a["model"] for a in opened} == {"m", "n"}
    per_model = sum(1 for a in opened if a["model"] == "m")
    sign_in(client, admin_key)

    every = client.get("/alerts", params={"status": "", "model": ""})
    assert every.status_code == 200, every.text
    assert every.text.count("/alerts/") >= len(opened)
    chosen = client.get("/alerts", params={"status": "", "model": "m"})
    assert chosen.status_code == 200
    assert f"open ({per_model})" in chosen.text
    assert client.get("/alerts", params={"status": "bogus"}).status_code == 422


def test_the_drift_page_shows_an_alert_opened_before_its_days_and_still_open(
    app: FastAPI, client: TestClient, auth: Headers, admin_key: str
) -> None:
    """An alert opened on day 16 and open since: the drift page for days 18-19 shows it
    (it is the state of those days); it used to keep only alerts opened inside the range."""
    day = refusals_jump(app, client, auth, ["m"])
    [alert] = alerts(client, auth, status="open", signal="refusal_rate", dimension="all")
    assert alert["day"] < day[18].isoformat()
    sign_in(client, admin_key)
    params = {"model": "m", "signal": "refusal_rate", "from": day[18], "to": day[19]}
    page = client.get("/drift", params=params)
    assert page.status_code == 200
    assert f'href="/alerts/{alert["id"]}"' in page.text


def test_the_drift_page_names_cohorts_the_frozen_reference_cannot_judge(
    app: FastAPI, client: TestClient, auth: Headers, admin_key: str
) -> None:
    """The reference froze days 0-13 of /chat; from day 16 a new route /new serves calls. The
    daily job has no reference entry to judge /new against, and nothing said so: its
    regressions could not alert until a rebaseline."""
    day = days_ending_day_before_yesterday(20)
    champions_since(app, client, auth, {"A": day[0]})
    events = [
        event for i in range(20) for event in calls(day[i], "A", 25, cohort={"route": "/chat"})
    ]
    events += [
        {**event, "trace_id": f"new-{event['trace_id']}", "cohort": {"route": "/new"}}
        for i in range(16, 20)
        for event in calls(day[i], "A", 25)
    ]
    post_events(client, auth, events)
    run_drift(client, auth, day[19], 20)
    sign_in(client, admin_key)

    page = client.get("/drift", params={"model": "m", "from": day[0], "to": day[19]}).text
    notice = page.split('data-testid="unjudged-cohorts"', 1)[1].split("</p>", 1)[0]
    assert "route=/new" in notice and "route=/chat" not in notice
