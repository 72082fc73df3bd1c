"""The deploy gate over REST with constructed runs whose answer is known, on both databases."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from tests.gates.support import GRADED, add_run

Headers = dict[str, str]
Rows = list[dict[str, Any]]
EVALUATOR = "exact_match"


def rows_of(route: str, n: int, risk: str, **cohort: str) -> Rows:
    return [
        {"key": f"{route}-{i}", "risk": risk, "cohort": {"route": route, **cohort}}
        for i in range(n)
    ]


def passing(rows: Rows, failing: set[str] = frozenset()) -> list[float]:  # type: ignore[assignment]
    return [0.0 if row["key"] in failing else 1.0 for row in rows]


def checkpoint(client: TestClient, auth: Headers, version: str, model: str = "bot") -> int:
    response = client.post(
        "/api/v1/checkpoints", json={"model": model, "version": version}, headers=auth
    )
    assert response.status_code in (200, 201), response.text
    return int(response.json()["id"])


def champion_and_candidate(client: TestClient, auth: Headers) -> tuple[int, int]:
    champion = checkpoint(client, auth, "v1")
    promoted = client.post(
        "/api/v1/models/bot/promote",
        json={"checkpoint_id": champion, "reason": "first champion"},
        headers=auth,
    )
    assert promoted.status_code == 200, promoted.text
    return champion, checkpoint(client, auth, "v2")


def gate(client: TestClient, auth: Headers, candidate_run: int, **body: Any) -> Any:
    response = client.post(
        "/api/v1/gates", json={"candidate_run_id": candidate_run, **body}, headers=auth
    )
    assert response.status_code == 201, response.text
    return response.json()


def comparison(result: Any, dimension: str, value: str, evaluator: str = EVALUATOR) -> Any:
    return next(
        c
        for c in result["comparisons"]
        if (c["evaluator"], c["dimension"], c["value"]) == (evaluator, dimension, value)
    )


def runs_for(
    client: TestClient,
    auth: Headers,
    rows: Rows,
    baseline: dict[str, list[float]],
    candidate: dict[str, list[float]],
) -> tuple[int, int]:
    champion, newcomer = champion_and_candidate(client, auth)
    return (
        add_run(client, auth, champion, rows, baseline),
        add_run(client, auth, newcomer, rows, candidate),
    )


def test_a_ten_row_high_risk_cohort_going_from_10_to_6_blocks(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    rows = rows_of("medical", 10, "high") + rows_of("general", 190, "low")
    failing = {f"medical-{i}" for i in range(4)}
    base_run, cand_run = runs_for(
        client, auth, rows, {EVALUATOR: passing(rows)}, {EVALUATOR: passing(rows, failing)}
    )
    hook = client.post(
        "/api/v1/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "events": ["gate.blocked"]},
        headers=auth,
    )
    assert hook.status_code == 201, hook.text

    result = gate(client, auth, cand_run)  # baseline defaults to the champion's run

    assert result["verdict"] == "block"
    assert result["baseline_run_id"] == base_run
    high = comparison(result, "risk", "high")
    assert (high["n"], high["baseline"], high["candidate"]) == (10, 1.0, 0.6)
    assert high["delta"] == pytest.approx(-0.4)
    assert high["status"] == "regressed" and high["regressed"] and high["guarded"]
    assert high["ci_high"] < -0.02
    assert high["pass_rates"]["lost"] == 4 and high["pass_rates"]["won"] == 0
    blocking = [r for r in result["reasons"] if r["severity"] == "block"]
    assert {(r["dimension"], r["value"]) for r in blocking} >= {("risk", "high")}
    assert any("medical" in r["message"] and "1.000 -> 0.600" in r["message"] for r in blocking)
    low = comparison(result, "risk", "low")
    assert low["role"] == "warn" and not low["regressed"]

    stored = client.get(f"/api/v1/gates/{result['id']}", headers=auth).json()
    assert stored["verdict"] == "block" and stored["comparisons"] == result["comparisons"]
    checkpoint_id = result["checkpoint_id"]
    assert (
        client.get(f"/api/v1/checkpoints/{checkpoint_id}", headers=auth).json()["status"]
        == "blocked"
    )
    deliveries = client.get(
        f"/api/v1/webhooks/{hook.json()['id']}/deliveries", headers=auth
    ).json()["items"]
    assert [(d["event_type"], d["msg_id"]) for d in deliveries] == [
        ("gate.blocked", f"gate.{result['id']}.blocked")
    ]
    assert deliveries[0]["payload"]["data"]["reasons"] == blocking


def test_a_large_cohort_with_a_tiny_insignificant_drop_passes(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    rows = rows_of("a", 500, "high") + rows_of("b", 500, "high")
    base_fail = {f"a-{i}" for i in range(50)} | {f"b-{i}" for i in range(50)}
    cand_fail = (base_fail - {"a-0"}) | {"a-100", "b-100", "b-101"}
    _, cand_run = runs_for(
        client,
        auth,
        rows,
        {EVALUATOR: passing(rows, base_fail)},
        {EVALUATOR: passing(rows, cand_fail)},
    )
    result = gate(client, auth, cand_run)
    assert result["verdict"] == "pass", result["reasons"]
    everyone = comparison(result, "all", "all")
    assert everyone["delta"] == pytest.approx(-0.002)
    assert everyone["p_value"] > 0.5 and everyone["status"] == "non_inferior"
    assert everyone["ci_low"] > -0.02
    assert result["reasons"][0]["severity"] == "info"


def test_a_medium_risk_regression_only_warns(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    rows = rows_of("core", 1000, "high") + rows_of("billing", 40, "medium")
    base_fail = {f"core-{i}" for i in range(100)}
    cand_fail = (base_fail - {f"core-{i}" for i in range(10)}) | {f"billing-{i}" for i in range(12)}
    _, cand_run = runs_for(
        client,
        auth,
        rows,
        {EVALUATOR: passing(rows, base_fail)},
        {EVALUATOR: passing(rows, cand_fail)},
    )
    result = gate(client, auth, cand_run)
    assert result["verdict"] == "pass", result["reasons"]
    billing = comparison(result, "route", "billing")
    assert billing["risk"] == "medium" and billing["role"] == "warn"
    assert billing["status"] == "regressed" and not billing["guarded"]
    warnings = [r for r in result["reasons"] if r["severity"] == "warn"]
    assert {(r["dimension"], r["value"]) for r in warnings} == {
        ("route", "billing"),
        ("risk", "medium"),
    }
    assert all("warning only" in r["message"] for r in warnings)

    strict = gate(
        client, auth, cand_run, policy={"block_risks": ["high", "medium"], "warn_risks": []}
    )
    assert strict["verdict"] == "block"
    assert "policy overridden in the request" in " ".join(strict["notes"])


def test_identical_runs_pass_even_on_few_rows(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    rows = rows_of("tiny", 12, "high", user_segment="free")
    scores = {EVALUATOR: passing(rows, {"tiny-3"}), GRADED: [0.7] * 12}
    _, cand_run = runs_for(client, auth, rows, scores, scores)
    result = gate(client, auth, cand_run)
    assert result["verdict"] == "pass"
    assert any("identical" in note for note in result["notes"])
    assert {c["evaluator"] for c in result["comparisons"]} == {EVALUATOR, GRADED}
    assert all(c["delta"] == 0 for c in result["comparisons"])


def test_a_three_row_high_risk_cohort_is_underpowered_not_silently_passed(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    rows = rows_of("general", 600, "low") + rows_of("rare", 3, "high")
    base_fail = {"general-1"}
    cand_fail = {"general-2"}
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows, base_fail)})
    cand_run = add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows, cand_fail)})

    result = gate(client, auth, cand_run)

    assert result["verdict"] == "inconclusive"
    rare = comparison(result, "route", "rare")
    assert rare["n"] == 3 and rare["status"] == "inconclusive"
    assert rare["underpowered"] and rare["required_n"] > 3
    explained = [r for r in result["reasons"] if r["severity"] == "inconclusive"]
    assert any(
        r["value"] == "rare" and r["required_n"] == rare["required_n"] and "rows" in r["message"]
        for r in explained
    )
    refused = client.post(
        "/api/v1/models/bot/promote",
        json={"checkpoint_id": newcomer, "gate_id": result["id"]},
        headers=auth,
    )
    assert refused.status_code == 409 and "inconclusive" in refused.json()["detail"]

    lenient = client.put(
        "/api/v1/models/bot/gate-policy", json={"allow_inconclusive": True}, headers=auth
    )
    assert lenient.status_code == 200 and lenient.json()["version"] == 1
    allowed = gate(client, auth, cand_run)
    assert allowed["verdict"] == "inconclusive" and allowed["policy_version"] == 1
    promoted = client.post(
        "/api/v1/models/bot/promote",
        json={"checkpoint_id": newcomer, "gate_id": allowed["id"]},
        headers=auth,
    )
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["history"][0]["gate_id"] == allowed["id"]


def test_promotion_needs_a_passing_gate_for_that_checkpoint(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    rows = rows_of("x", 10, "high") + rows_of("y", 300, "high")
    champion, good = champion_and_candidate(client, auth)
    bad = checkpoint(client, auth, "v3")
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)})
    good_run = add_run(client, auth, good, rows, {EVALUATOR: passing(rows)})
    bad_run = add_run(
        client, auth, bad, rows, {EVALUATOR: passing(rows, {f"x-{i}" for i in range(5)})}
    )
    blocked, passed = gate(client, auth, bad_run), gate(client, auth, good_run)
    assert (blocked["verdict"], passed["verdict"]) == ("block", "pass")

    def promote(checkpoint_id: int, **body: Any) -> Any:
        return client.post(
            "/api/v1/models/bot/promote",
            json={"checkpoint_id": checkpoint_id, **body},
            headers=auth,
        )

    assert promote(bad, gate_id=blocked["id"]).status_code == 409
    assert promote(bad, gate_id=passed["id"]).status_code == 409  # judged another checkpoint
    assert promote(bad).status_code == 409
    forced = promote(bad, force=True, reason="hotfix, accepted by the on-call lead")
    assert forced.status_code == 200 and forced.json()["history"][0]["forced"] is True
    assert promote(good, gate_id=passed["id"]).status_code == 200
    listed = client.get(f"/api/v1/gates?checkpoint_id={good}", headers=auth).json()
    assert [g["id"] for g in listed["items"]] == [passed["id"]]


def test_numbers_match_scipy_and_statsmodels_references(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    rng = np.random.default_rng(7)
    rows = rows_of("big", 400, "high") + rows_of("small", 40, "high")
    base_pass = rng.random(len(rows)) < 0.8
    cand_pass = np.where(rng.random(len(rows)) < 0.1, ~base_pass, base_pass)
    base_score = rng.beta(5, 2, len(rows))
    cand_score = np.clip(base_score + rng.normal(-0.01, 0.05, len(rows)), 0, 1)
    _, cand_run = runs_for(
        client,
        auth,
        rows,
        {EVALUATOR: base_pass.astype(float).tolist(), GRADED: base_score.tolist()},
        {EVALUATOR: cand_pass.astype(float).tolist(), GRADED: cand_score.tolist()},
    )
    result = gate(client, auth, cand_run)
    big = slice(0, 400)
    got = comparison(result, "route", "big")
    lost = int(np.sum(base_pass[big] & ~cand_pass[big]))
    won = int(np.sum(~base_pass[big] & cand_pass[big]))
    table = [[0, lost], [won, 0]]
    assert got["p_value"] == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-9)
    assert (got["pass_rates"]["lost"], got["pass_rates"]["won"]) == (lost, won)
    assert got["delta"] == pytest.approx((won - lost) / 400)

    scored = comparison(result, "route", "big", evaluator=GRADED)["scores"]
    diffs = cand_score[big] - base_score[big]
    reference = stats.ttest_rel(cand_score[big], base_score[big])
    assert scored["delta"] == pytest.approx(diffs.mean())
    assert scored["p_value"] == pytest.approx(reference.pvalue, rel=1e-6)
    low, high = reference.confidence_interval(0.95)
    assert (scored["ci_low"], scored["ci_high"]) == (pytest.approx(low), pytest.approx(high))

    guarded = [c for c in result["comparisons"] if c["guarded"]]
    holm = multipletests([c["p_value"] for c in guarded], method="holm")[1]
    assert [c["p_adjusted"] for c in guarded] == pytest.approx(list(holm))


def test_different_dataset_versions_compare_only_shared_keys(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    old = rows_of("a", 250, "high") + rows_of("retired", 20, "high")
    new = rows_of("a", 250, "high") + rows_of("added", 30, "low")
    champion, newcomer = champion_and_candidate(client, auth)
    base_run = add_run(client, auth, champion, old, {EVALUATOR: passing(old)})
    cand_run = add_run(client, auth, newcomer, new, {EVALUATOR: passing(new, {"a-1"})})
    refused = client.post("/api/v1/gates", json={"candidate_run_id": cand_run}, headers=auth)
    assert refused.status_code == 409
    assert "no succeeded run on dataset version 2" in refused.json()["detail"]

    result = gate(client, auth, cand_run, baseline_run_id=base_run)
    assert comparison(result, "all", "all")["n"] == 250
    assert {c["value"] for c in result["comparisons"]} == {"all", "high", "a"}
    assert "only the 250 keys both runs scored" in result["notes"][0]


def test_gate_requests_that_cannot_be_decided_get_clear_problems(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    rows = rows_of("a", 5, "high")
    lone = checkpoint(client, auth, "lone", model="solo")
    lone_run = add_run(client, auth, lone, rows, {EVALUATOR: passing(rows)})
    no_champion = client.post("/api/v1/gates", json={"candidate_run_id": lone_run}, headers=auth)
    assert no_champion.status_code == 409 and "no champion" in no_champion.json()["detail"]

    champion, newcomer = champion_and_candidate(client, auth)
    base_run = add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)})
    other_dataset = add_run(
        client, auth, champion, rows, {EVALUATOR: passing(rows)}, dataset="other"
    )
    cand_run = add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows)})
    queued = add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows)}, finish=False)

    def problem(body: dict[str, Any]) -> tuple[int, str]:
        response = client.post("/api/v1/gates", json=body, headers=auth)
        assert response.headers["content-type"] == "application/problem+json"
        return response.status_code, response.json()["detail"]

    status, detail = problem({"candidate_run_id": queued})
    assert status == 409 and "'queued'" in detail
    assert problem({"candidate_run_id": 999999})[0] == 404
    assert problem({"candidate_run_id": cand_run, "baseline_run_id": cand_run})[0] == 422
    status, detail = problem({"candidate_run_id": cand_run, "baseline_run_id": other_dataset})
    assert status == 422 and "another dataset" in detail
    status, detail = problem({"candidate_run_id": cand_run, "policy": {"margin": 2}})
    assert status == 422 and "margin" in detail
    status, detail = problem({"candidate_run_id": cand_run, "policy": {"warn_risks": ["high"]}})
    assert status == 422 and "overlap" in detail
    assert gate(client, auth, cand_run, baseline_run_id=base_run)["verdict"] == "pass"


def test_gate_policy_is_versioned_and_a_request_override_is_recorded(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    checkpoint(client, auth, "v1")
    default = client.get("/api/v1/models/bot/gate-policy", headers=auth).json()
    assert default["version"] is None and default["policy"]["block_risks"] == ["high"]
    first = client.put(
        "/api/v1/models/bot/gate-policy", json={"margin": 0.05, "floor": 0.5}, headers=auth
    ).json()
    second = client.put(
        "/api/v1/models/bot/gate-policy", json={"margin": 0.03}, headers=auth
    ).json()
    assert (first["version"], second["version"]) == (1, 2)
    current = client.get("/api/v1/models/bot/gate-policy", headers=auth).json()
    assert current["version"] == 2 and current["policy"]["margin"] == 0.03
    assert current["policy"]["floor"] is None
    bad = client.put("/api/v1/models/bot/gate-policy", json={"alpha": 0}, headers=auth)
    assert bad.status_code == 422 and "alpha" in bad.json()["detail"]
    missing = client.get("/api/v1/models/nope/gate-policy", headers=auth)
    assert missing.status_code == 404


def test_a_hard_floor_blocks_whatever_the_significance(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    rows = rows_of("main", 300, "high") + rows_of("edge", 4, "low")
    scores = passing(rows, {"edge-0", "edge-1", "edge-2"})
    base_run, cand_run = runs_for(
        client, auth, rows, {EVALUATOR: scores}, {EVALUATOR: list(scores)}
    )
    result = gate(client, auth, cand_run, policy={"floors": {EVALUATOR: 0.5}})
    assert result["verdict"] == "block"
    edge = comparison(result, "route", "edge")
    assert edge["below_floor"] and edge["regressed"] and edge["p_value"] == 1.0
    assert any("hard floor" in r["message"] for r in result["reasons"])
    assert result["policy"]["floors"] == {EVALUATOR: 0.5}
    assert base_run


def test_what_cannot_be_compared_is_named_in_the_notes(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    rows = [
        {"key": f"a-{i}", "risk": "high", "cohort": {"route": "a", "risk": "pretend"}}
        for i in range(30)
    ]
    _, cand_run = runs_for(
        client,
        auth,
        rows,
        {EVALUATOR: passing(rows)},
        {EVALUATOR: passing(rows), GRADED: [0.9] * 30},
    )
    result = gate(client, auth, cand_run)
    assert {c["evaluator"] for c in result["comparisons"]} == {EVALUATOR}
    assert {(c["dimension"], c["value"]) for c in result["comparisons"]} == {
        ("all", "all"),
        ("risk", "high"),
        ("route", "a"),
    }
    assert result["notes"][:2] == [
        f"evaluators only in the candidate run, not compared: {GRADED}",
        "cohort dimension 'risk' clashes with a built-in cohort; ignored",
    ]
