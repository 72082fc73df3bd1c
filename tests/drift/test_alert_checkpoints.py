"""Which checkpoint an alert blames and names to roll back to: the known-good one as the
champion history stood on the judged day, never the regressing one, and the serving one once
another checkpoint took over while the shift went on."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.drift.champions import (
    alerts,
    calls,
    champions_since,
    date_history,
    days_ending_day_before_yesterday,
    rollback,
)
from tests.drift.traffic import post_events, run_drift
from tests.web.test_pages import sign_in


def test_a_backfilled_alert_names_the_champion_before_the_regressing_one(
    app: FastAPI, client: TestClient, auth: dict[str, str], admin_key: str
) -> None:
    """A champion from day 0, B from day 16; B's refusals jump 5% -> 20% from day 30.
    C is promoted on day 36 (the fix) and the drift job is then backfilled (it was down).
    The alert on B (opened ~day 30) must say: roll back to A (the champion before B),
    not to B itself."""
    day = days_ending_day_before_yesterday(40)
    ids = champions_since(app, client, auth, {"A": day[0], "B": day[16], "C": day[36]})
    events = []
    for i in range(36):
        version = "A" if i < 16 else "B"
        events += calls(day[i], version, 100 if i >= 30 else 25)
    post_events(client, auth, events)
    run_drift(client, auth, day[35], 36)
    [alert] = [a for a in alerts(client, auth, signal="refusal_rate", dimension="all")]
    assert alert["checkpoint_id"] == ids["B"]
    target = alert["rollback_target"]
    assert target is not None and target["checkpoint_id"] != ids["B"], target
    assert target["checkpoint_id"] == ids["A"]

    # C, the fix, serves now: the alert's own rollback (to A) would replace it, so the alert
    # offers none and a rollback made for it must name its target (before 2026-12-01 the
    # alert's button replaced the fix with A). Named, it goes there and is recorded for the
    # alert. The model's own target, with C the champion, is B, the checkpoint that raised
    # the alert: never where a rollback for the alert goes.
    assert alert["rollback"] is None
    sign_in(client, admin_key)
    page = client.get("/models/m/rollback", params={"alert_id": alert["id"]})
    assert page.status_code == 200 and "which is not the champion (C is)" in page.text
    refused = client.post(
        "/api/v1/models/m/rollback",
        json={"reason": "as the alert advised", "alert_id": alert["id"]},
        headers=auth,
    )
    assert refused.status_code == 409, refused.text
    done = client.post(
        "/api/v1/models/m/rollback",
        json={"reason": "C regresses too", "alert_id": alert["id"], "to": "A"},
        headers=auth,
    )
    assert done.status_code == 200, done.text
    assert done.json()["champion"]["id"] == ids["A"]


def test_an_alert_kept_open_by_the_rolled_back_to_checkpoint_names_it(
    app: FastAPI, client: TestClient, auth: dict[str, str]
) -> None:
    """A from day 0 (reference days 0-13), B from day 16. From day 20 refusals jump to 20%
    (an upstream outage: whichever checkpoint serves). The alert opens on B and names A as the
    rollback target; the team rolls back to A on day 23 (the job runs day by day, as in
    production); the refusals stay at 20% on A's traffic for days 23-29, so the alert stays
    open and is refreshed (and re-notified) from A's rows. It must then not keep saying
    "checkpoint B regressed, roll back to A" while A is the checkpoint serving and failing."""
    day = days_ending_day_before_yesterday(30)
    ids = champions_since(app, client, auth, {"A": day[0], "B": day[16]})
    events = []
    for i in range(30):
        version = "B" if 16 <= i < 23 else "A"
        events += calls(day[i], version, 100 if i >= 20 else 25)
    post_events(client, auth, events)
    run_drift(client, auth, day[22], 23)
    [opened] = alerts(client, auth, signal="refusal_rate", dimension="all", status="open")
    assert opened["checkpoint_id"] == ids["B"]
    assert opened["rollback_target"]["checkpoint_id"] == ids["A"]
    rollback(client, auth, "m", "A")  # as the alert advised
    date_history(app, [day[0], day[16], day[23]])
    for i in range(23, 30):
        run_drift(client, auth, day[i])
    [alert] = alerts(client, auth, signal="refusal_rate", dimension="all", status="open")
    assert alert["id"] == opened["id"]
    assert alert["evidence"]["day"] == day[29].isoformat()  # refreshed from A's traffic
    stale = (
        alert["checkpoint_id"] == ids["B"]
        and alert["rollback_target"] is not None
        and alert["rollback_target"]["checkpoint_id"] == ids["A"]
    )
    assert not stale, (alert["checkpoint_id"], alert["rollback_target"], alert["evidence"]["day"])
    assert alert["checkpoint_id"] == ids["A"] and alert["rollback_target"] is None
    assert {
        "kind": "checkpoint_changed",
        "day": day[23].isoformat(),
        "checkpoint_id": ids["A"],
    } in (alert["annotations"])


def test_an_alert_on_a_checkpoint_deployed_before_its_promotion_names_the_champion_it_replaced(
    app: FastAPI, client: TestClient, auth: dict[str, str]
) -> None:
    """A from day 0, B from day 16. C is deployed on day 20 and serves from then on, but its
    promotion is recorded only on day 27 (after a soak). Its refusals jump 5% -> 20% from day
    24. The alert on C (judged against the history as of its day: A, then B) must name B,
    the champion C replaced, not A, two versions back (measured from the champion of the day,
    B, as if B were the checkpoint regressing)."""
    day = days_ending_day_before_yesterday(30)
    ids = champions_since(app, client, auth, {"A": day[0], "B": day[16], "C": day[27]})
    events = []
    for i in range(30):
        version = "A" if i < 16 else "B" if i < 20 else "C"
        events += calls(day[i], version, 100 if i >= 24 else 25)
    post_events(client, auth, events)
    run_drift(client, auth, day[29], 30)
    [alert] = alerts(client, auth, signal="refusal_rate", dimension="all")
    assert alert["checkpoint_id"] == ids["C"] and alert["day"] < day[27].isoformat()
    assert alert["rollback_target"] == {"checkpoint_id": ids["B"], "version": "B"}
    assert alert["rollback"]["target"] == {"checkpoint_id": ids["B"], "version": "B"}

    # Rolling back for the alert goes where it said (C is the champion by now).
    done = client.post(
        "/api/v1/models/m/rollback",
        json={"reason": "as the alert advised", "alert_id": alert["id"]},
        headers=auth,
    )
    assert done.status_code == 200, done.text
    assert done.json()["champion"]["id"] == ids["B"]


def test_an_alert_on_a_former_champion_serving_again_names_the_champion_it_replaced(
    app: FastAPI, client: TestClient, auth: dict[str, str]
) -> None:
    """A from day 0, B promoted on day 16, C on day 20. B is redeployed on day 24 without a
    promotion (C stays the champion on record) and serves from then on; its refusals jump
    5% -> 20% from day 26. The alert on B must name C, the champion B replaced, not A (the
    champion before B's old promotion on day 16)."""
    day = days_ending_day_before_yesterday(30)
    ids = champions_since(app, client, auth, {"A": day[0], "B": day[16], "C": day[20]})
    events = []
    for i in range(30):
        version = "A" if i < 16 else "B" if i < 20 or i >= 24 else "C"
        events += calls(day[i], version, 100 if i >= 26 else 25)
    post_events(client, auth, events)
    run_drift(client, auth, day[29], 30)
    [alert] = alerts(client, auth, signal="refusal_rate", dimension="all")
    assert alert["checkpoint_id"] == ids["B"] and alert["day"] >= day[26].isoformat()
    assert alert["rollback_target"] == {"checkpoint_id": ids["C"], "version": "C"}
