"""The canary API's contract: shapes, status codes, the field each refusal names, and the
lifecycle (start, read, evaluate, stop, roll back, promote on a canary's decision)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.canaries.schemas import EvidenceOut
from app.core.db import utcnow
from app.core.settings import Settings
from app.drift.signals import RATE_SIGNALS
from app.main import create_app
from app.models import AuditLog, Checkpoint
from app.models.registry import CheckpointStatus
from tests.canaries.support import (
    MODEL,
    candidate_and_champion,
    every,
    hours_ago,
    send,
    served,
    start_canary,
)
from tests.conftest import new_key
from tests.web.test_pages import sign_in

Headers = dict[str, str]


def test_start_read_list_and_the_body_contract(client: TestClient, auth: Headers) -> None:
    ids = candidate_and_champion(client, auth)
    before = utcnow()
    body = start_canary(client, auth, ids["v2"])
    assert body["model"] == MODEL and body["checkpoint_id"] == ids["v2"]
    assert body["checkpoint_version"] == "v2"
    assert (body["champion_id"], body["champion_version"]) == (ids["v1"], "v1")
    assert body["status"] == "running" and body["decision"] is None
    assert body["started_at"] >= before.isoformat()[:19]
    assert body["signals"] == [
        "eval_fail_rate",
        "fallback_rate",
        "refusal_rate",
        "thumbs_down_rate",
        "over_refusal_rate",
        "under_refusal_rate",
    ]
    assert body["comparisons"] == ["served", "shadow"]
    assert (body["margin"], body["alpha"], body["max_days"], body["min_hours"]) == (
        0.01,
        0.05,
        14,
        24,
    )
    assert body["evidence"] is None
    assert body["links"] == {"canary": f"http://plumbline.test/canaries/{body['id']}"}

    read = client.get(f"/api/v1/canaries/{body['id']}", headers=auth)
    assert read.status_code == 200
    evidence = read.json()["evidence"]  # reading a running canary evaluates it
    assert evidence is not None and evidence["reasons"] == ["no guarded signal measured yet"]
    # 6 signals served + 5 pairable shadow, one cohort: the rollback family splits alpha.
    assert len(evidence["comparisons"]) == 11
    assert {c["alpha_lower"] for c in evidence["comparisons"]} == {0.05 / 11}
    assert {c["verdict"] for c in evidence["comparisons"]} == {"unmeasured"}

    listed = client.get(f"/api/v1/models/{MODEL}/canaries", headers=auth)
    assert listed.status_code == 200
    assert [c["id"] for c in listed.json()["items"]] == [body["id"]]
    assert listed.json()["next_cursor"] is None
    assert client.get("/api/v1/models/nope/canaries", headers=auth).status_code == 404
    assert client.get("/api/v1/canaries/999999", headers=auth).status_code == 404


def test_bad_input_names_the_field(client: TestClient, auth: Headers) -> None:
    ids = candidate_and_champion(client, auth)
    other = client.post(
        "/api/v1/checkpoints", json={"model": "other", "version": "x1"}, headers=auth
    ).json()
    path = f"/api/v1/models/{MODEL}/canaries"
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"checkpoint_id": other["id"]}, 422, "checkpoint_id"),
        ({"checkpoint_id": 987654}, 404, "checkpoint_id"),
        ({"checkpoint_id": ids["v2"], "signals": ["refusal_rate", "nope"]}, 422, "signals.1"),
        ({"checkpoint_id": ids["v2"], "signals": []}, 422, "signals"),
        ({"checkpoint_id": ids["v2"], "signals": ["refusal_rate"] * 2}, 422, "signals"),
        ({"checkpoint_id": ids["v2"], "margin": 0}, 422, "margin"),
        ({"checkpoint_id": ids["v2"], "margin": 0.7}, 422, "margin"),
        (
            {
                "checkpoint_id": ids["v2"],
                "signals": ["refusal_rate"],
                "margins": {"fallback_rate": 0.1},
            },
            422,
            "margins",
        ),
        (
            {"checkpoint_id": ids["v2"], "cohorts": [{"dimension": "all", "value": "all"}]},
            422,
            "cohorts.0",
        ),
        ({"checkpoint_id": ids["v2"], "comparisons": ["canary"]}, 422, "comparisons.0"),
        *(  # shadow answers get no feedback: nothing would judge thumbs-down
            ({"checkpoint_id": ids["v2"], "comparisons": ["shadow"], **named}, 422, "body")
            for named in (
                {"signals": ["thumbs_down_rate"]},
                {"signals": list(RATE_SIGNALS)},
                {"margins": {"thumbs_down_rate": 0.02}},
            )
        ),
        ({"checkpoint_id": ids["v2"], "alpha": 0.5}, 422, "alpha"),
        # Split over the family it is 0 (or 1/alpha overflows): every read would answer 500.
        ({"checkpoint_id": ids["v2"], "alpha": 5e-324}, 422, "alpha"),
        ({"checkpoint_id": ids["v2"], "alpha": 1e-310}, 422, "alpha"),
        ({"checkpoint_id": ids["v2"], "max_days": 0}, 422, "max_days"),
        ({"checkpoint_id": ids["v2"], "max_days": 1, "min_hours": 48}, 422, "min_hours"),
        (
            {"checkpoint_id": ids["v2"], "start": (utcnow() + timedelta(hours=2)).isoformat()},
            422,
            "start",
        ),
        (
            {"checkpoint_id": ids["v2"], "start": (utcnow() - timedelta(days=20)).isoformat()},
            422,
            "start",
        ),
        ({"checkpoint_id": ids["v2"], "surprise": 1}, 422, "surprise"),
    ]
    for body, code, field in cases:
        response = client.post(path, json=body, headers=auth)
        assert response.status_code == code, (body, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        named = problem.get("field") or problem["errors"][0]["field"]
        assert named.removeprefix("body.").startswith(field), (body, problem)
        if field == "body":
            assert "nothing judges thumbs_down_rate" in problem["errors"][0]["message"]
    assert (
        client.post(
            "/api/v1/models/nope/canaries", json={"checkpoint_id": ids["v2"]}, headers=auth
        ).status_code
        == 404
    )
    # Nothing was half-written.
    assert client.get(f"/api/v1/models/{MODEL}/canaries", headers=auth).json()["items"] == []
    # By default a shadow-only canary guards every signal its shadow answers can show.
    shadow_only = start_canary(client, auth, ids["v2"], comparisons=["shadow"])
    assert "thumbs_down_rate" not in shadow_only["signals"] and len(shadow_only["signals"]) == 5


def test_a_canary_longer_than_the_event_retention_is_refused(settings: Settings) -> None:
    """Retention deletes events older than PLUMBLINE_RETENTION_DAYS: a canary allowed to run
    longer would lose its first days' events mid-run and decide on what is left. It is a
    422 naming max_days and the retention, nothing written; one that fits is started."""
    app = create_app(settings.model_copy(update={"retention_days": 7}))
    with TestClient(app) as client:
        auth = {"Authorization": f"Bearer {new_key(app, 'acme')}"}
        ids = candidate_and_champion(client, auth)
        path = f"/api/v1/models/{MODEL}/canaries"
        for body in ({"checkpoint_id": ids["v2"]}, {"checkpoint_id": ids["v2"], "max_days": 8}):
            refused = client.post(path, json=body, headers=auth)
            assert refused.status_code == 422, refused.text
            assert refused.headers["content-type"] == "application/problem+json"
            problem = refused.json()
            assert problem["field"] == "max_days"
            assert "PLUMBLINE_RETENTION_DAYS" in problem["detail"], problem
            assert "7 days" in problem["detail"], problem
        assert client.get(path, headers=auth).json()["items"] == []
        assert start_canary(client, auth, ids["v2"], max_days=7)["max_days"] == 7


def test_conflicts_the_champion_no_champion_and_one_running_canary(
    client: TestClient, auth: Headers
) -> None:
    ids = candidate_and_champion(client, auth)
    path = f"/api/v1/models/{MODEL}/canaries"
    champion = client.post(path, json={"checkpoint_id": ids["v1"]}, headers=auth)
    assert champion.status_code == 409 and champion.json()["field"] == "checkpoint_id"
    lonely = client.post(
        "/api/v1/checkpoints", json={"model": "lonely", "version": "a"}, headers=auth
    )
    no_champion = client.post(
        "/api/v1/models/lonely/canaries", json={"checkpoint_id": lonely.json()["id"]}, headers=auth
    )
    assert no_champion.status_code == 409 and "no champion" in no_champion.json()["detail"]

    first = start_canary(client, auth, ids["v2"])
    second = client.post(path, json={"checkpoint_id": ids["v3"]}, headers=auth)
    assert second.status_code == 409 and second.json()["canary_id"] == first["id"]

    stopped = client.post(
        f"/api/v1/canaries/{first['id']}/stop", json={"reason": "wrong build"}, headers=auth
    )
    assert stopped.status_code == 200
    assert stopped.json()["status"] == "stopped" and stopped.json()["decision"] is None
    assert stopped.json()["reason"] == "wrong build" and stopped.json()["ended_by"] == "acme-admin"
    again = client.post(f"/api/v1/canaries/{first['id']}/stop", json={"reason": "x"}, headers=auth)
    assert again.status_code == 409
    blank = client.post(f"/api/v1/canaries/{first['id']}/stop", json={"reason": " "}, headers=auth)
    assert blank.status_code == 422
    # Once stopped, the model may start another.
    assert client.post(path, json={"checkpoint_id": ids["v3"]}, headers=auth).status_code == 201


def test_evaluate_answers_the_same_body_and_stays_running_on_thin_evidence(
    client: TestClient, auth: Headers
) -> None:
    ids = candidate_and_champion(client, auth)
    canary = start_canary(client, auth, ids["v2"], start=hours_ago(2).isoformat())
    window = timedelta(hours=1)
    send(
        client,
        auth,
        served("v1", 40, every(10, refusal=True), hours_ago(1.5), window),
        served("v2", 5, every(10, refusal=True), hours_ago(1.5), window),
    )
    evaluated = client.post(f"/api/v1/canaries/{canary['id']}/evaluate", headers=auth)
    assert evaluated.status_code == 200
    body = evaluated.json()
    assert body["status"] == "running" and body["evaluated_at"] is not None
    refusal = next(
        c
        for c in body["evidence"]["comparisons"]
        if c["signal"] == "refusal_rate" and c["comparison"] == "served"
    )
    assert refusal["candidate"] == {"events": 5, "with_signal": 1, "rate": 0.2}
    assert refusal["champion"] == {"events": 40, "with_signal": 4, "rate": 0.1}
    assert refusal["difference"] == 0.1
    assert refusal["lower"] < refusal["difference"] < refusal["upper"]
    assert refusal["verdict"] == "undecided"
    assert any("refusal_rate on all=all" in r for r in body["evidence"]["reasons"])
    assert (
        client.get(f"/api/v1/canaries/{canary['id']}", headers=auth).json()["evidence"][
            "comparisons"
        ]
        == body["evidence"]["comparisons"]
    )


def test_rollback_by_hand_marks_the_candidate_and_is_audited(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    ids = candidate_and_champion(client, auth)
    canary = start_canary(client, auth, ids["v2"])
    path = f"/api/v1/canaries/{canary['id']}/rollback"
    assert client.post(path, json={}, headers=auth).status_code == 422
    rolled = client.post(path, json={"reason": "pager says so"}, headers=auth)
    assert rolled.status_code == 200, rolled.text
    body = rolled.json()
    assert (body["status"], body["decision"]) == ("rollback", "rollback")
    assert body["ended_by"] == "acme-admin" and body["rolled_back_at"] is not None
    assert body["rollback"] == {
        "checkpoint_id": ids["v2"],
        "version": "v2",
        "url": f"http://plumbline.test/canaries/{canary['id']}/rollback",
    }
    assert client.post(path, json={"reason": "again"}, headers=auth).status_code == 409
    with app.state.sessionmaker() as session:
        candidate = session.get_one(Checkpoint, ids["v2"])
        assert candidate.status is CheckpointStatus.rolled_back
        actions = session.scalars(select(AuditLog.action).order_by(AuditLog.id)).all()
    assert actions[-2:] == ["canary.started", "canary.rolled_back"]


def test_promotion_needs_a_promote_decision_and_a_policy_that_accepts_it(
    client: TestClient, auth: Headers
) -> None:
    ids = candidate_and_champion(client, auth)
    canary = start_canary(
        client,
        auth,
        ids["v2"],
        start=hours_ago(30).isoformat(),
        signals=["refusal_rate"],
        comparisons=["served"],
        margin=0.05,
    )
    promote = f"/api/v1/models/{MODEL}/promote"
    running = client.post(
        promote, json={"checkpoint_id": ids["v2"], "canary_id": canary["id"]}, headers=auth
    )
    assert running.status_code == 409 and running.json()["field"] == "canary_id"
    wrong = client.post(
        promote, json={"checkpoint_id": ids["v3"], "canary_id": canary["id"]}, headers=auth
    )
    assert wrong.status_code == 409 and "not this one" in wrong.json()["detail"]

    # 2,000 calls a side with the same 5% refusal rate over the last day: non-inferior.
    window = timedelta(hours=24)
    send(
        client,
        auth,
        served("v1", 2000, every(20, refusal=True), hours_ago(26), window),
        served("v2", 2000, every(20, refusal=True), hours_ago(26), window),
    )
    decided = client.post(f"/api/v1/canaries/{canary['id']}/evaluate", headers=auth).json()
    assert (decided["status"], decided["decision"]) == ("promote", "promote"), decided["evidence"]

    client.put(
        f"/api/v1/models/{MODEL}/gate-policy", json={"accept_canary": False}, headers=auth
    ).raise_for_status()
    refused = client.post(
        promote, json={"checkpoint_id": ids["v2"], "canary_id": canary["id"]}, headers=auth
    )
    assert refused.status_code == 409 and "accept_canary" in refused.json()["detail"]
    client.put(
        f"/api/v1/models/{MODEL}/gate-policy", json={"accept_canary": True}, headers=auth
    ).raise_for_status()
    promoted = client.post(
        promote, json={"checkpoint_id": ids["v2"], "canary_id": canary["id"]}, headers=auth
    )
    assert promoted.status_code == 200, promoted.text
    state = promoted.json()
    assert state["champion"]["id"] == ids["v2"]
    latest = state["history"][0]
    assert latest["reason"] == f"canary {canary['id']} decided promote"
    assert latest["forced"] is False and latest["gate_id"] is None
    after = client.get(f"/api/v1/canaries/{canary['id']}", headers=auth).json()
    assert after["promoted_at"] is not None
    rollback = client.post(
        f"/api/v1/canaries/{canary['id']}/rollback", json={"reason": "late"}, headers=auth
    )
    assert rollback.status_code == 409 and "roll the model back" in rollback.json()["detail"]


def test_the_page_shows_alpha_margins_and_candidate_hours_as_they_are(
    client: TestClient, auth: Headers, admin_key: str
) -> None:
    """alpha 0.001 read '0.00' and a margin of 0.0004 '0.000' (alpha 0.005 even '0.01'); and
    the hours shown were the window's, 30, while the promotion waited on the candidate's 2."""
    ids = candidate_and_champion(client, auth)
    canary = start_canary(
        client,
        auth,
        ids["v2"],
        start=hours_ago(30).isoformat(),
        signals=["refusal_rate"],
        margin=0.0004,
        alpha=0.001,
    )
    send(
        client,
        auth,
        served("v1", 400, every(20, refusal=True), hours_ago(2), timedelta(hours=1)),
        served("v2", 100, every(20, refusal=True), hours_ago(2), timedelta(hours=1)),
    )
    body = client.post(f"/api/v1/canaries/{canary['id']}/evaluate", headers=auth).json()
    assert body["evidence"]["hours"] == pytest.approx(30.0, abs=0.01)
    assert body["evidence"]["traffic_hours"] == pytest.approx(2.0, abs=0.01)
    sign_in(client, admin_key)
    page = client.get(f"/canaries/{canary['id']}")
    assert page.status_code == 200, page.text
    stats = re.findall(
        r'class="stat-value">([^<]*)</span><span class="stat-label">([^<]*)<', page.text
    )
    shown = {label: value for value, label in stats}
    assert shown["error rate (alpha)"] == "0.001"
    assert shown["margin"] == "0.0004"
    assert shown["of candidate traffic"] == "2.0 h"
    assert '<td class="num">0.0004</td>' in page.text


def test_evidence_stored_before_traffic_hours_reads_its_window_hours() -> None:
    """Canaries decided before `traffic_hours` was recorded waited on the window's hours."""
    stored = {
        "evaluated_at": "2026-11-01T00:00:00Z",
        "window_start": "2026-10-31T00:00:00Z",
        "window_end": "2026-11-01T00:00:00Z",
        "hours": 24.0,
        "comparisons": [],
        "reasons": [],
    }
    assert EvidenceOut.model_validate(stored).traffic_hours == 24.0


