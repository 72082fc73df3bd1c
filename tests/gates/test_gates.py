"""The deploy gate over REST with constructed runs whose answer is known, on both databases.

The rules (docs/statistics.md §3-§7): the guarded family is the whole population, the
risk=<level> cohorts of `block_risks` and the cohorts declared at those levels; a guarded
comparison blocks when a drop beyond its margin is shown (exact or score test, weighted Holm
over the family, at least `min_discordant` rows that changed), passes when a drop of the margin
is ruled out, and is inconclusive otherwise, with the rows it needs; every other cohort can only
warn. Each side pools every succeeded run of its checkpoint on its dataset version; re-gating a
checkpoint on a version spends alpha / 2^(attempt-1), and a block stands until a pass."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from scipy import stats
from sqlalchemy import select
from statsmodels.stats.multitest import multipletests

from app.cli import _gate_table
from app.gates import service as gates_service
from app.models import AuditLog, Gate
from app.stats.cohorts import build_cohorts
from app.stats.gate import DecisionPolicy, EvaluatorOutcomes, decide_gate
from tests.datasets.support import drain_worker
from tests.drift.champions import alerts, calls, date_history, days_ending_day_before_yesterday
from tests.drift.traffic import post_events, run_drift
from tests.gates.support import GRADED, add_run, outputs_scoring
from tests.web.test_pages import sign_in

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
    **run: Any,
) -> tuple[int, int]:
    champion, newcomer = champion_and_candidate(client, auth)
    return (
        add_run(client, auth, champion, rows, baseline, **run),
        add_run(client, auth, newcomer, rows, candidate, **run),
    )


def run_on(
    app: FastAPI,
    client: TestClient,
    auth: Headers,
    checkpoint_id: int,
    version: int,
    rows: Rows,
    failing: set[str] = frozenset(),  # type: ignore[assignment]
) -> int:
    """A succeeded run of `checkpoint_id` on version `version` of 'golden' (holding `rows`),
    failing the rows in `failing`: `add_run` uploads its rows, which would add a version."""
    created = client.post(
        "/api/v1/datasets/golden/evaluations",
        json={
            "checkpoint_id": checkpoint_id,
            "dataset_version": version,
            "evaluators": [{"name": EVALUATOR}],
            "outputs": outputs_scoring(rows, {EVALUATOR: passing(rows, failing)}),
        },
        headers=auth,
    )
    assert created.status_code == 202, created.text
    drain_worker(app)
    return int(created.json()["run_id"])


def test_a_high_risk_cohort_going_from_40_to_20_blocks(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    rows = rows_of("medical", 40, "high") + rows_of("general", 190, "low")
    failing = {f"medical-{i}" for i in range(20)}
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
    assert (result["attempt"], result["alpha"], result["previously_blocked"]) == (1, 0.05, False)
    assert (result["candidate_run_ids"], result["baseline_run_ids"]) == ([cand_run], [base_run])
    assert (result["dataset"], result["dataset_version"]) == ("golden", 1)
    high = comparison(result, "risk", "high")
    assert (high["n"], high["baseline"], high["candidate"]) == (40, 1.0, 0.5)
    assert high["delta"] == pytest.approx(-0.5)
    assert high["status"] == "block" and high["regressed"] and high["guarded"]
    assert high["method"] == "exact" and high["p_block"] < 0.005
    assert high["ci_high"] < -0.02
    assert (high["lost"], high["won"], high["discordant"]) == (20, 0, 20)
    # "Some drop" on pass/fail pairs is the one-sided exact McNemar (sign) test.
    assert high["p_drop"] == pytest.approx(stats.binomtest(0, 20, 0.5, "less").pvalue)
    blocking = [r for r in result["reasons"] if r["severity"] == "block"]
    assert {(r["dimension"], r["value"]) for r in blocking} >= {("risk", "high")}
    assert any("risk=high" in r["message"] and "1.000 -> 0.500" in r["message"] for r in blocking)
    low = comparison(result, "risk", "low")
    assert low["role"] == "warn" and not low["guarded"] and not low["regressed"]
    medical = comparison(result, "route", "medical")
    assert medical["risk"] is None and not medical["guarded"] and medical["status"] == "warn"

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
    payload = deliveries[0]["payload"]["data"]
    assert payload["reasons"] == blocking and payload["attempt"] == 1


def test_a_few_flipped_rows_cannot_block_on_their_own(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """10/10 -> 6/10 blocked under the old rule; its exact p (0.033) is below alpha, but 4 rows
    that changed are fewer than min_discordant (6): an event of four rows does not stop a
    release alone. A 2-row cohort whose two rows flip (p = 0.26) is nowhere near. Together
    they are 6 of the 12 high-risk rows lost (p = 0.009): risk=high blocks. Until 2026-12-01
    the 2-row cohort, which can never block, took a share of the budget and left it
    inconclusive (adjusted 0.075)."""
    rows = rows_of("medical", 10, "high") + rows_of("rare", 2, "high", segment="vip")
    rows += rows_of("general", 300, "low")
    failing = {f"medical-{i}" for i in range(4)} | {"rare-0", "rare-1"}
    _, cand_run = runs_for(
        client,
        auth,
        rows,
        {EVALUATOR: passing(rows)},
        {EVALUATOR: passing(rows, failing)},
        cohort_risk={"route": {"medical": "high", "rare": "high"}},
    )
    result = gate(client, auth, cand_run)
    assert result["verdict"] == "block"
    high = comparison(result, "risk", "high")
    assert (high["n"], high["lost"], high["won"], high["status"]) == (12, 6, 0, "block")
    assert high["p_adjusted"] < 0.05
    medical = comparison(result, "route", "medical")
    assert medical["guarded"] and medical["risk"] == "high"
    assert medical["method"] == "exact" and medical["p_block"] < 0.05
    assert medical["status"] == "inconclusive" and "only 4 discordant rows" in medical["reason"]
    rare = comparison(result, "route", "rare")
    assert rare["status"] == "inconclusive" and rare["p_block"] > 0.2
    assert rare["p_adjusted"] == 1.0


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
    assert everyone["method"] == "score"  # 1,000 rows: above the exact test's 400
    assert everyone["p_value"] > 0.5 and everyone["status"] == "pass"
    assert everyone["p_pass"] < 0.025 and everyone["ci_low"] > -0.02
    assert result["reasons"][0]["severity"] == "info"


def test_a_slice_with_high_risk_rows_only_warns_until_its_risk_is_declared(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """route=billing holds 6 high-risk rows among 60. The old gate gave it their risk and
    blocked; now it is not guarded until its risk is declared, on the dataset version or in
    the policy."""
    billing = rows_of("billing", 60, "low")
    for row in billing[:6]:
        row["risk"] = "high"
    rows = billing + rows_of("core", 200, "high") + rows_of("misc", 800, "low")
    lost = {f"billing-{i}" for i in range(10, 30)}  # 20 low-risk billing rows now fail
    scores = ({EVALUATOR: passing(rows)}, {EVALUATOR: passing(rows, lost)})
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, scores[0])
    plain = add_run(client, auth, newcomer, rows, scores[1])

    result = gate(client, auth, plain)
    assert result["verdict"] == "inconclusive", result["reasons"]
    slice_ = comparison(result, "route", "billing")
    assert slice_["risk"] is None and not slice_["guarded"]
    assert slice_["status"] == "warn" and "cannot block" in slice_["warning"]
    assert comparison(result, "risk", "high")["status"] == "pass"  # 206 unchanged rows
    everyone = comparison(result, "all", "all")
    # 20 of 1,060 rows lost: a significant drop, but inside the margin: a warning.
    assert everyone["delta"] == pytest.approx(-20 / 1060)
    assert everyone["status"] == "inconclusive" and "inside the margin" in everyone["warning"]
    warned = {(r["dimension"], r["value"]) for r in result["reasons"] if r["severity"] == "warn"}
    assert {("route", "billing"), ("all", "all")} <= warned

    by_policy = gate(client, auth, plain, policy={"cohort_risk": {"route": {"billing": "high"}}})
    assert by_policy["verdict"] == "block" and by_policy["attempt"] == 2
    declared = comparison(by_policy, "route", "billing")
    assert declared["guarded"] and declared["risk"] == "high" and declared["status"] == "block"
    assert "policy overridden in the request: cohort_risk" in by_policy["notes"]

    add_run(client, auth, champion, rows, scores[0], cohort_risk={"route": {"billing": "high"}})
    on_version = add_run(
        client, auth, newcomer, rows, scores[1], cohort_risk={"route": {"billing": "high"}}
    )
    by_version = gate(client, auth, on_version)
    assert (by_version["dataset_version"], by_version["attempt"]) == (2, 1)
    assert by_version["verdict"] == "block"
    assert comparison(by_version, "route", "billing")["status"] == "block"
    # The policy can also lower a declared cohort out of the guarded family.
    lowered = gate(client, auth, on_version, policy={"cohort_risk": {"route": {"billing": "low"}}})
    assert not comparison(lowered, "route", "billing")["guarded"]
    assert lowered["verdict"] == "block" and lowered["previously_blocked"]  # the block stands
    standing = [r["message"] for r in lowered["reasons"] if r["severity"] == "block"]
    assert standing and standing[0].startswith("blocked earlier on this dataset version")


def test_identical_runs_pass_only_with_enough_rows(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """No shortcut: identical results are data like any other. With no row changed, ruling out
    a 2-point drop needs 0.98^n + 0.001 <= 0.025, i.e. 185 rows."""
    few = rows_of("tiny", 12, "high", user_segment="free")
    scores = {EVALUATOR: passing(few, {"tiny-3"}), GRADED: [0.7] * 12}
    _, cand_run = runs_for(client, auth, few, scores, scores)
    result = gate(client, auth, cand_run)
    assert result["verdict"] == "inconclusive"
    assert {c["evaluator"] for c in result["comparisons"]} == {EVALUATOR, GRADED}
    assert all(c["delta"] == 0 for c in result["comparisons"])
    high = comparison(result, "risk", "high")
    assert high["underpowered"] and 180 <= high["required_n_pass"] <= 200
    assert high["required_n"] >= high["required_n_pass"]

    many = rows_of("big", 400, "high")
    same = {EVALUATOR: passing(many), GRADED: [0.7] * 400}
    champion = checkpoint(client, auth, "v1")
    add_run(client, auth, champion, many, same, dataset="large")
    newcomer = int(result["checkpoint_id"])
    large = gate(client, auth, add_run(client, auth, newcomer, many, same, dataset="large"))
    assert large["verdict"] == "pass", large["reasons"]
    # 0.98^400 + 0.001 = 0.0013 bounds it; the supremum over the discordance stops where the
    # data rule it out (Berger-Boos), leaving gamma = 0.001.
    assert comparison(large, "all", "all")["p_pass"] <= 0.98**400 + 0.001


def test_a_three_row_high_risk_cohort_is_underpowered_not_silently_passed(
    app: FastAPI, client: TestClient, auth: Headers, admin_key: str
) -> None:
    rows = rows_of("general", 600, "low") + rows_of("rare", 3, "high")
    base_fail = {"general-1"}
    cand_fail = {"general-2"}
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows, base_fail)})
    cand_run = add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows, cand_fail)})

    result = gate(client, auth, cand_run)

    assert result["verdict"] == "inconclusive"
    rare = comparison(result, "risk", "high")
    assert rare["n"] == 3 and rare["status"] == "inconclusive" and rare["guarded"]
    assert rare["underpowered"] and rare["required_n"] > 3
    assert "rows needed to decide" in rare["reason"]
    explained = [r for r in result["reasons"] if r["severity"] == "inconclusive"]
    assert any(
        r["value"] == "high" and r["required_n"] == rare["required_n"] and "rows" in r["message"]
        for r in explained
    )
    sign_in(client, admin_key)
    page = client.get(f"/gates/{result['id']}")
    assert page.status_code == 200
    assert "Rows needed" in page.text and f">{rare['required_n']}<" in page.text
    assert "Attempt" in page.text and "alpha 0.0500 spent" in page.text

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
    assert (allowed["attempt"], allowed["alpha"]) == (2, 0.025)
    promoted = client.post(
        "/api/v1/models/bot/promote",
        json={"checkpoint_id": newcomer, "gate_id": allowed["id"]},
        headers=auth,
    )
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["history"][0]["gate_id"] == allowed["id"]


def test_a_few_rows_declared_high_risk_do_not_hide_a_drop_of_the_whole_population(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """Five rows tagged high-risk cannot block (fewer than min_discordant): they took 99% of
    the block budget under 1/n weights, and 16 of 400 rows lost (p = 0.0075) came out
    inconclusive (adjusted 0.62), which a policy allowing inconclusive would have promoted,
    with no gate.blocked sent."""
    rows = rows_of("general", 400, "low") + rows_of("rare", 5, "high")
    failing = {f"general-{i}" for i in range(16)}
    _, cand_run = runs_for(
        client, auth, rows, {EVALUATOR: passing(rows)}, {EVALUATOR: passing(rows, failing)}
    )

    result = gate(client, auth, cand_run)

    assert result["verdict"] == "block"
    everyone = comparison(result, "all", "all")
    assert (everyone["lost"], everyone["won"], everyone["status"]) == (16, 0, "block")
    assert everyone["p_adjusted"] == everyone["p_value"] < 0.01
    rare = comparison(result, "risk", "high")
    assert (rare["n"], rare["status"], rare["guarded"]) == (5, "inconclusive", True)
    assert rare["underpowered"] and rare["p_adjusted"] == 1.0


def test_six_high_risk_rows_do_not_take_almost_all_of_the_budget(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """Under uncapped 1/n weights six high-risk rows, unchanged, took 98.5% of alpha beside
    400 others: 20 of those 400 lost (p = 0.0009) came out inconclusive (adjusted 0.064),
    which a policy allowing inconclusive promoted. No share exceeds ten times another's now:
    the six take 10/11 and the drop blocks (adjusted 0.010)."""
    checkpoint(client, auth, "v0")
    client.put("/api/v1/models/bot/gate-policy", json={"allow_inconclusive": True}, headers=auth)
    rows = rows_of("general", 400, "low") + rows_of("rare", 6, "high")
    failing = {f"general-{i}" for i in range(20)}
    _, cand_run = runs_for(
        client, auth, rows, {EVALUATOR: passing(rows)}, {EVALUATOR: passing(rows, failing)}
    )

    result = gate(client, auth, cand_run)

    assert result["verdict"] == "block"
    everyone = comparison(result, "all", "all")
    assert (everyone["lost"], everyone["status"]) == (20, "block")
    assert everyone["p_adjusted"] == pytest.approx(11 * everyone["p_value"])
    rare = comparison(result, "risk", "high")
    assert (rare["n"], rare["status"]) == (6, "inconclusive")


def test_promotion_needs_a_passing_gate_for_that_checkpoint(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    # 40 high-risk rows cannot rule out a 2-point drop (they need 185); a 10-point margin for
    # high-risk cohorts can be ruled out on 36 unchanged rows.
    checkpoint(client, auth, "v0")
    policy = client.put(
        "/api/v1/models/bot/gate-policy", json={"risk_margins": {"high": 0.1}}, headers=auth
    )
    assert policy.status_code == 200, policy.text
    rows = rows_of("x", 40, "high") + rows_of("y", 300, "low")
    champion, good = champion_and_candidate(client, auth)
    bad = checkpoint(client, auth, "v3")
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)})
    good_run = add_run(client, auth, good, rows, {EVALUATOR: passing(rows)})
    bad_run = add_run(
        client, auth, bad, rows, {EVALUATOR: passing(rows, {f"x-{i}" for i in range(20)})}
    )
    blocked, passed = gate(client, auth, bad_run), gate(client, auth, good_run)
    assert (blocked["verdict"], passed["verdict"]) == ("block", "pass")
    assert comparison(passed, "risk", "high")["margin"] == 0.1
    assert comparison(passed, "all", "all")["margin"] == 0.02

    def promote(checkpoint_id: int, **body: Any) -> Any:
        return client.post(
            "/api/v1/models/bot/promote",
            json={"checkpoint_id": checkpoint_id, **body},
            headers=auth,
        )

    assert promote(bad, gate_id=blocked["id"]).status_code == 409
    assert promote(bad, gate_id=passed["id"]).status_code == 409  # judged another checkpoint
    assert promote(bad).status_code == 409
    # The 409 of a failing gate says "or force with a written reason": force with the gate
    # forces too (it answered 409 again), and the audit entry keeps what it went past.
    refused = promote(bad, gate_id=blocked["id"], force=True)  # no reason: no force
    assert refused.status_code == 409 and "or force with a written reason" in refused.text
    reason = "hotfix, accepted by the on-call lead"
    forced = promote(bad, gate_id=blocked["id"], force=True, reason=reason)
    assert forced.status_code == 200, forced.text
    entry = forced.json()["history"][0]
    assert (entry["forced"], entry["gate_id"]) == (True, None)  # the gate is no basis
    with app.state.sessionmaker() as session:
        audited = session.scalars(
            select(AuditLog).where(AuditLog.action == "champion.promote").order_by(AuditLog.id)
        ).all()[-1]
    assert audited.details["forced"] is True and audited.note == reason
    assert audited.details["refused_gate"]["gate_id"] == blocked["id"]
    assert "verdict is 'block'" in audited.details["refused_gate"]["detail"]
    assert audited.details["standing_blocks"] == [{"gate_id": blocked["id"], "dataset": "golden"}]
    stale = promote(good, gate_id=passed["id"])  # compared with v1, no longer the champion
    assert stale.status_code == 409 and "not with the champion" in stale.json()["detail"]
    against_champion = gate(client, auth, good_run, baseline_run_id=bad_run)
    assert against_champion["verdict"] == "pass"
    assert promote(good, gate_id=against_champion["id"]).status_code == 200
    listed = client.get(f"/api/v1/gates?checkpoint_id={good}", headers=auth).json()
    assert [g["id"] for g in listed["items"]] == [against_champion["id"], passed["id"]]


def test_promotion_needs_a_gate_against_the_champion_itself(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """A pass against a run of another model's checkpoint as weak as the candidate says
    nothing about replacing a champion that passes every row."""
    rows = rows_of("general", 400, "low")
    everything = {row["key"] for row in rows}
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)})
    other = checkpoint(client, auth, "o1", model="other-bot")
    other_run = add_run(client, auth, other, rows, {EVALUATOR: passing(rows, everything)})
    weak_run = add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows, everything)})
    against_other = gate(client, auth, weak_run, baseline_run_id=other_run)
    assert against_other["verdict"] == "pass"
    promoted = client.post(
        "/api/v1/models/bot/promote",
        json={"checkpoint_id": newcomer, "gate_id": against_other["id"]},
        headers=auth,
    )
    assert promoted.status_code == 409
    assert f"compared with checkpoint {other}, not with the champion" in (promoted.json()["detail"])
    assert gate(client, auth, weak_run)["verdict"] == "block"  # against the champion


def promoted_on_a_passing_gate(client: TestClient, auth: Headers) -> tuple[int, dict[str, int]]:
    """v1 the champion, v2 as good on 400 rows, gated and promoted on that pass -> (v2's run,
    the promotion's body)."""
    rows = rows_of("general", 400, "low")
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)})
    candidate_run = add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows)})
    passed = gate(client, auth, candidate_run)
    body = {"checkpoint_id": newcomer, "gate_id": passed["id"]}
    assert client.post("/api/v1/models/bot/promote", json=body, headers=auth).status_code == 200
    return candidate_run, body


