"""What a canary decides on: a signal only the champion's side reports is measured, not set
aside (docs/statistics.md §12.1, §12.6), and the baseline is one champion throughout: a canary
cannot start before the champion took over, and stops when it changes, even if it changes
back."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.canaries.service import history
from app.models import Canary, ChampionHistory, Checkpoint
from app.models.registry import CheckpointStatus
from tests.canaries.support import (
    MODEL,
    candidate_and_champion,
    every,
    hours_ago,
    send,
    served,
    shadows,
    start_canary,
)

Headers = dict[str, str]
DAY = timedelta(hours=24)
HOUR = timedelta(hours=1)


def test_a_shadow_only_canary_does_not_promote_past_a_signal_the_candidate_stopped_reporting(
    client: TestClient, auth: Headers
) -> None:
    ids = candidate_and_champion(client, auth)
    canary = start_canary(
        client,
        auth,
        ids["v2"],
        start=hours_ago(30).isoformat(),
        signals=["refusal_rate", "fallback_rate"],
        comparisons=["shadow"],
        margin=0.05,
    )

    def champion(i: int) -> dict[str, Any]:
        return {"refusal": i % 20 == 0, "fallback": i % 20 == 0}

    def candidate(i: int) -> dict[str, Any]:
        # The candidate's answers carry no refusal flag at all (say its refusal detector
        # broke on the new output format); fallback as the champion's.
        return {"fallback": i % 20 == 0}

    send(
        client,
        auth,
        served("v1", 2000, champion, hours_ago(28), DAY, "req"),
        shadows("v2", "req", 2000, candidate, hours_ago(28), DAY),
    )
    decided = client.post(f"/api/v1/canaries/{canary['id']}/evaluate", headers=auth).json()
    refusal = next(c for c in decided["evidence"]["comparisons"] if c["signal"] == "refusal_rate")
    # The champion judged refusal on 2,000 requests; nothing showed the candidate
    # non-inferior on it: measured, unproven, and the canary keeps running.
    assert refusal["verdict"] == "undecided" and refusal["pairs"] == 0
    assert decided["status"] == "running" and decided["decision"] is None


def test_a_champion_that_changed_and_changed_back_ends_the_canary(
    client: TestClient, auth: Headers
) -> None:
    ids = candidate_and_champion(client, auth)
    canary = start_canary(client, auth, ids["v2"], start=hours_ago(2).isoformat())
    promote = client.post(
        f"/api/v1/models/{MODEL}/promote",
        json={"checkpoint_id": ids["v3"], "force": True, "reason": "hotfix"},
        headers=auth,
    )
    assert promote.status_code == 200
    back = client.post(
        f"/api/v1/models/{MODEL}/rollback",
        json={"to": ids["v1"], "reason": "hotfix broke things"},
        headers=auth,
    )
    assert back.status_code == 200
    # The baseline was not the champion for a while: the two arms no longer saw the same
    # traffic, which is what ends a canary when the champion changes.
    body = client.post(f"/api/v1/canaries/{canary['id']}/evaluate", headers=auth).json()
    assert body["status"] == "stopped", body["status"]
    assert "changed during the canary and back" in body["reason"]


def test_a_canary_cannot_start_before_the_champion_took_over(
    app: Any, client: TestClient, auth: Headers
) -> None:
    """v3 replaced v1 three hours ago; a canary of v2 started ten hours ago would compare v2's
    ten hours with v3's three (v2 refusing as often as whoever was champion, 20% then 2%,
    was rolled back on those hours), so such a start is refused and a later one accepted."""
    ids = candidate_and_champion(client, auth)
    promoted = client.post(
        f"/api/v1/models/{MODEL}/promote",
        json={"checkpoint_id": ids["v3"], "force": True, "reason": "new champion"},
        headers=auth,
    )
    assert promoted.status_code == 200
    with app.state.sessionmaker() as session:  # it happened 3 hours ago
        session.execute(
            update(ChampionHistory)
            .where(ChampionHistory.checkpoint_id == ids["v3"])
            .values(created_at=hours_ago(3))
        )
        session.commit()
    early = client.post(
        f"/api/v1/models/{MODEL}/canaries",
        json={"checkpoint_id": ids["v2"], "start": hours_ago(10).isoformat()},
        headers=auth,
    )
    assert early.status_code == 422 and early.json()["field"] == "start", early.text
    assert "before the champion was replaced" in early.json()["detail"]
    start_canary(client, auth, ids["v2"], start=hours_ago(2.9).isoformat())


def _replace_champion_half_an_hour_ago(
    app: Any, client: TestClient, auth: Headers, to: int
) -> None:
    """v3 forced in as champion (a hotfix, say), recorded as 30 minutes ago."""
    client.post(
        f"/api/v1/models/{MODEL}/promote",
        json={"checkpoint_id": to, "force": True, "reason": "hotfix"},
        headers=auth,
    ).raise_for_status()
    with app.state.sessionmaker() as session:
        session.execute(
            update(ChampionHistory)
            .where(ChampionHistory.checkpoint_id == to)
            .values(created_at=hours_ago(0.5))
        )
        session.commit()


def _served_refusal(body: dict[str, Any]) -> dict[str, Any]:
    return next(
        c
        for c in body["evidence"]["comparisons"]
        if (c["comparison"], c["signal"], c["cohort"]["value"]) == ("served", "refusal_rate", "all")
    )


def test_harm_shown_before_the_champion_changed_still_rolls_back(
    app: Any, client: TestClient, auth: Headers
) -> None:
    """The champion's arm held until it was replaced: a rollback the traffic before the change
    shows is decided on that traffic, not dropped as 'champion changed' (with the candidate
    left unblocked and no rollback webhook)."""
    ids = candidate_and_champion(client, auth)
    canary = start_canary(client, auth, ids["v2"], start=hours_ago(2).isoformat())
    send(
        client,
        auth,
        served("v1", 1800, every(20, refusal=True), hours_ago(1.5), HOUR),
        served("v2", 200, every(4, refusal=True), hours_ago(1.5), HOUR),
        # After the change v2 is compared with nobody: its calls then are not counted.
        served("v2", 400, every(2, refusal=False), hours_ago(0.4), HOUR / 4, "late"),
    )
    _replace_champion_half_an_hour_ago(app, client, auth, ids["v3"])
    body = client.post(f"/api/v1/canaries/{canary['id']}/evaluate", headers=auth).json()
    assert (body["status"], body["decision"]) == ("rollback", "rollback"), body["reason"]
    assert body["reason"].startswith("refusal_rate on all=all (served): the candidate is worse")
    assert "before the champion changed" in body["reason"]
    refusal = _served_refusal(body)
    assert refusal["candidate"]["events"] == 200 and refusal["verdict"] == "worse"
    with app.state.sessionmaker() as session:
        assert session.get_one(Checkpoint, ids["v2"]).status is CheckpointStatus.blocked


def test_harm_shown_before_the_candidate_itself_was_promoted_stops_without_a_rollback(
    app: Any, client: TestClient, auth: Headers
) -> None:
    """The same harm, but the champion now is the candidate (forced in past the running
    canary). Before, the canary decided 'rollback': a rollback link and a `canary.decided`
    rollback webhook for the checkpoint serving as champion, a 'Roll back' button whose
    rollback answers 409, and the champion marked blocked. It stops instead, its reason
    saying what the traffic before the promotion showed and what to do."""
    ids = candidate_and_champion(client, auth)
    canary = start_canary(client, auth, ids["v2"], start=hours_ago(2).isoformat())
    send(
        client,
        auth,
        served("v1", 1800, every(20, refusal=True), hours_ago(1.5), HOUR),
        served("v2", 200, every(4, refusal=True), hours_ago(1.5), HOUR),
    )
    _replace_champion_half_an_hour_ago(app, client, auth, ids["v2"])
    body = client.post(f"/api/v1/canaries/{canary['id']}/evaluate", headers=auth).json()
    assert (body["status"], body["decision"], body["rollback"]) == ("stopped", None, None)
    assert body["reason"].startswith(
        f"the champion changed (now checkpoint {ids['v2']}, the canary's candidate)"
    )
    assert "before it, refusal_rate on all=all (served): the candidate is worse" in body["reason"]
    assert body["reason"].endswith("roll the model back if that still holds")
    assert _served_refusal(body)["verdict"] == "worse"  # the evidence keeps what it showed
    with app.state.sessionmaker() as session:
        assert session.get_one(Checkpoint, ids["v2"]).status is CheckpointStatus.champion


def test_a_changed_champion_stops_the_canary_with_the_evidence_up_to_the_change(
    app: Any, client: TestClient, auth: Headers
) -> None:
    ids = candidate_and_champion(client, auth)
    canary = start_canary(client, auth, ids["v2"], start=hours_ago(2).isoformat())
    send(
        client,
        auth,
        served("v1", 300, every(20, refusal=True), hours_ago(1.5), HOUR),
        served("v2", 30, every(20, refusal=True), hours_ago(1.5), HOUR),
        served("v2", 40, every(20, refusal=True), hours_ago(0.4), HOUR / 4, "late"),
    )
    _replace_champion_half_an_hour_ago(app, client, auth, ids["v3"])
    body = client.post(f"/api/v1/canaries/{canary['id']}/evaluate", headers=auth).json()
    assert (body["status"], body["decision"]) == ("stopped", None)
    assert body["reason"].startswith(f"the champion changed (now checkpoint {ids['v3']})")
    # What the comparison showed while its baseline held (it had not been looked at).
    refusal = _served_refusal(body)
    assert (refusal["candidate"]["events"], refusal["champion"]["events"]) == (30, 300)
    window_end = datetime.fromisoformat(body["evidence"]["window_end"])
    assert window_end < hours_ago(0.49)
    # The page's chart shows that window, not the calls after the change.
    with app.state.sessionmaker() as session:
        row = session.scalars(select(Canary).where(Canary.id == canary["id"])).one()
        shown = history(session, row)
    assert shown.times[-1] == window_end
    assert int(shown.bounds[0].difference.shape[0]) == len(shown.times)
