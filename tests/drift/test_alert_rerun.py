"""Late events for a day an open alert judged: the rerun of that day must reach the alert.
Its evidence is the rerun's while that day is its newest and still fires; an alert whose
firing vanished on the rerun resolves `data_corrected` instead of paging on."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.drift.champions import alerts, calls, champions_since, days_ending_day_before_yesterday
from tests.drift.test_late_data_cusum import cusum_by_day
from tests.drift.traffic import post_events, run_drift

Headers = dict[str, str]
CAP = {"model": "m", "signal": "refusal_rate", "band": {"type": "fixed", "high": 0.1}}


def late(day: Any, refused: int, n: int) -> list[dict[str, Any]]:
    return [{**e, "trace_id": f"{e['trace_id']}-late"} for e in calls(day, "A", refused, n=n)]


def refusal_alert(client: TestClient, auth: Headers) -> dict[str, Any]:
    [alert] = alerts(client, auth, signal="refusal_rate", dimension="all")
    return alert


def test_a_rerun_of_the_alerts_day_shows_the_rerun_in_its_evidence(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """Refusals capped at 10%: the day's first 100 calls, 50 refused, open the alert at 50%.
    100 late calls, 10 refused: the day is 30% refused and still fires. Before, the alert
    kept 50% of 100 calls for good, its evidence disagreeing with the day's signal."""
    [day] = days_ending_day_before_yesterday(1)
    champions_since(app, client, auth, {"A": day - timedelta(days=1)})
    assert client.put("/api/v1/monitors", json=CAP, headers=auth).is_success
    post_events(client, auth, calls(day, "A", refused=50, n=100))
    run_drift(client, auth, day)
    assert refusal_alert(client, auth)["observed"] == 0.5

    post_events(client, auth, late(day, refused=10, n=100))
    run_drift(client, auth, day)

    alert = refusal_alert(client, auth)
    assert alert["status"] == "open"
    assert (alert["observed"], alert["volume"]) == (0.3, 200)
    assert (alert["evidence"]["observed"], alert["evidence"]["volume"]) == (0.3, 200)