def test_a_rollback_in_production_after_the_gate_stops_promoting_again_with_it(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The gate passed and promoted v2; production then rolled v2 back for cause. That is
    newer evidence than the gate, as a canary's rollback is: only a later gate promotes v2."""
    candidate_run, body = promoted_on_a_passing_gate(client, auth)
    back = {"to": "v1", "reason": "refusals doubled in production"}
    assert client.post("/api/v1/models/bot/rollback", json=back, headers=auth).status_code == 200
    again = client.post("/api/v1/models/bot/promote", json=body, headers=auth)
    assert again.status_code == 409 and "rolled back from this checkpoint" in again.text
    body["gate_id"] = gate(client, auth, candidate_run)["id"]
    assert client.post("/api/v1/models/bot/promote", json=body, headers=auth).status_code == 200


def test_an_alert_in_production_after_the_gate_stops_promoting_again_with_it(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The gate passed and promoted v2; in production an alert then opened about v2 (30 of
    100 refused against a 10% cap), and the team shipped a fix, v3, instead of rolling back;
    v3 was rolled back to v1 in turn. Review R-M1: v2, replaced while regressing, was
    promotable again on its old gate (against v1, the champion again), where a v2 rolled back
    for cause is not. Now its replacement under the alert is newer evidence, as the rollback
    is: 409, and a later gate promotes."""
    candidate_run, body = promoted_on_a_passing_gate(client, auth)
    [day] = days_ending_day_before_yesterday(1)
    date_history(app, [day - timedelta(days=1), day])
    cap = {"model": "bot", "signal": "refusal_rate", "band": {"type": "fixed", "high": 0.1}}
    assert client.put("/api/v1/monitors", json=cap, headers=auth).is_success
    post_events(client, auth, calls(day, "v2", 30, model="bot", n=100))
    run_drift(client, auth, day)
    [alert] = alerts(client, auth, signal="refusal_rate", dimension="all", status="open")
    fix = checkpoint(client, auth, "v3")
    forced = {"checkpoint_id": fix, "force": True, "reason": "fix for the refusals"}
    assert client.post("/api/v1/models/bot/promote", json=forced, headers=auth).is_success
    back = {"to": "v1", "reason": "v3 is worse"}
    assert client.post("/api/v1/models/bot/rollback", json=back, headers=auth).is_success
    again = client.post("/api/v1/models/bot/promote", json=body, headers=auth)
    assert again.status_code == 409, again.text
    assert "replaced this checkpoint under an alert about it" in again.json()["detail"]
    assert f"alerts [{alert['id']}]" in again.json()["detail"]
    body["gate_id"] = gate(client, auth, candidate_run)["id"]
    assert client.post("/api/v1/models/bot/promote", json=body, headers=auth).status_code == 200


def test_promotion_takes_only_a_gate_decided_under_the_models_policy_as_it_is(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """A writer's request may override the policy to explore (here: guard nothing and allow
    inconclusive, for a candidate that fails every row), but that gate never promotes; nor
    does a gate decided before an admin changed the policy."""
    rows = rows_of("general", 400, "high")
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)})
    failing_run = add_run(
        client, auth, newcomer, rows, {EVALUATOR: passing(rows, {r["key"] for r in rows})}
    )
    loosened = {"guard_population": False, "block_risks": [], "allow_inconclusive": True}
    explored = gate(client, auth, failing_run, policy=loosened)
    assert explored["verdict"] == "inconclusive"

    def promote(checkpoint_id: int, gate_id: int) -> Any:
        return client.post(
            "/api/v1/models/bot/promote",
            json={"checkpoint_id": checkpoint_id, "gate_id": gate_id},
            headers=auth,
        )

    refused = promote(newcomer, explored["id"])
    assert refused.status_code == 409
    assert "allow_inconclusive, block_risks, guard_population" in refused.json()["detail"]
    with app.state.sessionmaker() as session:  # as a gate decided before overrides were stored
        stored = session.get_one(Gate, explored["id"])
        stored.notes = {k: v for k, v in stored.notes.items() if k != "policy_overrides"}
        session.commit()
    legacy = promote(newcomer, explored["id"])
    assert legacy.status_code == 409 and "policy overridden in the request" in legacy.text
    good = checkpoint(client, auth, "v3")
    good_run = add_run(client, auth, good, rows, {EVALUATOR: passing(rows)})
    passed = gate(client, auth, good_run, policy={"margin": 0.02})  # the stored value again
    assert passed["verdict"] == "pass"
    assert "policy overridden in the request: margin" in passed["notes"]  # what it sent
    policy = {"risk_margins": {"high": 0.05}}
    assert client.put("/api/v1/models/bot/gate-policy", json=policy, headers=auth).is_success
    stale = promote(good, passed["id"])
    assert stale.status_code == 409 and "policy changed since gate" in stale.json()["detail"]
    assert "(the default -> v1 in risk_margins)" in stale.json()["detail"]
    assert promote(good, gate(client, auth, good_run)["id"]).status_code == 200


def test_a_policy_stored_again_or_changed_in_what_decides_no_gate_keeps_its_gates_current(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """200 identical rows pass at attempt 1 (p_pass = 0.019 <= alpha/2). An admin then PUTs
    the default policy as v1 (config applied by a pipeline), turns canaries off (v2), and
    changes only what required_n reads and retired fields (v3): none changes what the gate
    decided, yet promotion answered 409 "policy changed", and
    the re-gate it asked for, attempt 2 at alpha/4 on the same rows, is inconclusive: a good
    checkpoint could not be promoted at all without more rows."""
    rows = rows_of("general", 200, "low")
    _, cand_run = runs_for(
        client, auth, rows, {EVALUATOR: passing(rows)}, {EVALUATOR: passing(rows)}
    )
    passed = gate(client, auth, cand_run)
    assert (passed["verdict"], passed["policy_version"]) == ("pass", None)
    assert 0.0125 < comparison(passed, "all", "all")["p_pass"] <= 0.025
    no_verdict = {  # only required_n reads these, or nothing (retired fields)
        "power": 0.9,
        "block_power": 0.8,
        "min_effect": 0.03,
        "seed": 7,
        "min_rows": 30,
        "bootstrap_resamples": 100,
        "warn_risks": ["low"],
    }
    for version, policy in ((1, {}), (2, {"accept_canary": False}), (3, no_verdict)):
        put = client.put("/api/v1/models/bot/gate-policy", json=policy, headers=auth)
        assert put.status_code == 200 and put.json()["version"] == version, put.text

    again = gate(client, auth, cand_run)
    assert (again["attempt"], again["verdict"]) == (2, "inconclusive")
    promoted = client.post(
        "/api/v1/models/bot/promote",
        json={"checkpoint_id": passed["checkpoint_id"], "gate_id": passed["id"]},
        headers=auth,
    )
    assert promoted.status_code == 200, promoted.text
    assert promoted.json()["history"][0]["gate_id"] == passed["id"]


def test_a_blocked_checkpoint_stays_blocked_until_its_pooled_runs_pass(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The retry rule through the API: re-running until the dice fall right does not work.
    Each gate pools every run of the checkpoint on the version, attempt L spends
    alpha / 2^(L-1), and after a block only a pass lifts it."""
    checkpoint(client, auth, "v0")
    client.put("/api/v1/models/bot/gate-policy", json={"margin": 0.1}, headers=auth)
    rows = rows_of("core", 200, "high")
    worse = {f"core-{i}" for i in range(40)}
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)})

    def rerun(failing: set[str] = frozenset()) -> int:  # type: ignore[assignment]
        return add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows, failing)})

    first_run = rerun(worse)
    first = gate(client, auth, first_run)
    assert first["verdict"] == "block" and first["attempt"] == 1

    # A clean re-run alone would pass; pooled with the first it still shows a 10-point drop.
    second_run = rerun()
    second = gate(client, auth, second_run)
    assert second["candidate_run_ids"] == [first_run, second_run]
    assert (second["attempt"], second["alpha"], second["previously_blocked"]) == (2, 0.025, True)
    everyone = comparison(second, "all", "all")
    assert everyone["delta"] == pytest.approx(-0.1) and everyone["candidate_repeats"] == 2
    assert everyone["method"] == "score"  # per-row means over two calls
    assert second["verdict"] == "block"
    assert any("only a pass on the pooled runs lifts the block" in n for n in second["notes"])
    status = client.get(f"/api/v1/checkpoints/{newcomer}", headers=auth).json()["status"]
    assert status == "blocked"

    # Three more clean runs: the pooled drop is 4 points, inside the 10-point margin.
    third_run = [rerun() for _ in range(3)][-1]
    third = gate(client, auth, third_run)
    assert (third["attempt"], third["alpha"]) == (3, 0.0125)
    assert comparison(third, "all", "all")["delta"] == pytest.approx(-0.04)
    assert third["verdict"] == "pass", third["reasons"]
    status = client.get(f"/api/v1/checkpoints/{newcomer}", headers=auth).json()["status"]
    assert status == "evaluated"

    # A pass followed by a block can no longer promote.
    fourth = gate(client, auth, rerun({f"core-{i}" for i in range(200)}))
    assert fourth["verdict"] == "block" and fourth["attempt"] == 4
    refused = client.post(
        "/api/v1/models/bot/promote",
        json={"checkpoint_id": newcomer, "gate_id": third["id"]},
        headers=auth,
    )
    assert refused.status_code == 409 and f"gate {fourth['id']} blocked" in refused.json()["detail"]


