"""A canary's 'promote' decision does not outlive newer evidence against its candidate, as a
gate's does not (docs/reference.md, "the newest evidence wins")."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from app.canaries import service as canaries
from app.core.links import Links
from app.core.settings import Settings
from tests.canaries.support import (
    MODEL,
    candidate_and_champion,
    every,
    hours_ago,
    send,
    served,
    start_canary,
)
from tests.canaries.test_webhook import drain
from tests.gates.support import add_run
from tests.gates.test_concurrent_promotions import while_held_open
from tests.gates.test_gates import EVALUATOR, gate, passing, rows_of
from tests.web.test_pages import sign_in
from tests.webhooks.receiver import receiver

Headers = dict[str, str]
PROMOTE = f"/api/v1/models/{MODEL}/promote"


def promoting_canary(client: TestClient, auth: Headers, ids: dict[str, int]) -> dict[str, Any]:
    canary = start_canary(
        client,
        auth,
        ids["v2"],
        start=hours_ago(30).isoformat(),
        signals=["refusal_rate"],
        comparisons=["served"],
        margin=0.05,
    )
    window = timedelta(hours=24)
    send(
        client,
        auth,
        served("v1", 2000, every(20, refusal=True), hours_ago(28), window, "a"),
        served("v2", 2000, every(20, refusal=True), hours_ago(28), window, "b"),
    )
    decided = client.post(f"/api/v1/canaries/{canary['id']}/evaluate", headers=auth).json()
    assert decided["decision"] == "promote", decided["evidence"]["reasons"]
    return decided


def test_a_promote_canary_is_spent_once_the_model_was_rolled_back_from_its_candidate(
    client: TestClient, auth: Headers
) -> None:
    ids = candidate_and_champion(client, auth)
    canary = promoting_canary(client, auth, ids)
    body = {"checkpoint_id": ids["v2"], "canary_id": canary["id"]}
    assert client.post(PROMOTE, json=body, headers=auth).status_code == 200
    # Production shows v2 is bad: the model is rolled back to v1 for cause.
    back = client.post(
        f"/api/v1/models/{MODEL}/rollback",
        json={"to": ids["v1"], "reason": "v2 broke production"},
        headers=auth,
    )
    assert back.status_code == 200, back.text
    again = client.post(PROMOTE, json=body, headers=auth)
    assert again.status_code == 409, again.json()
    assert "the champion changed since canary" in again.json()["detail"]


def test_a_promote_canary_does_not_promote_after_a_newer_canary_decided_rollback(
    client: TestClient, auth: Headers
) -> None:
    ids = candidate_and_champion(client, auth)
    first = promoting_canary(client, auth, ids)
    # A second canary of the same candidate, later, sees it refuse five times as often.
    second = start_canary(client, auth, ids["v2"], start=hours_ago(1.8).isoformat())
    send(
        client,
        auth,
        served("v1", 1800, every(20, refusal=True), hours_ago(1.5), timedelta(hours=1), "c"),
        served("v2", 200, every(4, refusal=True), hours_ago(1.5), timedelta(hours=1), "d"),
    )
    decided = client.post(f"/api/v1/canaries/{second['id']}/evaluate", headers=auth).json()
    assert decided["decision"] == "rollback"
    promoted = client.post(
        PROMOTE, json={"checkpoint_id": ids["v2"], "canary_id": first["id"]}, headers=auth
    )
    assert promoted.status_code == 409, promoted.json()
    assert f"canary {second['id']} decided rollback" in promoted.json()["detail"]


def test_a_promote_canary_does_not_lift_a_standing_gate_block(
    client: TestClient, auth: Headers
) -> None:
    """v2's gate blocked it on the golden set (its 40 high-risk rows went from all passing to
    half); a canary on live traffic then decided promote, and promoted it. Live traffic rarely
    holds the golden set's high-risk rows, so the canary says nothing about what the gate
    found: the block stands until a pass on that dataset."""
    ids = candidate_and_champion(client, auth)
    rows = rows_of("medical", 40, "high")
    add_run(client, auth, ids["v1"], rows, {EVALUATOR: passing(rows)})
    broken = {f"medical-{i}" for i in range(20)}
    blocked = gate(
        client, auth, add_run(client, auth, ids["v2"], rows, {EVALUATOR: passing(rows, broken)})
    )
    assert blocked["verdict"] == "block"
    canary = promoting_canary(client, auth, ids)
    refused = client.post(
        PROMOTE, json={"checkpoint_id": ids["v2"], "canary_id": canary["id"]}, headers=auth
    )
    assert refused.status_code == 409, "a canary promoted past a standing gate block"
    problem = refused.json()
    assert problem["field"] == "canary_id"
    assert f"gate {blocked['id']} blocked this checkpoint on dataset 'golden'" in problem["detail"]


def test_a_promote_decision_names_the_standing_block_the_registry_will_refuse_it_for(
    app: FastAPI, client: TestClient, auth: Headers, settings: Settings, admin_key: str
) -> None:
    """The same block, then the same canary: its 'promote' (the webhook's payload is the
    canary as the API shows it) said nothing of the block, and the page offered a Promote
    button that answered 409. The decision stands (it is about the traffic); what the user
    is told names the block."""
    ids = candidate_and_champion(client, auth)
    rows = rows_of("medical", 40, "high")
    add_run(client, auth, ids["v1"], rows, {EVALUATOR: passing(rows)})
    broken = {f"medical-{i}" for i in range(20)}
    blocked = gate(
        client, auth, add_run(client, auth, ids["v2"], rows, {EVALUATOR: passing(rows, broken)})
    )
    with receiver() as hook:
        hooked = {"url": hook.url, "events": ["canary.decided"]}
        assert client.post("/api/v1/webhooks", json=hooked, headers=auth).status_code == 201
        canary = promoting_canary(client, auth, ids)
        drain(app, settings)
        [(_headers, body)] = hook.requests
    block = f"gate {blocked['id']} blocked this checkpoint on dataset 'golden'"
    assert block in canary["evidence"]["promotion_refused"] and block in canary["reason"]
    assert block in canary["promotion_refused"]
    data = json.loads(body)["data"]
    assert data["decision"] == "promote"
    assert block in data["evidence"]["promotion_refused"] and block in data["reason"]
    assert block in data["promotion_refused"]
    sign_in(client, admin_key)
    page = client.get(f"/canaries/{canary['id']}").text
    assert "Promote v2</button>" not in page
    escaped = block.replace("'", "&#39;")
    assert f'id="promotion-refused">The registry refuses this promotion: {escaped}' in page


def test_a_canary_rolled_back_while_its_promotion_is_asked_does_not_promote(
    app: FastAPI, client: TestClient, auth: Headers, settings: Settings
) -> None:
    """The canary decided promote; someone confirms a rollback of its candidate (refusals
    went up after the decision) at the moment a pipeline asks to promote on the canary's
    word. The promotion read the canary as 'promote' before the rollback was committed, and
    until 2026-12-01 wrote its promoted_at over the rollback: on PostgreSQL both answered
    success, v2 became the champion with its canary rolled back and promoted at once. The
    promotion now takes the canary's word only while it still stands."""
    ids = candidate_and_champion(client, auth)
    canary = promoting_canary(client, auth, ids)

    def roll_back(session: Session, principal: Any, links: Links) -> Any:
        return canaries.roll_back(session, principal, links, canary["id"], "refusals doubled")

    def promote() -> httpx.Response:
        body = {"checkpoint_id": ids["v2"], "canary_id": canary["id"]}
        return client.post(PROMOTE, json=body, headers=auth)

    _, second = while_held_open(app, settings, roll_back, promote)
    assert second.status_code == 409, second.text
    assert client.get(f"/api/v1/models/{MODEL}", headers=auth).json()["champion"]["id"] == ids["v1"]
    after = client.get(f"/api/v1/canaries/{canary['id']}", headers=auth).json()
    assert (after["status"], after["promoted_at"]) == ("rollback", None)
    assert after["rolled_back_at"] is not None
    checkpoint = client.get(f"/api/v1/checkpoints/{ids['v2']}", headers=auth).json()
    assert checkpoint["status"] == "rolled_back"


