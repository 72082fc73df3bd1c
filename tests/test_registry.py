"""The checkpoint registry over REST: registration, lineage, champions, rollback, audit."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.gates.schemas import GatePolicySpec
from app.models import AuditLog, GatePolicy
from app.models.registry import NO_VERDICT_FIELDS

Headers = dict[str, str]


def register(client: TestClient, auth: Headers, **body: Any) -> Any:
    body.setdefault("model", "support-bot")
    return client.post("/api/v1/checkpoints", json=body, headers=auth)


def test_register_is_idempotent_and_conflicts_on_a_different_body(
    client: TestClient, auth: Headers
) -> None:
    body = {
        "version": "v1",
        "kind": "lora",
        "base_model": "llama-3-8b",
        "training": {"optimizer": "adamw", "learning_rate": 2e-4, "batch_size": 16},
        "tags": ["weekly", "support"],
        "endpoint": {"base_url": "http://127.0.0.1:9/v1", "model": "support-v1"},
    }
    first = register(client, auth, **body)
    assert first.status_code == 201, first.text
    again = register(client, auth, **{**body, "tags": ["support", "weekly"]})
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    conflict = register(client, auth, **{**body, "kind": "full"})
    assert conflict.status_code == 409
    assert conflict.headers["content-type"] == "application/problem+json"
    assert "different body" in conflict.json()["detail"]
    got = client.get(f"/api/v1/checkpoints/{first.json()['id']}", headers=auth).json()
    assert got["training"]["learning_rate"] == 2e-4
    assert got["kind"] == "lora" and got["status"] == "registered"


def test_parent_lineage_by_version_or_id_within_the_same_model(
    client: TestClient, auth: Headers
) -> None:
    base = register(client, auth, version="base", kind="base").json()
    by_version = register(client, auth, version="sft-1", parent="base").json()
    by_id = register(client, auth, version="rlhf-1", kind="rlhf", parent=by_version["id"]).json()
    assert by_version["parent_id"] == base["id"]
    assert by_id["parent_id"] == by_version["id"] and by_id["parent_version"] == "sft-1"
    missing = register(client, auth, version="x", parent="nope")
    assert missing.status_code == 422 and "parent" in missing.json()["detail"]
    other_model = register(client, auth, model="other-bot", version="y", parent=base["id"])
    assert other_model.status_code == 422


def test_list_filters_by_model_and_paginates_with_a_cursor(
    client: TestClient, auth: Headers
) -> None:
    for i in range(5):
        register(client, auth, version=f"v{i}")
    register(client, auth, model="other-bot", version="v0")
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"model": "support-bot", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = client.get("/api/v1/checkpoints", params=params, headers=auth).json()
        seen += [item["version"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["v4", "v3", "v2", "v1", "v0"]
    bad = client.get("/api/v1/checkpoints", params={"cursor": "garbage!"}, headers=auth)
    assert bad.status_code == 400


def promote(client: TestClient, auth: Headers, checkpoint_id: int, **body: Any) -> Any:
    body["checkpoint_id"] = checkpoint_id
    return client.post("/api/v1/models/support-bot/promote", json=body, headers=auth)


def test_promotion_needs_a_reason_first_then_a_gate_or_force(
    client: TestClient, auth: Headers
) -> None:
    v1 = register(client, auth, version="v1").json()["id"]
    v2 = register(client, auth, version="v2").json()["id"]
    assert promote(client, auth, v1).status_code == 422
    first = promote(client, auth, v1, reason="initial champion")
    assert first.status_code == 200, first.text
    assert first.json()["champion"]["id"] == v1
    assert first.json()["rollback_target"] is None
    unguarded = promote(client, auth, v2, reason="looks fine")
    assert unguarded.status_code == 409 and "gate" in unguarded.json()["detail"]
    assert promote(client, auth, v2, force=True).status_code == 422
    forced = promote(client, auth, v2, force=True, reason="hotfix for outage #12")
    assert forced.status_code == 200
    state = forced.json()
    assert state["champion"]["id"] == v2
    assert state["rollback_target"] == {"checkpoint_id": v1, "version": "v1"}
    assert state["history"][0]["forced"] is True
    assert state["history"][0]["reason"] == "hotfix for outage #12"
    assert promote(client, auth, v2, force=True, reason="again").status_code == 409
    retired = client.get(f"/api/v1/checkpoints/{v1}", headers=auth).json()
    assert retired["status"] == "retired"


def test_rollback_skips_champions_that_were_rolled_back_for_cause(
    client: TestClient, auth: Headers
) -> None:
    ids = {v: register(client, auth, version=v).json()["id"] for v in ("v1", "v2", "v3", "v4")}
    none_yet = client.post(
        "/api/v1/models/support-bot/rollback", json={"reason": "x"}, headers=auth
    )
    assert none_yet.status_code == 409
    promote(client, auth, ids["v1"], reason="first")
    only_one = client.post(
        "/api/v1/models/support-bot/rollback", json={"reason": "x"}, headers=auth
    )
    assert only_one.status_code == 409 and "known-good" in only_one.json()["detail"]
    promote(client, auth, ids["v2"], force=True, reason="ship v2")
    promote(client, auth, ids["v3"], force=True, reason="ship v3")
    back = client.post(
        "/api/v1/models/support-bot/rollback", json={"reason": "v3 refuses too much"}, headers=auth
    ).json()
    assert back["champion"]["version"] == "v2"
    # v3 was rolled back for cause: v1 is now the known-good target, not v3.
    assert back["rollback_target"]["version"] == "v1"
    assert client.get(f"/api/v1/checkpoints/{ids['v3']}", headers=auth).json()["status"] == (
        "rolled_back"
    )
    promote(client, auth, ids["v4"], force=True, reason="ship v4")
    state = client.get("/api/v1/models/support-bot", headers=auth).json()
    assert state["rollback_target"]["version"] == "v2"
    named = client.post(
        "/api/v1/models/support-bot/rollback",
        json={"to": "v1", "reason": "back to the original"},
        headers=auth,
    ).json()
    assert named["champion"]["version"] == "v1"
    actions = [(h["action"], h["checkpoint_version"]) for h in named["history"]]
    assert actions == [
        ("rollback", "v1"),
        ("promote", "v4"),
        ("rollback", "v2"),
        ("promote", "v3"),
        ("promote", "v2"),
        ("promote", "v1"),
    ]
    unknown = client.post(
        "/api/v1/models/support-bot/rollback", json={"to": "v9", "reason": "x"}, headers=auth
    )
    assert unknown.status_code == 404
    # Rolled back to by name, v3 is the champion again by a person's decision: no longer
    # passed over (review R-M1: only a promotion cleared it, so after v5 the target was v2).
    chosen = {"to": "v3", "reason": "v3's refusals were the new policy after all"}
    assert client.post("/api/v1/models/support-bot/rollback", json=chosen, headers=auth).is_success
    v5 = register(client, auth, version="v5").json()["id"]
    promote(client, auth, v5, force=True, reason="ship v5")
    state = client.get("/api/v1/models/support-bot", headers=auth).json()
    assert state["rollback_target"]["version"] == "v3"


def test_every_change_is_audited_with_the_acting_key(
    client: TestClient, auth: Headers, db: Session
) -> None:
    v1 = register(client, auth, version="v1").json()["id"]
    promote(client, auth, v1, reason="first")
    entries = db.scalars(select(AuditLog).order_by(AuditLog.id)).all()
    assert [e.action for e in entries] == ["checkpoint.registered", "champion.promote"]
    assert all(e.actor == "acme-admin" and e.api_key_id is not None for e in entries)
    assert entries[1].note == "first"


def test_unknown_model_is_404(client: TestClient, auth: Headers) -> None:
    response = client.get("/api/v1/models/ghost", headers=auth)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"


PRICES = {"usd_per_million_input_tokens": 0.25, "usd_per_million_output_tokens": 2.0}


def test_pricing_is_set_and_cleared_apart_from_the_registration_and_audited(
    client: TestClient, auth: Headers, db: Session
) -> None:
    body = {"version": "v1", "kind": "quantized"}
    checkpoint = register(client, auth, **body).json()
    assert checkpoint["pricing"] is None
    url = f"/api/v1/checkpoints/{checkpoint['id']}/pricing"
    priced = client.put(url, json=PRICES, headers=auth)
    assert priced.status_code == 200, priced.text
    assert priced.json()["pricing"] == PRICES
    assert (
        client.get(f"/api/v1/checkpoints/{checkpoint['id']}", headers=auth).json()["pricing"]
        == PRICES
    )
    # Prices are not part of what a version names: registering the same body again still
    # answers 200 with the same checkpoint, now priced.
    again = register(client, auth, **body)
    assert again.status_code == 200 and again.json()["pricing"] == PRICES
    # The same prices again change nothing, so nothing is audited.
    assert client.put(url, json=PRICES, headers=auth).json()["pricing"] == PRICES
    cheaper = {**PRICES, "usd_per_million_output_tokens": 1.0}
    assert client.put(url, json=cheaper, headers=auth).json()["pricing"] == cheaper
    cleared = client.delete(url, headers=auth)
    assert cleared.status_code == 204
    again_cleared = client.delete(url, headers=auth)
    assert again_cleared.status_code == 404
    assert again_cleared.headers["content-type"] == "application/problem+json"
    assert "no prices" in again_cleared.json()["detail"]
    assert (
        client.get(f"/api/v1/checkpoints/{checkpoint['id']}", headers=auth).json()["pricing"]
        is None
    )
    entries = db.scalars(
        select(AuditLog).where(AuditLog.action.like("checkpoint.pricing%")).order_by(AuditLog.id)
    ).all()
    assert [(e.action, e.details) for e in entries] == [
        ("checkpoint.pricing_set", {"before": None, "after": PRICES}),
        ("checkpoint.pricing_set", {"before": PRICES, "after": cheaper}),
        ("checkpoint.pricing_cleared", {"before": cheaper, "after": None}),
    ]


def test_bad_prices_are_refused_naming_the_field_and_change_nothing(
    client: TestClient, auth: Headers
) -> None:
    checkpoint = register(client, auth, version="v1").json()
    url = f"/api/v1/checkpoints/{checkpoint['id']}/pricing"
    assert client.put(url, json=PRICES, headers=auth).status_code == 200
    for bad, field in (
        ({**PRICES, "usd_per_million_input_tokens": -1}, "usd_per_million_input_tokens"),
        ({"usd_per_million_input_tokens": 1}, "usd_per_million_output_tokens"),
        ({**PRICES, "currency": "EUR"}, "currency"),
        ({**PRICES, "usd_per_million_output_tokens": "cheap"}, "usd_per_million_output_tokens"),
    ):
        response = client.put(url, json=bad, headers=auth)
        assert response.status_code == 422, bad
        assert response.headers["content-type"] == "application/problem+json"
        assert field in response.text
    # JSON has no Infinity, but Python's encoder writes one: refused, not stored.
    infinite = client.put(
        url,
        content=b'{"usd_per_million_input_tokens": Infinity, "usd_per_million_output_tokens": 1}',
        headers={**auth, "content-type": "application/json"},
    )
    assert infinite.status_code == 422
    missing = client.put("/api/v1/checkpoints/999999/pricing", json=PRICES, headers=auth)
    assert missing.status_code == 404
    assert (
        client.get(f"/api/v1/checkpoints/{checkpoint['id']}", headers=auth).json()["pricing"]
        == PRICES
    )


def test_a_gate_policy_change_counts_only_in_fields_that_decide_a_verdict() -> None:
    """Only the fields a verdict depends on make a gate decided before stale: `power`,
    `block_power` and `min_effect` size `required_n`, the retired fields are ignored and
    `accept_canary` concerns canaries. Every other field of the policy decides: a field
    added later is counted until it is shown not to."""
    decided = GatePolicySpec().as_stored()
    quiet = {"power": 0.9, "block_power": 0.8, "min_effect": 0.03, "seed": 7, "min_rows": 30}
    quiet |= {"bootstrap_resamples": 100, "warn_risks": ["low"], "accept_canary": False}
    changed = GatePolicy(policy=GatePolicySpec.model_validate(quiet).as_stored())
    assert changed.changes_from(decided) == []
    deciding = set(GatePolicySpec.model_fields) - NO_VERDICT_FIELDS
    assert deciding == {
        "metric", "margin", "risk_margins", "alpha", "floor", "floors", "correction",
        "weighting", "min_discordant", "block_risks", "cohort_risk", "guard_population",
        "allow_inconclusive",
    }  # fmt: skip
    wider = GatePolicy(policy={**decided, "margin": 0.05, "allow_inconclusive": True})
    assert wider.changes_from(decided) == ["allow_inconclusive", "margin"]


def test_a_rollback_goes_back_only_to_an_earlier_champion(
    client: TestClient, auth: Headers, db: Session
) -> None:
    """`to` names a checkpoint that was the champion before: one that never was (never gated,
    never served as champion) is a promotion, which needs a gate, a canary or force with a
    written reason, and is recorded as forced. Until 2026-12-01 a rollback to v2, registered
    and never promoted, made it the champion (200) with a history entry 'rollback', forced
    false, and no standing blocks in its audit entry; v1, the champion it replaced, counted
    as rolled back for cause."""
    v1 = register(client, auth, version="v1").json()["id"]
    v2 = register(client, auth, version="v2").json()["id"]
    assert promote(client, auth, v1, reason="first").status_code == 200
    sideways = client.post(
        "/api/v1/models/support-bot/rollback", json={"to": "v2", "reason": "x"}, headers=auth
    )
    assert sideways.status_code == 409, sideways.text
    assert sideways.headers["content-type"] == "application/problem+json"
    assert "never the champion" in sideways.json()["detail"]
    state = client.get("/api/v1/models/support-bot", headers=auth).json()
    assert state["champion"]["id"] == v1 and len(state["history"]) == 1
    assert client.get(f"/api/v1/checkpoints/{v2}", headers=auth).json()["status"] == ("registered")
    entries = db.scalars(select(AuditLog).order_by(AuditLog.id)).all()
    assert [e.action for e in entries][-1] == "champion.promote"