def test_numbers_match_scipy_statsmodels_and_the_decision_code(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    rng = np.random.default_rng(7)
    rows = rows_of("big", 400, "high") + rows_of("small", 40, "low")
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
    policy = {"metric": "mean_score", "correction": "holm", "weighting": "equal"}
    result = gate(client, auth, cand_run, policy=policy)

    big = slice(0, 400)
    got = comparison(result, "route", "big")
    lost = int(np.sum(base_pass[big] & ~cand_pass[big]))
    won = int(np.sum(~base_pass[big] & cand_pass[big]))
    assert (got["lost"], got["won"]) == (lost, won)
    assert got["delta"] == pytest.approx((won - lost) / 400)
    # Some drop, unguarded: the one-sided exact McNemar test (scipy's binomial test).
    assert got["p_drop"] == pytest.approx(stats.binomtest(won, lost + won, 0.5, "less").pvalue)

    # The guarded family: all (440 rows) and risk=high (400) x 2 evaluators, equal shares:
    # Holm's adjustment of the block p-values (statsmodels).
    guarded = [c for c in result["comparisons"] if c["guarded"]]
    assert {(c["dimension"], c["value"]) for c in guarded} == {("all", "all"), ("risk", "high")}
    raw = [c["p_block"] if c["discordant"] >= 6 else 1.0 for c in guarded]
    holm = multipletests(raw, method="holm")[1]
    assert [c["p_block_adjusted"] for c in guarded] == pytest.approx(list(holm))
    # Unguarded "some drop" p-values: one Benjamini-Hochberg family.
    unguarded = [c for c in result["comparisons"] if not c["guarded"]]
    raw = [c["p_drop"] if c["discordant"] >= 6 else 1.0 for c in unguarded]
    bh = multipletests(raw, method="fdr_bh")[1]
    assert [c["p_drop_adjusted"] for c in unguarded] == pytest.approx(list(bh))

    # Every record equals the decision code's on arrays built here from the known scores.
    risk = [row["risk"] for row in rows]
    route = [row["cohort"]["route"] for row in rows]
    cohorts, membership = build_cohorts({"route": route}, risk, block_risks=["high"])
    decided = decide_gate(
        [
            EvaluatorOutcomes(EVALUATOR, base_pass.astype(float), cand_pass.astype(float)),
            EvaluatorOutcomes(GRADED, base_score, cand_score),
        ],
        membership,
        cohorts,
        DecisionPolicy(weighting="equal"),
    )
    assert result["verdict"] == decided.verdict
    expected = {(r.evaluator, r.dimension, r.value): r for r in decided.records}
    for c in result["comparisons"]:
        record = expected[(c["evaluator"], c["dimension"], c["value"])]
        assert c["status"] == record.status and c["method"] == record.method
        assert c["p_block"] == pytest.approx(record.p_block, rel=1e-9)
        assert c["p_pass"] == pytest.approx(record.p_pass, rel=1e-9)
        assert c["required_n"] == record.required_n
        assert c["upper_bound"] == pytest.approx(record.upper_bound, rel=1e-6, abs=1e-9)


def test_repeats_reach_the_gate_as_per_row_means(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    rng = np.random.default_rng(11)
    rows = rows_of("core", 150, "high") + rows_of("edge", 50, "low")
    latent = rng.beta(1.5, 0.5, len(rows))  # most rows nearly always pass, some flip
    base = (rng.random((len(rows), 3)) < latent[:, None]).astype(float)
    cand = (rng.random((len(rows), 3)) < latent[:, None] * 0.97).astype(float)
    _, cand_run = runs_for(
        client,
        auth,
        rows,
        {EVALUATOR: base.tolist()},
        {EVALUATOR: cand.tolist()},
        repeats=3,
    )
    result = gate(client, auth, cand_run)
    risk = [row["risk"] for row in rows]
    route = [row["cohort"]["route"] for row in rows]
    cohorts, membership = build_cohorts({"route": route}, risk, block_risks=["high"])
    decided = decide_gate(
        [EvaluatorOutcomes(EVALUATOR, base.mean(axis=1), cand.mean(axis=1), 3, 3)],
        membership,
        cohorts,
        DecisionPolicy(),
    )
    assert result["verdict"] == decided.verdict
    for c, record in zip(result["comparisons"], decided.records, strict=True):
        assert c["cohort"] == {"dimension": record.dimension, "value": record.value}
        assert (c["baseline_repeats"], c["candidate_repeats"]) == (3, 3)
        assert c["method"] == "score" and record.method == "score"
        assert c["delta"] == pytest.approx(record.delta)
        assert c["p_block"] == pytest.approx(record.p_block, rel=1e-9)
        assert c["required_n"] == record.required_n


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
    assert comparison(result, "all", "all")["unjudged"] == 30
    # The added rows' cohorts are v2's: reported, with no row both runs scored.
    assert {c["value"] for c in result["comparisons"]} == {"all", "high", "a", "low", "added"}
    assert comparison(result, "route", "added")["n"] == 0
    assert "the keys both runs scored are compared" in result["notes"][0]
    assert any("30 row(s) of the candidate's dataset version" in n for n in result["notes"])
    assert result["dataset_version"] == 2


def test_rows_a_new_version_adds_to_a_guarded_cohort_must_pass_at_their_worst(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """v2 adds 100 high-risk rows to the 100 of v1; the champion passes all 200, the
    candidate fails the 100 new ones. The champion has no run on v2, and the gate's 409 says
    to pass its run on v1. Until 2026-12-01 that gate compared the 500 keys both versions
    share, passed (risk=high: 100 of 100 against 100 of 100) and promoted a candidate that
    blocks as soon as the champion runs on v2 (100 of 200 lost). The baseline has no verdict
    on a row its version lacks, like a row its judge never graded: out of the numbers and the
    block tests, and a pass must hold with the baseline passing it."""
    checkpoint(client, auth, "v0")
    policy = client.put(
        "/api/v1/models/bot/gate-policy", json={"risk_margins": {"high": 0.1}}, headers=auth
    )
    assert policy.status_code == 200, policy.text
    old = rows_of("general", 400, "low") + rows_of("safety", 100, "high")
    new = old + rows_of("safety-added", 100, "high")
    added = {row["key"] for row in new[len(old) :]}
    champion, newcomer = champion_and_candidate(client, auth)
    base_run = add_run(client, auth, champion, old, {EVALUATOR: passing(old)})
    cand_run = add_run(client, auth, newcomer, new, {EVALUATOR: passing(new, added)})
    refused = client.post("/api/v1/gates", json={"candidate_run_id": cand_run}, headers=auth)
    assert refused.status_code == 409 and "pass baseline_run_id" in refused.json()["detail"]

    across = gate(client, auth, cand_run, baseline_run_id=base_run)
    high = comparison(across, "risk", "high")
    assert (high["n"], high["lost"], high["unjudged"]) == (100, 0, 100)
    assert high["status"] == "inconclusive" and high["p_pass_worst_case"] > 0.5
    assert across["verdict"] == "inconclusive"
    assert any(
        "100 row(s) of the candidate's dataset version are not in" in n for n in across["notes"]
    )
    promoted = client.post(
        "/api/v1/models/bot/promote",
        json={"checkpoint_id": newcomer, "gate_id": across["id"]},
        headers=auth,
    )
    assert promoted.status_code == 409

    add_run(client, auth, champion, new, {EVALUATOR: passing(new)})
    on_v2 = gate(client, auth, cand_run)
    assert (comparison(on_v2, "risk", "high")["lost"], on_v2["verdict"]) == (100, "block")
    # A candidate that answers the added rows as well still passes across the versions.
    sound = checkpoint(client, auth, "v3")
    sound_run = add_run(client, auth, sound, new, {EVALUATOR: passing(new)})
    passed = gate(client, auth, sound_run, baseline_run_id=base_run)
    assert comparison(passed, "risk", "high")["unjudged"] == 100
    assert passed["verdict"] == "pass", passed["reasons"]


def test_a_pass_on_an_earlier_version_does_not_lift_a_block_found_on_a_later_one(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """v2 adds 100 high-risk rows to v1's 400, and the candidate fails them: blocked on v2. A
    re-gate on v1 (a CI job still pinned to it), which never saw those rows, passed against
    the champion and lifted the block: the checkpoint read `evaluated` again, and a pass on
    another dataset promoted it over the standing v2 block. Only a pass on the block's
    version or a later one lifts it now."""
    old = rows_of("general", 400, "low")
    new = old + rows_of("safety", 100, "high")
    added = {row["key"] for row in new[len(old) :]}
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, old, {EVALUATOR: passing(old)})
    add_run(client, auth, champion, new, {EVALUATOR: passing(new)})
    blocked = gate(
        client, auth, add_run(client, auth, newcomer, new, {EVALUATOR: passing(new, added)})
    )
    assert (blocked["dataset_version"], blocked["verdict"]) == (2, "block")

    on_v1 = gate(client, auth, run_on(app, client, auth, newcomer, 1, old))
    assert (on_v1["dataset_version"], on_v1["verdict"], on_v1["exploratory"]) == (1, "pass", False)
    status = client.get(f"/api/v1/checkpoints/{newcomer}", headers=auth).json()["status"]
    assert status == "blocked"
    assert_a_pass_elsewhere_cannot_promote(client, auth, champion, newcomer, old, blocked["id"])


def test_a_block_on_an_earlier_version_does_not_hide_one_on_a_later_version(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """Blocks stood one per (dataset, baseline checkpoint): a later block on v1 replaced the
    block on v2, which has 100 high-risk rows v1 lacks, and a pass on v1 then lifted both, so
    the checkpoint read `evaluated` and a pass on another dataset promoted it. Each version's
    block stands until a pass on its version or a later one."""
    checkpoint(client, auth, "v0")
    client.put("/api/v1/models/bot/gate-policy", json={"margin": 0.1}, headers=auth)
    old = rows_of("general", 200, "low")
    new = old + rows_of("safety", 100, "high")
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, old, {EVALUATOR: passing(old)})
    add_run(client, auth, champion, new, {EVALUATOR: passing(new)})
    safety = {row["key"] for row in new[len(old) :]}
    on_v2 = gate(client, auth, run_on(app, client, auth, newcomer, 2, new, safety))
    assert (on_v2["dataset_version"], on_v2["verdict"]) == (2, "block")
    worse = {f"general-{i}" for i in range(40)}
    on_v1 = gate(client, auth, run_on(app, client, auth, newcomer, 1, old, worse))
    assert (on_v1["dataset_version"], on_v1["verdict"]) == (1, "block")
    clean = [run_on(app, client, auth, newcomer, 1, old) for _ in range(4)][-1]
    lifted_v1 = gate(client, auth, clean)
    assert (lifted_v1["verdict"], lifted_v1["attempt"]) == ("pass", 2), lifted_v1["reasons"]
    status = client.get(f"/api/v1/checkpoints/{newcomer}", headers=auth).json()["status"]
    assert status == "blocked"
    assert_a_pass_elsewhere_cannot_promote(client, auth, champion, newcomer, old, on_v2["id"])


def assert_a_pass_elsewhere_cannot_promote(
    client: TestClient,
    auth: Headers,
    champion: int,
    newcomer: int,
    rows: list[dict[str, Any]],
    block_id: int,
) -> None:
    """A pass on another dataset ('other') does not promote past gate `block_id`'s standing
    block on 'golden': 409 naming it."""
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)}, dataset="other")
    elsewhere = gate(
        client,
        auth,
        add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows)}, dataset="other"),
    )
    assert elsewhere["verdict"] == "pass"
    refused = client.post(
        "/api/v1/models/bot/promote",
        json={"checkpoint_id": newcomer, "gate_id": elsewhere["id"]},
        headers=auth,
    )
    assert refused.status_code == 409, refused.text
    assert f"gate {block_id} blocked this checkpoint on dataset 'golden'" in refused.text


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
    own_run = add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows)})
    queued = add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows)}, finish=False)

    def problem(body: dict[str, Any]) -> tuple[int, str]:
        response = client.post("/api/v1/gates", json=body, headers=auth)
        assert response.headers["content-type"] == "application/problem+json"
        return response.status_code, response.json()["detail"]

    status, detail = problem({"candidate_run_id": queued})
    assert status == 409 and "'queued'" in detail
    assert problem({"candidate_run_id": 999999})[0] == 404
    assert problem({"candidate_run_id": cand_run, "baseline_run_id": cand_run})[0] == 422
    status, detail = problem({"candidate_run_id": cand_run, "baseline_run_id": own_run})
    assert status == 422 and "candidate's own checkpoint" in detail
    status, detail = problem({"candidate_run_id": cand_run, "baseline_run_id": other_dataset})
    assert status == 422 and "another dataset" in detail
    status, detail = problem({"candidate_run_id": cand_run, "policy": {"margin": 2}})
    assert status == 422 and "margin" in detail
    status, detail = problem(
        {"candidate_run_id": cand_run, "policy": {"risk_margins": {"high": 0.7}}}
    )
    assert status == 422 and "risk_margins" in detail
    status, detail = problem(
        {"candidate_run_id": cand_run, "policy": {"cohort_risk": {"risk": {"high": "high"}}}}
    )
    assert status == 422 and "built-in cohort" in detail
    # A real gate waits for the candidate's run still queued, which it would pool.
    status, detail = problem({"candidate_run_id": cand_run, "baseline_run_id": base_run})
    assert status == 409 and f"run {queued} of the candidate's checkpoint {newcomer}" in detail
    drain_worker(app)
    # Nothing was stored by a refused request: the first gate is attempt 1.
    decided = gate(client, auth, cand_run, baseline_run_id=base_run)
    assert decided["attempt"] == 1
    # Five unchanged rows cannot rule out a 2-point drop: inconclusive, with the rows needed.
    assert decided["verdict"] == "inconclusive"
    assert comparison(decided, "all", "all")["required_n"] > 5


