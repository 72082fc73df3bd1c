"""An alert cured by a rollback stays on the checkpoint that showed the shift while its
CUSUM decays, and resolves `recovered`; it moves to another serving checkpoint only on that
checkpoint's own evidence of the shift."""

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


def test_an_alert_cured_by_a_rollback_stays_on_the_checkpoint_that_regressed(
    app: FastAPI, client: TestClient, auth: dict[str, str]
) -> None:
    """A from day 0 (reference days 0-13), B from day 16; B's refusals jump 5% -> 20% from
    day 20. The alert opens on B and names A; the team rolls back to A on day 24 and A's
    refusals are back at 5% from then on. The CUSUM, at its cap, still fires for a day or two
    on A's clean traffic while it decays: the alert must keep saying B regressed (roll back
    to A), never that A does, and resolve `recovered` once S is back under its release."""
    day = days_ending_day_before_yesterday(36)
    ids = champions_since(app, client, auth, {"A": day[0], "B": day[16]})
    events = []
    for i in range(36):
        version = "B" if 16 <= i < 24 else "A"
        events += calls(day[i], version, 100 if 20 <= i < 24 else 25)
    post_events(client, auth, events)
    run_drift(client, auth, day[23], 24)
    [opened] = alerts(client, auth, signal="refusal_rate", dimension="all", status="open")
    assert opened["checkpoint_id"] == ids["B"]
    assert opened["rollback_target"]["checkpoint_id"] == ids["A"]
    rollback(client, auth, "m", "A")  # as the alert advised
    date_history(app, [day[0], day[16], day[24]])
    statistics = []
    for i in range(24, 36):
        run_drift(client, auth, day[i])
        [alert] = alerts(client, auth, signal="refusal_rate", dimension="all")
        evidence = alert["evidence"]
        statistics.append((alert["status"], evidence["rules"], evidence["cusum"]["statistic"]))
        assert alert["id"] == opened["id"]
        assert alert["checkpoint_id"] == ids["B"], (day[i], alert["checkpoint_id"], statistics)
        assert alert["rollback_target"]["checkpoint_id"] == ids["A"]
        assert alert["sample_trace_ids"] == opened["sample_trace_ids"]
        assert not any(a["kind"] == "checkpoint_changed" for a in alert["annotations"])
        assert evidence["checkpoint_id"] == ids["A"]  # the numbers shown are A's day
    # The statistic still fired on A's first clean day: the case the alert used to move on.
    assert statistics[0][:2] == ("open", ["cusum"]), statistics
    [alert] = alerts(client, auth, signal="refusal_rate", dimension="all")
    assert alert["status"] == "resolved" and alert["resolution"] == "recovered", statistics