def test_what_the_registry_answers_now_is_read_live_on_the_api_and_the_page(
    client: TestClient, auth: Headers, admin_key: str
) -> None:
    """The policy refused canaries when the canary decided promote, and was set back to
    accepting them: the API's evidence still said refused and the page listed "the registry
    refuses the promotion for now" beside a Promote button that answered 200. The decided
    evidence keeps its answer, labelled as the decision's; the canary's `promotion_refused`
    and the page say what the registry answers now."""
    ids = candidate_and_champion(client, auth)
    policy = f"/api/v1/models/{MODEL}/gate-policy"
    client.put(policy, json={"accept_canary": False}, headers=auth).raise_for_status()
    canary = promoting_canary(client, auth, ids)
    assert "accept_canary" in canary["evidence"]["promotion_refused"]
    assert "accept_canary" in canary["promotion_refused"] and "when decided" in canary["reason"]
    client.put(policy, json={"accept_canary": True}, headers=auth).raise_for_status()
    now = client.get(f"/api/v1/canaries/{canary['id']}", headers=auth).json()
    assert now["promotion_refused"] is None
    assert "accept_canary" in now["evidence"]["promotion_refused"]  # the decision's answer
    sign_in(client, admin_key)
    page = client.get(f"/canaries/{canary['id']}").text
    assert "Promote v2</button>" in page
    assert "refuses the promotion for now" not in page and "promotion-refused" not in page
    body = {"checkpoint_id": ids["v2"], "canary_id": canary["id"]}
    assert client.post(PROMOTE, json=body, headers=auth).status_code == 200


def test_a_champion_changed_and_back_since_the_start_offers_no_promote_button(
    client: TestClient, auth: Headers, admin_key: str
) -> None:
    """v3 was forced in and rolled back to v1 after the canary decided promote: promoting on
    it answers 409 (the champion changed since it started), and the page, which checked a
    copy of part of the registry's checks, still offered the Promote button."""
    ids = candidate_and_champion(client, auth)
    canary = promoting_canary(client, auth, ids)
    forced = {"checkpoint_id": ids["v3"], "force": True, "reason": "hotfix"}
    client.post(PROMOTE, json=forced, headers=auth).raise_for_status()
    back = {"to": ids["v1"], "reason": "hotfix reverted"}
    client.post(f"/api/v1/models/{MODEL}/rollback", json=back, headers=auth).raise_for_status()
    body = {"checkpoint_id": ids["v2"], "canary_id": canary["id"]}
    refused = client.post(PROMOTE, json=body, headers=auth)
    assert refused.status_code == 409
    changed = f"the champion changed since canary {canary['id']} started"
    assert changed in refused.json()["detail"]
    now = client.get(f"/api/v1/canaries/{canary['id']}", headers=auth).json()
    assert changed in now["promotion_refused"]
    sign_in(client, admin_key)
    page = client.get(f"/canaries/{canary['id']}").text
    assert "Promote v2</button>" not in page
    assert f'id="promotion-refused">The registry refuses this promotion: {changed}' in page