def test_force_with_a_reason_promotes_past_a_refused_canary_and_audits_it(
    client: TestClient, auth: Headers, app: FastAPI
) -> None:
    """The 409 of a canary that has not decided 'promote' says "or force with a written
    reason"; force with that canary forces too (it answered 409 again), as it does past a
    refused gate, and the audit entry keeps the canary it went past."""
    ids = candidate_and_champion(client, auth)
    canary = start_canary(
        client, auth, ids["v2"], signals=["refusal_rate"], comparisons=["served"], margin=0.05
    )
    promote = f"/api/v1/models/{MODEL}/promote"
    body = {"checkpoint_id": ids["v2"], "canary_id": canary["id"], "force": True}
    no_reason = client.post(promote, json=body, headers=auth)
    assert no_reason.status_code == 409 and "or force with a written reason" in no_reason.text
    reason = "the incident needs v2 now; canary evidence reviewed by hand"
    forced = client.post(promote, json={**body, "reason": reason}, headers=auth)
    assert forced.status_code == 200, forced.text
    entry = forced.json()["history"][0]
    assert (entry["forced"], entry["reason"]) == (True, reason)
    with app.state.sessionmaker() as session:
        audited = session.scalars(
            select(AuditLog).where(AuditLog.action == "champion.promote").order_by(AuditLog.id)
        ).all()[-1]
    assert audited.details["forced"] is True and audited.details["canary_id"] is None
    assert audited.details["refused_canary"]["canary_id"] == canary["id"]
    assert "is 'running'" in audited.details["refused_canary"]["detail"]
    ended = client.post(f"/api/v1/canaries/{canary['id']}/evaluate", headers=auth).json()
    assert ended["promoted_at"] is None  # the canary was no basis of the promotion
    assert (ended["status"], ended["decision"], ended["promotion_refused"]) == (
        "stopped",
        None,
        None,
    )
    assert f"(now checkpoint {ids['v2']}, the canary's candidate)" in ended["reason"]