def test_gate_policy_is_versioned_and_a_request_override_is_recorded(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    checkpoint(client, auth, "v1")
    default = client.get("/api/v1/models/bot/gate-policy", headers=auth).json()
    assert default["version"] is None and default["policy"]["block_risks"] == ["high"]
    assert (
        default["policy"]["min_discordant"] == 6 and default["policy"]["weighting"] == "inverse_n"
    )
    first = client.put(
        "/api/v1/models/bot/gate-policy", json={"margin": 0.05, "floor": 0.5}, headers=auth
    ).json()
    second = client.put(
        "/api/v1/models/bot/gate-policy",
        json={"margin": 0.03, "risk_margins": {"low": 0.1}, "block_power": 0.95},
        headers=auth,
    ).json()
    assert (first["version"], second["version"]) == (1, 2)
    current = client.get("/api/v1/models/bot/gate-policy", headers=auth).json()
    assert current["version"] == 2 and current["policy"]["margin"] == 0.03
    assert current["policy"]["risk_margins"] == {"low": 0.1}
    assert current["policy"]["floor"] is None
    bad = client.put("/api/v1/models/bot/gate-policy", json={"alpha": 0}, headers=auth)
    assert bad.status_code == 422 and "alpha" in bad.json()["detail"]
    unknown = client.put("/api/v1/models/bot/gate-policy", json={"margins": 0.1}, headers=auth)
    assert unknown.status_code == 422
    # Fields of the old policy are accepted (clients still send them) and ignored.
    retired = client.put(
        "/api/v1/models/bot/gate-policy",
        json={"min_rows": 20, "bootstrap_resamples": 2000, "seed": 0, "warn_risks": ["low"]},
        headers=auth,
    )
    assert retired.status_code == 200, retired.text
    missing = client.get("/api/v1/models/nope/gate-policy", headers=auth)
    assert missing.status_code == 404

    rows = rows_of("a", 20, "high")
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)})
    result = gate(client, auth, add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows)}))
    assert result["policy_version"] == 3
    assert (
        "retired policy fields, ignored: bootstrap_resamples, min_rows, seed, warn_risks"
        in (result["notes"])
    )


