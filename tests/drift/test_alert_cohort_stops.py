"""An alert whose cohort's traffic stops: the fix for a prompt regression is usually a new
prompt version, so the regressing version's cohort simply goes quiet. Its alert must not stay
open for good, since an unresolved alert keeps every day out of the model's known-good days
and no reference could freeze again."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.drift.champions import alerts, calls, champions_since, days_ending_day_before_yesterday
from tests.drift.traffic import post_events, run_drift


def test_an_alert_whose_cohort_stopped_resolves_and_the_next_champion_gets_its_reference(
    app: FastAPI, client: TestClient, auth: dict[str, str]
) -> None:
    """A from day 0 (reference days 0-13, prompt p1). p1's refusals jump 5% -> 20% on days
    18-24; the fix is prompt p2 from day 25 (p1 is never served again), shipped with
    checkpoint B on day 26, whose traffic is clean to day 59. The p1 alert resolves `no_data`
    once the model has served 14 days without judging p1, keeping its span (its last judged
    day, 24); B then gets its own reference. Before, the p1 alert stayed open with a no_data
    note a day, and B was judged against A's reference for good."""
    day = days_ending_day_before_yesterday(60)
    ids = champions_since(app, client, auth, {"A": day[0], "B": day[26]})
    events = []
    for i in range(60):
        prompt = "p1" if i < 25 else "p2"
        refused = 100 if 18 <= i < 25 else 25
        events += calls(day[i], "A" if i < 26 else "B", refused, cohort={"prompt_version": prompt})
    post_events(client, auth, events)
    run_drift(client, auth, day[59], 60)

    [p1] = alerts(client, auth, dimension="prompt_version", value="p1")
    assert p1["status"] == "resolved", (p1["status"], len(p1["annotations"]))
    assert p1["resolution"] == "no_data"
    assert p1["last_day"] == day[24].isoformat()
    assert p1["resolved_at"] is not None
    no_data = [a["day"] for a in p1["annotations"] if a["kind"] == "no_data"]
    assert len(no_data) == 13  # days 25-37; the 14th served day without p1 resolves it
    [population] = alerts(client, auth, dimension="all", signal="refusal_rate")
    assert population["resolution"] == "recovered"

    references = client.get("/api/v1/models/m/references", headers=auth).json()["items"]
    active = [r for r in references if r["status"] == "active"]
    assert [(r["checkpoint_id"], r["trigger"]) for r in active] == [(ids["B"], "warmup")]
    assert active[0]["first_day"] > day[24].isoformat()


def test_a_day_the_model_did_not_serve_does_not_count_towards_no_data(
    app: FastAPI, client: TestClient, auth: dict[str, str]
) -> None:
    """An ingestion outage is not a cohort gone quiet: the p1 alert (opened on days 18-24)
    stays open through 20 days without any traffic of the model, then resolves `recovered`
    once p1 is back and in control."""
    day = days_ending_day_before_yesterday(60)
    champions_since(app, client, auth, {"A": day[0]})
    events = []
    for i in [*range(25), *range(45, 60)]:
        refused = 100 if 18 <= i < 25 else 25
        events += calls(day[i], "A", refused, cohort={"prompt_version": "p1"})
    post_events(client, auth, events)
    run_drift(client, auth, day[44], 45)
    [open_then] = alerts(client, auth, dimension="prompt_version", value="p1")
    assert open_then["status"] == "open"
    run_drift(client, auth, day[59], 15)
    [p1] = alerts(client, auth, dimension="prompt_version", value="p1")
    assert (p1["status"], p1["resolution"]) == ("resolved", "recovered")


def test_an_alert_whose_cohort_keeps_traffic_but_is_not_judged_resolves_unjudged(
    app: FastAPI, client: TestClient, auth: dict[str, str]
) -> None:
    """As above, but p1 is not replaced: its refusal monitor asks for 100 calls a day, and
    from day 25 it keeps 60 calls a day, still 20% refused, so it has data every day and no
    verdict. Its traffic did not stop: the alert resolves `unjudged` on the 14th such day
    (38), saying the regression may go on, not `no_data` ("its traffic stopped", as it did
    when every served day counted); kept open, it would keep every later reference of the
    model from freezing (an open alert's days are never known-good)."""
    day = days_ending_day_before_yesterday(60)
    champions_since(app, client, auth, {"A": day[0]})
    monitor = {
        "model": "m",
        "signal": "refusal_rate",
        "dimension": "prompt_version",
        "value": "p1",
        "band": {"type": "baseline", "side": "upper"},
        "min_volume": 100,
    }
    created = client.post("/api/v1/monitors", json=monitor, headers=auth)
    assert created.status_code == 201, created.text
    events = []
    for i in range(60):
        if i < 25:
            events += calls(day[i], "A", 100 if i >= 18 else 25, cohort={"prompt_version": "p1"})
        else:
            events += calls(day[i], "A", 12, n=60, cohort={"prompt_version": "p1"})
            events += [
                {**event, "trace_id": f"p2-{event['trace_id']}"}
                for event in calls(day[i], "A", 25, cohort={"prompt_version": "p2"})
            ]
    post_events(client, auth, events)
    run_drift(client, auth, day[59], 60)

    [p1] = alerts(client, auth, dimension="prompt_version", value="p1")
    assert (p1["status"], p1["resolution"]) == ("resolved", "unjudged"), p1["annotations"][-1:]
    assert p1["last_day"] == day[24].isoformat()
    no_data = [a["day"] for a in p1["annotations"] if a["kind"] == "no_data"]
    assert no_data == [day[i].isoformat() for i in range(25, 38)]
    [note] = [a["note"] for a in p1["annotations"] if a["kind"] == "note"]
    assert "not judged on 14 days" in note and "data on 14 of them" in note