def test_an_alert_whose_only_firing_day_is_in_control_on_rerun_resolves_data_corrected(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The day's first 100 calls, 30 refused, open the alert; 300 late calls, none refused,
    put the day at 7.5%, under the cap. Before, the alert stayed open (and paged) on a day
    that never shifted, until `resolve_after_days` quiet days passed."""
    [day] = days_ending_day_before_yesterday(1)
    champions_since(app, client, auth, {"A": day - timedelta(days=1)})
    assert client.put("/api/v1/monitors", json=CAP, headers=auth).is_success
    post_events(client, auth, calls(day, "A", refused=30, n=100))
    assert run_drift(client, auth, day)["alerts_opened"] >= 1

    post_events(client, auth, late(day, refused=0, n=300))
    run_drift(client, auth, day)

    alert = refusal_alert(client, auth)
    assert (alert["status"], alert["resolution"]) == ("resolved", "data_corrected")
    assert any("no day from" in str(a.get("note")) for a in alert["annotations"])
    run_drift(client, auth, day)  # a further rerun opens nothing again
    assert refusal_alert(client, auth)["id"] == alert["id"]


def test_an_alert_resolved_data_corrected_reopens_when_a_later_rerun_fires_again(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The day's first 100 calls, 30 refused, open the alert; 300 late calls, none refused,
    resolve it `data_corrected` (7.5%). Then 200 more late calls arrive, 150 refused: the day
    is 30% refused (180 of 600) and fires again. Before, the rerun left the alert resolved
    and opened nothing (a resolved alert covered the day): a real regression stayed silently
    resolved. Now the same alert reopens with the rerun's evidence, and the receivers hear
    it as an `alert.opened` (data.reopened, its own message id) after the `alert.resolved`
    of the same subject; resolving it again is a message of its own too."""
    [day] = days_ending_day_before_yesterday(1)
    champions_since(app, client, auth, {"A": day - timedelta(days=1)})
    assert client.put("/api/v1/monitors", json=CAP, headers=auth).is_success
    hook = client.post(
        "/api/v1/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "events": ["alert.opened", "alert.resolved"]},
        headers=auth,
    ).json()
    post_events(client, auth, calls(day, "A", refused=30, n=100))
    run_drift(client, auth, day)
    post_events(client, auth, late(day, refused=0, n=300))
    run_drift(client, auth, day)
    corrected = refusal_alert(client, auth)
    assert corrected["resolution"] == "data_corrected"

    more = [{**e, "trace_id": f"{e['trace_id']}-later"} for e in calls(day, "A", 150, n=200)]
    post_events(client, auth, more)
    assert run_drift(client, auth, day)["alerts_opened"] == 1

    alert = refusal_alert(client, auth)
    assert alert["id"] == corrected["id"]
    assert (alert["status"], alert["resolution"], alert["resolved_at"]) == ("open", None, None)
    assert (alert["observed"], alert["volume"]) == (0.3, 600)
    assert (alert["evidence"]["observed"], alert["evidence"]["volume"]) == (0.3, 600)
    assert any(
        a.get("kind") == "reopened" and a["day"] == day.isoformat() for a in alert["annotations"]
    )
    run_drift(client, auth, day)  # a further rerun that still fires changes nothing
    assert refusal_alert(client, auth)["status"] == "open"

    last = [{**e, "trace_id": f"{e['trace_id']}-last"} for e in calls(day, "A", 0, n=2000)]
    post_events(client, auth, last)  # 180 of 2600 refused: under the cap again
    run_drift(client, auth, day)
    assert refusal_alert(client, auth)["resolution"] == "data_corrected"

    deliveries = client.get(
        f"/api/v1/webhooks/{hook['id']}/deliveries", params={"limit": 100}, headers=auth
    ).json()["items"]
    sent = sorted(deliveries, key=lambda d: d["id"])
    a = alert["id"]
    assert [(d["event_type"], d["msg_id"]) for d in sent] == [
        ("alert.opened", f"alert.opened.{a}"),
        ("alert.resolved", f"alert.resolved.{a}"),
        ("alert.opened", f"alert.opened.{a}.reopened.1"),
        ("alert.resolved", f"alert.resolved.{a}.reopened.1"),
    ]
    assert {d["subject"] for d in sent} == {f"alert:{a}"}
    assert sent[2]["payload"]["data"]["reopened"] is True
    assert sent[2]["payload"]["data"]["status"] == "open"


def test_a_rerun_of_an_earlier_day_that_still_fires_brings_the_newest_days_evidence_up_to_date(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """14 reference days at 10% refusals; day 14 opens the alert on its first 250 calls (60
    refused, 24%), day 15 (65 of 500, 13%) keeps it open on the CUSUM alone, at its cap
    4.31. 250 late calls for day 14, 20 refused: day 14 is 16% (it still fires, on the band)
    and its rerun carries a lower CUSUM into day 15 (4.08, still past the threshold). Before,
    the alert kept showing day 15's evidence with the CUSUM at 4.31, which no stored verdict
    holds any more; now its evidence is day 15's as stored after the rerun."""
    day = days_ending_day_before_yesterday(16)
    champions_since(app, client, auth, {"A": day[0] - timedelta(days=1)})
    events = [e for d in day[:14] for e in calls(d, "A", refused=50)]
    events += calls(day[14], "A", refused=60, n=250) + calls(day[15], "A", refused=65)
    post_events(client, auth, events)
    run_drift(client, auth, day[15], backfill=16)
    before = refusal_alert(client, auth)
    assert (before["day"], before["last_day"]) == (day[14].isoformat(), day[15].isoformat())
    assert before["evidence"]["rules"] == ["cusum"]

    post_events(client, auth, late(day[14], refused=20, n=250))
    run_drift(client, auth, day[14])

    alert = refusal_alert(client, auth)
    stored = cusum_by_day(app)
    assert stored[day[14]][2] != 0 and stored[day[15]][2] == 2  # both days still fire
    assert stored[day[15]][0] < before["evidence"]["cusum"]["statistic"]
    assert alert["status"] == "open" and alert["evidence"]["day"] == day[15].isoformat()
    assert alert["evidence"]["rules"] == ["cusum"]
    assert alert["evidence"]["cusum"]["statistic"] == stored[day[15]][0]
    assert alert["evidence"]["cusum"]["threshold"] == before["evidence"]["cusum"]["threshold"]
    assert (alert["observed"], alert["volume"]) == (0.13, 500)  # day 15's own numbers