def test_floors_are_judged_by_their_bound_on_guarded_cohorts_only(
    app: FastAPI, client: TestClient, auth: Headers, admin_key: str
) -> None:
    champion, newcomer = champion_and_candidate(client, auth)

    def decide(rows: Rows, failing: set[str], dataset: str, floor: float) -> Any:
        scores = {EVALUATOR: passing(rows, failing)}
        add_run(client, auth, champion, rows, scores, dataset=dataset)
        run = add_run(client, auth, newcomer, rows, scores, dataset=dataset)
        return gate(client, auth, run, policy={"floors": {EVALUATOR: floor}})

    # 95/100 against a floor of 0.97: below it as a point estimate, not shown below it
    # (exact p = 0.18): unclear, so the cohort cannot pass, but it does not block.
    rows = rows_of("main", 100, "high")
    unclear = decide(rows, {f"main-{i}" for i in range(5)}, "unclear", 0.97)
    high = comparison(unclear, "risk", "high")
    assert high["floor_status"] == "unclear" and not high["below_floor"]
    assert high["p_floor_broken"] == pytest.approx(stats.binomtest(95, 100, 0.97, "less").pvalue)
    assert unclear["verdict"] == "inconclusive"

    # 160/200 against 0.9 is shown below it (p = 2e-5) and blocks though nothing changed.
    rows = rows_of("main", 200, "high") + rows_of("edge", 4, "low")
    failing = {f"main-{i}" for i in range(40)} | {"edge-0", "edge-1", "edge-2"}
    broken = decide(rows, failing, "broken", 0.9)
    assert broken["verdict"] == "block"
    high = comparison(broken, "risk", "high")
    assert high["floor_status"] == "broken" and high["below_floor"] and high["regressed"]
    assert high["delta"] == 0 and high["p_floor_broken"] < 1e-4
    assert any("below the floor" in r["message"] for r in broken["reasons"])
    # An unguarded cohort under the floor is not judged against it.
    edge = comparison(broken, "route", "edge")
    assert edge["floor"] is None and not edge["below_floor"] and not edge["regressed"]
    assert broken["policy"]["floors"] == {EVALUATOR: 0.9}
    # The table's p is the margin test's (1.0 here): the page and the CLI say the block is the
    # floor's. They showed "regressed" beside p = 1.000 and a change of 0, and nothing else.
    assert high["p_adjusted"] == 1.0
    status = next(
        line.split()[-1]
        for line in _gate_table(broken["comparisons"], False).splitlines()
        if "risk=high" in line
    )
    assert status == "regressed,below-floor"
    sign_in(client, admin_key)
    page = client.get(f"/gates/{broken['id']}").text
    p_floor = high["p_floor_broken_adjusted"]
    assert f"floor 0.9: shown below (adjusted p = {p_floor:.2g})" in page
    assert "floor 0.97: not shown met" in client.get(f"/gates/{unclear['id']}").text


def test_what_cannot_be_compared_is_named_in_the_notes(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    rows = [{"key": f"a-{i}", "risk": "high", "cohort": {"route": "a"}} for i in range(30)]
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
    # (A row cohort named like a built-in one is refused on upload: tests/datasets.)
    assert result["notes"][:1] == [f"evaluators only in the candidate runs, not compared: {GRADED}"]
    declared = gate(client, auth, cand_run, policy={"cohort_risk": {"route": {"b": "high"}}})
    assert "declared cohort route=b (high risk) has no rows both sides scored" in " ".join(
        declared["notes"]
    )


@pytest.mark.parametrize(
    ("new_rows", "cohort_risk", "guarded"),
    [
        (rows_of("billing", 60, "low"), {"route": {"billing": "high"}}, ("route", "billing")),
        (rows_of("medical", 60, "high"), None, ("risk", "high")),
    ],
    ids=["declared-cohort", "risk-high-rows"],
)
def test_a_guarded_cohort_the_baseline_never_scored_keeps_the_gate_from_passing(
    app: FastAPI,
    client: TestClient,
    auth: Headers,
    admin_key: str,
    new_rows: Rows,
    cohort_risk: dict[str, dict[str, str]] | None,
    guarded: tuple[str, str],
) -> None:
    """The baseline ran on v1; v2 adds a guarded cohort that the candidate fails entirely.
    The guarded family is what v2 and the policy declare, not what both runs happen to
    share: the cohort is compared with no rows, so the gate cannot pass. Nor can the whole
    population, which holds the new rows too: the baseline has no verdict on them, and
    with it passing them the candidate's 60 fails may be a drop of 13 points."""
    old = rows_of("general", 400, "low")
    champion, newcomer = champion_and_candidate(client, auth)
    base_run = add_run(client, auth, champion, old, {EVALUATOR: passing(old)})
    new = old + new_rows
    failing = {row["key"] for row in new_rows}
    cand_run = add_run(
        client, auth, newcomer, new, {EVALUATOR: passing(new, failing)}, cohort_risk=cohort_risk
    )
    result = gate(client, auth, cand_run, baseline_run_id=base_run)
    assert result["verdict"] == "inconclusive"
    unscored = comparison(result, *guarded)
    assert unscored["role"] == "block" and unscored["status"] == "inconclusive"
    assert unscored["n"] == 0 and "no rows" in unscored["reason"]
    everyone = comparison(result, "all", "all")
    assert (everyone["n"], everyone["unjudged"], everyone["status"]) == (400, 60, "inconclusive")
    assert not any("not compared" in note for note in result["notes"] if guarded[1] in note)
    sign_in(client, admin_key)
    page = client.get(f"/gates/{result['id']}")
    assert page.status_code == 200 and "no rows of this cohort were scored" in page.text
    promote = client.post(
        "/api/v1/models/bot/promote",
        json={"checkpoint_id": newcomer, "gate_id": result["id"]},
        headers=auth,
    )
    assert promote.status_code == 409


@pytest.mark.parametrize("judge_down_for", ["candidate", "baseline"])
def test_evaluator_errors_are_left_out_like_missing_rows_not_compared_as_fails(
    app: FastAPI, client: TestClient, auth: Headers, judge_down_for: str
) -> None:
    """The judge reached no verdict on the 60 high-risk rows of one side's run (it was down):
    those results are errors. Compared as fails they would block the candidate (or flatter
    it); left out like rows without a result, risk=high has no row both sides scored and is
    inconclusive, so the gate neither blocks nor passes, and the notes say what was left out.
    The whole population passes on its 400 judged rows only if it also would with the 60
    at their worst: an unchanged baseline's missing passes cost nothing, the candidate's
    missing fails a drop of 13 points."""
    general, medical = rows_of("general", 400, "low"), rows_of("medical", 60, "high")
    rows = general + medical
    judged: list[float | None] = [1.0] * len(rows)
    unjudged: list[float | None] = [1.0] * len(general) + [None] * len(medical)
    down = {"candidate": judge_down_for == "candidate", "baseline": judge_down_for == "baseline"}
    _, cand_run = runs_for(
        client,
        auth,
        rows,
        {GRADED: unjudged if down["baseline"] else judged},
        {GRADED: unjudged if down["candidate"] else judged},
    )
    result = gate(client, auth, cand_run)
    assert result["verdict"] == "inconclusive", result["reasons"]
    high = comparison(result, "risk", "high", GRADED)
    assert high["role"] == "block" and high["status"] == "inconclusive" and high["n"] == 0
    everyone = comparison(result, "all", "all", GRADED)
    assert (everyone["n"], everyone["unjudged"]) == (len(general), 60)
    assert everyone["status"] == ("inconclusive" if down["candidate"] else "pass")
    left_out = {side: 60 if down[side] else 0 for side in down}
    assert (
        f"{GRADED}: 60 result(s) left out as evaluator errors, not verdicts "
        f"({left_out['candidate']} in the candidate's runs, {left_out['baseline']} in the "
        "baseline's)"
    ) in result["notes"]


def test_runs_whose_evaluator_never_reached_a_verdict_leave_the_gate_nothing_to_compare(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """Both sides' judge was down on every row: not one verdict exists, so there is nothing
    to pass on (as fails, 0 against 0 everywhere, it passed)."""
    rows = rows_of("general", 300, "high")
    _, cand_run = runs_for(client, auth, rows, {GRADED: [None] * 300}, {GRADED: [None] * 300})
    refused = client.post("/api/v1/gates", json={"candidate_run_id": cand_run}, headers=auth)
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"]
    assert "share no scored (key, evaluator) pair" in detail
    assert (
        f"{GRADED}: 600 result(s) left out as evaluator errors, not verdicts "
        "(300 in the candidate's runs, 300 in the baseline's)"
    ) in detail


def test_two_gates_claiming_one_attempt_number_store_one(
    app: FastAPI, client: TestClient, auth: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two gates of one checkpoint on one version decided at the same moment both read
    "attempt 1"; the unique (checkpoint, version, attempt) key stores the first and refuses
    the second with 409, leaving nothing half-written. Simulated by the second reading what
    the first read."""
    rows = rows_of("a", 20, "high")
    _, cand_run = runs_for(
        client, auth, rows, {EVALUATOR: passing(rows)}, {EVALUATOR: passing(rows)}
    )
    first = gate(client, auth, cand_run)
    monkeypatch.setattr(gates_service, "earlier_gates", lambda *_: (1, False))
    clash = client.post("/api/v1/gates", json={"candidate_run_id": cand_run}, headers=auth)
    assert clash.status_code == 409 and "at the same time" in clash.json()["detail"]
    monkeypatch.undo()
    listed = client.get("/api/v1/gates", headers=auth).json()["items"]
    assert [g["id"] for g in listed] == [first["id"]]
    assert gate(client, auth, cand_run)["attempt"] == 2
