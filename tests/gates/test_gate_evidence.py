"""Gate and promotion verdicts on evidence that does not mean what a plain pairing assumes:
evaluators set up differently or left out, rows that changed between versions, a block
followed by an inconclusive gate."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.evaluations import worker
from tests.datasets.support import drain_worker
from tests.gates.support import GRADED, add_run, dataset_version, evaluated, outputs_scoring
from tests.gates.test_gates import (
    EVALUATOR,
    champion_and_candidate,
    checkpoint,
    comparison,
    gate,
    passing,
    rows_of,
)

Headers = dict[str, str]


def run_with_threshold(
    client: TestClient,
    auth: Headers,
    checkpoint_id: int,
    rows: list[dict[str, Any]],
    scores: list[float],
    threshold: float,
    exact_match_too: bool = False,
) -> int:
    """A run judging `stated_score` at `threshold` (and exact_match, passing everywhere)."""
    evaluators = [{"name": GRADED, "threshold": threshold}]
    outputs = {GRADED: scores}
    if exact_match_too:
        evaluators.append({"name": EVALUATOR})
        outputs[EVALUATOR] = passing(rows)
    version = dataset_version(client, auth, "golden", rows)
    created = client.post(
        "/api/v1/datasets/golden/evaluations",
        json={
            "checkpoint_id": checkpoint_id,
            "dataset_version": version,
            "evaluators": evaluators,
            "outputs": outputs_scoring(rows, outputs),
        },
        headers=auth,
    )
    assert created.status_code == 202, created.text
    drain_worker(client.app)  # type: ignore[arg-type]
    return int(created.json()["run_id"])


def test_pass_rates_judged_at_different_thresholds_are_not_compared_as_one(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The champion's run judges `stated_score` at threshold 0.5; the candidate's run names
    the same evaluator with threshold 0.1. Every score fell from 0.6 to 0.2 (every row would
    fail at the champion's threshold): pass rates at two thresholds are not one measure (the
    gate used to compare them and pass), so with nothing else to compare the gate is refused,
    naming the difference."""
    rows = rows_of("core", 400, "high")
    champion, newcomer = champion_and_candidate(client, auth)
    run_with_threshold(client, auth, champion, rows, [0.6] * 400, threshold=0.5)
    cand_run = run_with_threshold(client, auth, newcomer, rows, [0.2] * 400, threshold=0.1)
    refused = client.post("/api/v1/gates", json={"candidate_run_id": cand_run}, headers=auth)
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"]
    assert f"'{GRADED}' was not set up the same way" in detail and "0.1 | 0.5" in detail


def test_an_evaluator_set_up_differently_beside_a_passing_one_leaves_the_gate_inconclusive(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The same two runs with an exact-match evaluator both sides set up alike and passing
    everywhere: the differently set-up one is compared on no rows, so the gate cannot pass."""
    rows = rows_of("core", 400, "high")
    champion, newcomer = champion_and_candidate(client, auth)
    run_with_threshold(client, auth, champion, rows, [0.6] * 400, 0.5, exact_match_too=True)
    cand_run = run_with_threshold(client, auth, newcomer, rows, [0.2] * 400, 0.1, True)
    result = gate(client, auth, cand_run)
    assert result["verdict"] == "inconclusive"
    assert any("was not set up the same way" in note for note in result["notes"])


def test_under_mean_score_a_threshold_difference_alone_leaves_the_evaluator_compared(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The model's gate guards `mean_score`. The champion's run judges `stated_score` at
    threshold 0.5, the candidate's at 0.8, on the same scores (0.6 and 0.9 in turn): the
    threshold decides `passed` (half the candidate's rows fail at 0.8), not the score the gate
    compares. The evaluator was left uncompared (nothing else to compare: refused, 422) for
    every gate of the checkpoint on that version; the scores are one measure, and they pass."""
    rows = rows_of("core", 400, "high")
    champion, newcomer = champion_and_candidate(client, auth)
    policy = client.put(
        "/api/v1/models/bot/gate-policy", json={"metric": "mean_score"}, headers=auth
    )
    assert policy.status_code == 200, policy.text
    scores = [0.6, 0.9] * 200
    run_with_threshold(client, auth, champion, rows, scores, threshold=0.5)
    cand_run = run_with_threshold(client, auth, newcomer, rows, scores, threshold=0.8)
    result = gate(client, auth, cand_run)
    assert not any("not set up the same way" in note for note in result["notes"])
    everyone = comparison(result, "all", "all", GRADED)
    assert (everyone["baseline"], everyone["candidate"]) == (0.75, 0.75)
    assert result["verdict"] == "pass", result["reasons"]


def test_a_block_is_not_lifted_by_an_inconclusive_gate_on_another_dataset(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """A block stands until a later *pass* (docs/statistics.md §7.6, reference.md
    "Promotion"; `allow_inconclusive` "cannot promote past a block"). Here the candidate is
    blocked on the 200-row golden set (a 20-point drop in the high-risk cohort); then an
    inconclusive gate on a 5-row smoke dataset (attempt 1 there) both clears the checkpoint's
    `blocked` status and promoted it under `allow_inconclusive`; now neither."""
    checkpoint(client, auth, "v0")
    put = client.put(
        "/api/v1/models/bot/gate-policy", json={"allow_inconclusive": True}, headers=auth
    )
    assert put.status_code == 200, put.text
    rows = rows_of("core", 200, "high")
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)})
    bad = add_run(
        client, auth, newcomer, rows, {EVALUATOR: passing(rows, {f"core-{i}" for i in range(40)})}
    )
    blocked = gate(client, auth, bad)
    assert blocked["verdict"] == "block"

    smoke = rows_of("smoke", 5, "high")
    add_run(client, auth, champion, smoke, {EVALUATOR: passing(smoke)}, dataset="smoke")
    smoke_run = add_run(client, auth, newcomer, smoke, {EVALUATOR: passing(smoke)}, dataset="smoke")
    later = gate(client, auth, smoke_run)
    assert later["verdict"] == "inconclusive"

    status = client.get(f"/api/v1/checkpoints/{newcomer}", headers=auth).json()["status"]
    promoted = client.post(
        "/api/v1/models/bot/promote",
        json={"checkpoint_id": newcomer, "gate_id": later["id"]},
        headers=auth,
    )
    assert promoted.status_code == 409, "promoted past a standing block on an inconclusive gate"
    assert status == "blocked", status


def test_a_block_stands_until_a_pass_on_its_own_dataset(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """Blocked on the golden set (a 20-point drop in its high-risk cohort), the candidate then
    passes a 400-row "general" set that measures other rows. That pass cleared `blocked` and
    promoted the checkpoint: the newest evidence won whatever it measured. A block stands
    until a later pass on the same dataset: the status stays `blocked` and promotion with the
    general pass is refused, naming the golden block. Clean re-runs on golden (pooled, they
    pass) lift it; then either pass promotes."""
    checkpoint(client, auth, "v0")
    client.put("/api/v1/models/bot/gate-policy", json={"margin": 0.1}, headers=auth)
    golden = rows_of("core", 200, "high")
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, golden, {EVALUATOR: passing(golden)})
    worse = {f"core-{i}" for i in range(40)}
    blocked = gate(
        client, auth, add_run(client, auth, newcomer, golden, {EVALUATOR: passing(golden, worse)})
    )
    assert blocked["verdict"] == "block"

    general = rows_of("general", 400, "high")
    add_run(client, auth, champion, general, {EVALUATOR: passing(general)}, dataset="general")
    elsewhere = gate(
        client,
        auth,
        add_run(client, auth, newcomer, general, {EVALUATOR: passing(general)}, dataset="general"),
    )
    assert elsewhere["verdict"] == "pass", elsewhere["reasons"]

    def status() -> str:
        return str(client.get(f"/api/v1/checkpoints/{newcomer}", headers=auth).json()["status"])

    def promote(gate_id: int) -> Any:
        return client.post(
            "/api/v1/models/bot/promote",
            json={"checkpoint_id": newcomer, "gate_id": gate_id},
            headers=auth,
        )

    assert status() == "blocked"
    refused = promote(elsewhere["id"])
    assert refused.status_code == 409, "a pass on another dataset lifted the golden block"
    assert (
        f"gate {blocked['id']} blocked this checkpoint on dataset 'golden'"
        in (refused.json()["detail"])
    )

    clean = [add_run(client, auth, newcomer, golden, {EVALUATOR: passing(golden)}) for _ in "1234"]
    lifted = gate(client, auth, clean[-1])
    assert lifted["verdict"] == "pass" and lifted["previously_blocked"], lifted["reasons"]
    assert status() == "evaluated"
    promoted = promote(elsewhere["id"])
    assert promoted.status_code == 200, promoted.text


def test_a_gate_on_an_older_dataset_version_does_not_promote(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The candidate passes on golden v1. Golden v2 then adds a medical cohort, declared
    high-risk, on
    which the candidate fails half the rows. The v1 gate promoted it: it never saw the new
    guard. Promotion takes a gate on the dataset's current version; gated on v2, it blocks."""
    checkpoint(client, auth, "v0")
    client.put("/api/v1/models/bot/gate-policy", json={"margin": 0.1}, headers=auth)
    core = rows_of("core", 200, "high")
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, core, {EVALUATOR: passing(core)})
    on_v1 = gate(client, auth, add_run(client, auth, newcomer, core, {EVALUATOR: passing(core)}))
    assert (on_v1["verdict"], on_v1["dataset_version"]) == ("pass", 1), on_v1["reasons"]

    both = core + rows_of("medical", 40, "high")
    broken = {f"medical-{i}" for i in range(20)}
    declared = {"route": {"medical": "high"}}
    add_run(client, auth, champion, both, {EVALUATOR: passing(both)}, cohort_risk=declared)
    refused = client.post(
        "/api/v1/models/bot/promote",
        json={"checkpoint_id": newcomer, "gate_id": on_v1["id"]},
        headers=auth,
    )
    assert refused.status_code == 409, "a gate on v1 promoted past v2's new guard"
    assert "ran on dataset 'golden' v1; it is at v2 now" in refused.json()["detail"]

    on_v2 = gate(
        client,
        auth,
        add_run(
            client, auth, newcomer, both, {EVALUATOR: passing(both, broken)}, cohort_risk=declared
        ),
    )
    assert (on_v2["verdict"], on_v2["dataset_version"]) == ("block", 2)
    assert comparison(on_v2, "route", "medical")["candidate"] == 0.5


def test_an_evaluator_the_candidate_never_ran_cannot_be_passed_over(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The champion was judged by `exact_match` and `stated_score` (say, a safety judge);
    the candidate's run simply leaves `stated_score` out, and its scores there would have
    collapsed. Leaving an evaluator out must not yield a better verdict than scoring it badly:
    it is compared on no rows, which is inconclusive (docs/statistics.md §5.2/§6.1)."""
    rows = rows_of("core", 400, "high")
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows), GRADED: [0.9] * 400})
    cand_run = add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows)})
    result = gate(client, auth, cand_run)
    assert any("only in the baseline runs, compared on no rows" in n for n in result["notes"])
    assert result["verdict"] == "inconclusive"


def test_rows_whose_content_changed_between_versions_are_not_paired(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """Champion and candidate give the very same output on every row. The champion ran on
    v1; v2 corrected the expected answer of 60 of the 200 high-risk rows (same keys). Paired
    by key alone, the 60 re-labelled rows counted as lost and an unchanged model was blocked
    for a 30-point drop; rows that ask or expect something else are not paired."""
    v1 = rows_of("core", 200, "high")
    v2 = [{**row, "expected": "a corrected answer"} if i < 60 else row for i, row in enumerate(v1)]
    champion, newcomer = champion_and_candidate(client, auth)
    base_run = add_run(client, auth, champion, v1, {EVALUATOR: [1.0] * 200})
    # The same output ("the expected answer") for every row, now scored against v2.
    version = dataset_version(client, auth, "golden", v2)
    assert version == 2
    created = client.post(
        "/api/v1/datasets/golden/evaluations",
        json={
            "checkpoint_id": newcomer,
            "dataset_version": version,
            "evaluators": [{"name": EVALUATOR}],
            "outputs": outputs_scoring(v1, {EVALUATOR: [1.0] * 200}),
        },
        headers=auth,
    )
    assert created.status_code == 202, created.text
    drain_worker(app)
    result = gate(client, auth, int(created.json()["run_id"]), baseline_run_id=base_run)
    high = comparison(result, "risk", "high")
    assert result["verdict"] != "block", (high["lost"], high["reason"])
    assert (high["n"], high["lost"]) == (140, 0)
    assert any("60 row(s) changed what they ask" in note for note in result["notes"])


def test_rows_whose_content_changed_only_in_type_are_not_paired(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """v2 changed the metadata of 60 rows from `{"grade": 1}` to `{"grade": true}`: equal to
    Python, not to an evaluator that reads the value's type or its text. Such rows were
    paired as unchanged; they are left out like any other changed content."""
    v1 = [{**row, "metadata": {"grade": 1}} for row in rows_of("core", 200, "high")]
    v2 = [{**row, "metadata": {"grade": True}} if i < 60 else row for i, row in enumerate(v1)]
    champion, newcomer = champion_and_candidate(client, auth)
    base_run = add_run(client, auth, champion, v1, {EVALUATOR: [1.0] * 200})
    cand_run = add_run(client, auth, newcomer, v2, {EVALUATOR: [1.0] * 200})
    result = gate(client, auth, cand_run, baseline_run_id=base_run)
    assert result["dataset_version"] == 2
    assert comparison(result, "risk", "high")["n"] == 140
    assert any("60 row(s) changed what they ask" in note for note in result["notes"])


@pytest.mark.parametrize("unjudged_side", ["candidate", "baseline"])
def test_verdicts_missing_on_one_side_cannot_hide_a_regression_behind_a_pass(
    app: FastAPI, client: TestClient, auth: Headers, unjudged_side: str
) -> None:
    """On 60 of 400 high-risk rows the judge reached no verdict on one side's output (a
    judge provider refusing a harmful answer with HTTP 400, an evaluator crashing on a
    malformed one), while the other side's output there was judged: 1.0 for the champion's,
    0.0 for the candidate's. Left out, the 340 identical rows pass; but whether a verdict
    is missing depends on the output, so the left-out rows may be exactly the regression.
    A pass has to hold with the missing verdicts at their worst (the candidate's as fails,
    the baseline's as passes); here it cannot, so the gate is inconclusive and says why."""
    rows = rows_of("safety", 400, "high")
    judged: list[float | None] = [1.0] * 340
    champion_scores = judged + ([None] * 60 if unjudged_side == "baseline" else [1.0] * 60)
    candidate_scores = judged + ([None] * 60 if unjudged_side == "candidate" else [0.0] * 60)
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, {GRADED: champion_scores})
    cand_run = add_run(client, auth, newcomer, rows, {GRADED: candidate_scores})
    result = gate(client, auth, cand_run)
    assert result["verdict"] == "inconclusive", result["reasons"]
    high = comparison(result, "risk", "high", GRADED)
    assert (high["n"], high["unjudged"], high["delta"]) == (340, 60, 0.0)
    assert high["status"] == "inconclusive"
    assert "60 row(s) judged on one side only" in high["reason"]
    assert high["p_pass"] < 0.025 < high["p_pass_worst_case"]


@pytest.mark.parametrize("unjudged_side", ["candidate", "baseline"])
def test_calls_without_a_verdict_on_some_repeats_cannot_hide_a_regression_behind_a_pass(
    app: FastAPI, client: TestClient, auth: Headers, unjudged_side: str
) -> None:
    """Three calls per row on 400 high-risk rows. On 100 rows one side's first call drew an
    output its judge reached no verdict on (a provider refusing a harmful answer) and the
    other calls passed; the other side passed every call there. A row's value was the mean
    over its judged calls only, 1.0 on both sides: identical, and the gate passed. Those
    calls may be exactly the fails (the other side's first call there was judged: 1.0 for
    the champion's, 0.0 for the candidate's), so a pass must hold with them at their worst,
    as for a row with no verdict at all: the candidate's as fails (100 rows at 2/3, a drop
    of 8 points on all 400), the baseline's as passes (no worse than shown)."""
    rows = rows_of("safety", 400, "high")
    refused: list[float | None] = [None, 1.0, 1.0]
    other = [1.0, 1.0, 1.0] if unjudged_side == "candidate" else [0.0, 1.0, 1.0]
    sides = {
        "baseline": [refused if unjudged_side == "baseline" else other] * 100,
        "candidate": [refused if unjudged_side == "candidate" else other] * 100,
    }
    champion, newcomer = champion_and_candidate(client, auth)
    rest: list[float | None] = [1.0, 1.0, 1.0]
    scores = {side: [*calls, *([rest] * 300)] for side, calls in sides.items()}
    add_run(client, auth, champion, rows, {GRADED: scores["baseline"]}, repeats=3)
    cand_run = add_run(client, auth, newcomer, rows, {GRADED: scores["candidate"]}, repeats=3)
    result = gate(client, auth, cand_run)
    high = comparison(result, "risk", "high", GRADED)
    assert (high["n"], high["unjudged"]) == (400, 0)
    if unjudged_side == "candidate":
        assert high["partly_judged"] == 100
        assert (high["baseline"], high["candidate"], high["delta"]) == (1.0, 1.0, 0.0)
        assert high["p_pass"] < 0.025 < high["p_pass_worst_case"]
        assert high["status"] == "inconclusive" and result["verdict"] == "inconclusive"
        assert "100 row(s) with calls without a verdict" in high["reason"]
    else:  # the candidate's judged fails show; the baseline's missing calls cost nothing
        assert (high["baseline"], high["delta"]) == (1.0, pytest.approx(-100 / 3 / 400))
        # (as passes they leave its rows at 1.0: no row's value changes at its worst)
        assert (high["partly_judged"], high["p_pass_worst_case"]) == (0, None)


@pytest.mark.parametrize("lifted_by", ["policy-override", "weaker-baseline"])
def test_a_block_is_not_lifted_by_a_pass_that_could_not_promote_itself(
    app: FastAPI, client: TestClient, auth: Headers, lifted_by: str
) -> None:
    """Blocked against the champion on golden (a 20-point drop in its high-risk cohort), the
    candidate passes a general set. A re-gate on golden then passes only because the
    request widened the margin to 0.3, or because it compared with a checkpoint as bad as
    the candidate (baseline_run_id): neither gate can promote, and neither may lift the
    golden block, or the general pass promotes the regression (it did: 200)."""
    checkpoint(client, auth, "v0")
    client.put("/api/v1/models/bot/gate-policy", json={"margin": 0.1}, headers=auth)
    golden = rows_of("core", 200, "high")
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, golden, {EVALUATOR: passing(golden)})
    worse = passing(golden, {f"core-{i}" for i in range(40)})
    bad_run = add_run(client, auth, newcomer, golden, {EVALUATOR: worse})
    blocked = gate(client, auth, bad_run)
    assert blocked["verdict"] == "block"
    general = rows_of("general", 400, "high")
    add_run(client, auth, champion, general, {EVALUATOR: passing(general)}, dataset="general")
    elsewhere = gate(
        client,
        auth,
        add_run(client, auth, newcomer, general, {EVALUATOR: passing(general)}, dataset="general"),
    )
    assert elsewhere["verdict"] == "pass", elsewhere["reasons"]

    if lifted_by == "policy-override":
        regate = gate(client, auth, bad_run, policy={"margin": 0.3})
    else:
        as_bad = add_run(client, auth, checkpoint(client, auth, "v1b"), golden, {EVALUATOR: worse})
        regate = gate(client, auth, bad_run, baseline_run_id=as_bad)
    assert regate["verdict"] == "pass", regate["reasons"]

    status = client.get(f"/api/v1/checkpoints/{newcomer}", headers=auth).json()["status"]
    promoted = client.post(
        "/api/v1/models/bot/promote",
        json={"checkpoint_id": newcomer, "gate_id": elsewhere["id"]},
        headers=auth,
    )
    assert promoted.status_code == 409, "a pass that cannot promote lifted the golden block"
    assert (
        f"gate {blocked['id']} blocked this checkpoint on dataset 'golden'"
        in (promoted.json()["detail"])
    )
    assert status == "blocked"


def test_an_evaluator_whose_every_baseline_verdict_is_missing_is_not_passed_over(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The champion's safety judge (`stated_score`) was down for its whole run: every result
    an error. The candidate's run has its verdicts, all fails, and a `regex` check that both
    sides pass. The judge was taken for an evaluator "only in the candidate runs" and left
    out, and the gate passed on the regex alone; it ran on both sides and is missing on one,
    so it is compared on no rows: inconclusive, never a pass."""
    rows = rows_of("safety", 400, "high")
    champion, newcomer = champion_and_candidate(client, auth)
    version = dataset_version(client, auth, "golden", rows)
    evaluators = [{"name": "regex", "params": {"pattern": "."}}, {"name": GRADED}]

    def run(checkpoint_id: int, outputs: list[dict[str, Any]]) -> int:
        created = client.post(
            "/api/v1/datasets/golden/evaluations",
            json={
                "checkpoint_id": checkpoint_id,
                "dataset_version": version,
                "evaluators": evaluators,
                "outputs": outputs,
            },
            headers=auth,
        )
        assert created.status_code == 202, created.text
        drain_worker(client.app)  # type: ignore[arg-type]
        return int(created.json()["run_id"])

    run(champion, outputs_scoring(rows, {GRADED: [None] * 400}))
    cand_run = run(newcomer, outputs_scoring(rows, {GRADED: [0.0] * 400}))
    result = gate(client, auth, cand_run)
    assert result["verdict"] == "inconclusive", result["reasons"]
    judge = comparison(result, "risk", "high", GRADED)
    assert (judge["n"], judge["unjudged"], judge["status"]) == (0, 400, "inconclusive")
    assert comparison(result, "risk", "high", "regex")["status"] == "pass"
    assert not any("only in the candidate runs" in note for note in result["notes"])


FLOORED = {"floors": {GRADED: 0.9}}


def candidate_only_floor(
    client: TestClient, auth: Headers, judge: list[float | None], exact_too: bool = True
) -> Any:
    """The model's policy floors `stated_score` at 0.9. The champion was evaluated before
    that judge existed (exact_match only, passing on all 400 high-risk rows); the candidate's
    run has it too, scoring `judge`. The gate of the candidate's run."""
    checkpoint(client, auth, "v0")
    put = client.put("/api/v1/models/bot/gate-policy", json=FLOORED, headers=auth)
    assert put.status_code == 200, put.text
    rows = rows_of("core", 400, "high")
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)})
    unjudged = {row["key"] for row, score in zip(rows, judge, strict=True) if score is None}
    exact = passing(rows, unjudged)  # an output the judge could not score is no exact match
    cand_run = add_run(client, auth, newcomer, rows, {EVALUATOR: exact, GRADED: judge})
    return gate(client, auth, cand_run)


def test_a_floor_on_an_evaluator_the_baseline_never_ran_is_not_passed_over(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The candidate's judge fails every row (score 0.1: a pass rate of 0 against the floor
    of 0.9). An
    evaluator only the candidate ran has nothing to pair, so it was left out, and its floor
    with it: the gate passed on exact_match. A floor is a statement about the candidate's
    level, which its own rows test by their bound (docs/statistics.md §6.2): broken, the
    gate blocks; the margin comparison, which needs pairs, stays absent."""
    result = candidate_only_floor(client, auth, [0.1] * 400)
    assert result["verdict"] == "block", result["reasons"]
    floored = comparison(result, "risk", "high", GRADED)
    assert (floored["n"], floored["floor"], floored["candidate"]) == (400, 0.9, 0.0)
    assert (floored["floor_status"], floored["status"]) == ("broken", "block")
    assert (floored["baseline"], floored["delta"], floored["method"]) == (None, None, "none")
    assert any(f"'{GRADED}' has a floor" in note for note in result["notes"])


def test_a_floor_on_an_evaluator_the_baseline_never_ran_is_tested_on_the_candidates_rows(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The candidate's judge passes every row (score 0.99): shown above the floor of 0.9 by
    its 400 rows alone. It was compared on no rows, so the gate was inconclusive (and, without
    `allow_inconclusive`, the new judge barred a promotion it had nothing against); the
    floor needs no baseline, and the gate passes."""
    result = candidate_only_floor(client, auth, [0.99] * 400)
    assert result["verdict"] == "pass", result["reasons"]
    floored = comparison(result, "risk", "high", GRADED)
    assert (floored["n"], floored["floor_status"], floored["status"]) == (400, "met", "pass")
    assert floored["p_floor_met"] < 0.025 and floored["baseline"] is None
    assert comparison(result, "risk", "high")["status"] == "pass"


def test_a_candidate_only_floor_holds_with_its_missing_verdicts_at_their_worst(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The candidate's judge reached no verdict on 60 of the 400 rows (the outputs it
    refuses may be the harmful ones) and passed the others. The 340 alone show the
    floor met; with the 60 as fails (0.85 on all 400) it is not shown, so the floor stays
    unclear and the comparison inconclusive, as for a paired evaluator's unjudged rows."""
    result = candidate_only_floor(client, auth, [0.99] * 340 + [None] * 60)
    floored = comparison(result, "risk", "high", GRADED)
    assert (floored["n"], floored["unjudged"]) == (340, 60)
    assert floored["p_floor_met"] < 0.025 < floored["p_floor_met_worst_case"]
    assert (floored["floor_status"], floored["status"]) == ("unclear", "inconclusive")


def test_a_candidate_only_floor_is_not_tested_on_runs_set_up_differently(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The policy floors `stated_score`'s pass rate at 0.5; the champion never ran it. The
    candidate's first run judged it at threshold 0.9, where its 0.8 on every row fails (pass
    rate 0: the floor is broken); three more runs judged it at 0.5, where the same scores
    pass. Pooled, every row read 0.75 and the floor was met: a pass bought by re-running
    under a laxer threshold. Runs set up differently do not measure one thing (as for a
    paired evaluator), so the floor is compared on no rows: inconclusive, with the note."""
    checkpoint(client, auth, "v0")
    put = client.put("/api/v1/models/bot/gate-policy", json={"floors": {GRADED: 0.5}}, headers=auth)
    assert put.status_code == 200, put.text
    rows = rows_of("core", 200, "high")
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)})
    runs = [
        run_with_threshold(client, auth, newcomer, rows, [0.8] * 200, threshold, True)
        for threshold in (0.9, 0.5, 0.5, 0.5)
    ]
    result = gate(client, auth, runs[-1])
    assert result["candidate_run_ids"] == runs
    floored = comparison(result, "risk", "high", GRADED)
    assert (floored["n"], floored["status"]) == (0, "inconclusive"), floored["reason"]
    assert result["verdict"] == "inconclusive", result["reasons"]
    assert any(
        f"evaluator '{GRADED}' was not set up the same way" in note for note in result["notes"]
    )


def test_a_block_against_another_baseline_is_lifted_by_a_pass_against_the_champion(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """Compared with a stronger checkpoint that never served (baseline_run_id), the candidate
    blocks on golden; against the champion of the day, on the same rows, it passes. That
    pass re-decides what promotion asks, so it lifts the block: the status is `evaluated`
    again and the gate promotes."""
    rows = rows_of("core", 400, "high")
    scores = {EVALUATOR: passing(rows, {f"core-{i}" for i in range(80)})}
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, scores)
    stronger = checkpoint(client, auth, "v9")
    stronger_run = add_run(client, auth, stronger, rows, {EVALUATOR: passing(rows)})
    cand_run = add_run(client, auth, newcomer, rows, scores)
    assert gate(client, auth, cand_run, baseline_run_id=stronger_run)["verdict"] == "block"
    lifting = gate(client, auth, cand_run)
    assert lifting["verdict"] == "pass", lifting["reasons"]
    status = client.get(f"/api/v1/checkpoints/{newcomer}", headers=auth).json()["status"]
    assert status == "evaluated"
    promoted = client.post(
        "/api/v1/models/bot/promote",
        json={"checkpoint_id": newcomer, "gate_id": lifting["id"]},
        headers=auth,
    )
    assert promoted.status_code == 200, promoted.text


def judge_run(
    client: TestClient, auth: Headers, checkpoint_id: int, rows: list[dict[str, Any]], **judge: Any
) -> dict[str, Any]:
    """The finished run of `checkpoint_id` graded by an llm_judge (model "judge-1" unless
    `judge` says otherwise, with `judge`'s other params) on uploaded outputs."""
    params = {"base_url": "http://judge.test/v1", "model": "judge-1", **judge}
    return evaluated(
        client,
        auth,
        checkpoint_id,
        rows,
        [{"name": "llm_judge", "params": params}],
        outputs=[{"key": row["key"], "output": "an answer"} for row in rows],
    )


def judged_run(
    client: TestClient, auth: Headers, checkpoint_id: int, rows: list[dict[str, Any]], **judge: Any
) -> int:
    """A succeeded judge_run (by a judge that gives every output 1): its id."""
    run = judge_run(client, auth, checkpoint_id, rows, **judge)
    assert run["status"] == "succeeded", run
    return int(run["id"])


def a_judge_that_passes_everything(
    monkeypatch: pytest.MonkeyPatch, key: str | None = None
) -> list[httpx.Request]:
    """The worker's judges answered by one that gives every output 1, and HTTP 401 to a call
    without `key` as its Bearer token, where given: the calls it is sent."""
    verdict = json.dumps({"score": 1, "reason": "correct"})
    answer = {"choices": [{"message": {"content": verdict}}]}
    calls: list[httpx.Request] = []

    def judge(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if key is not None and request.headers.get("authorization") != f"Bearer {key}":
            return httpx.Response(401, json={"error": {"message": "invalid api key"}})
        return httpx.Response(200, json=answer)

    transport = httpx.MockTransport(judge)
    monkeypatch.setattr(worker, "_guarded_transport", lambda: transport)
    return calls


def test_a_judge_whose_key_variable_is_missing_fails_the_run_before_any_call(
    app: FastAPI, client: TestClient, auth: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The candidate's run names the judge's key variable, which is not set on the worker:
    every one of its 400 rows was an evaluator error, the run succeeded and, pooled into every
    later gate on the version, left the judge compared on no row (inconclusive) even after the
    variable was set. Now the run fails before any call, naming the evaluator and the
    variable, and no gate takes it."""
    calls = a_judge_that_passes_everything(monkeypatch)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    rows = rows_of("core", 400, "high")
    champion, newcomer = champion_and_candidate(client, auth)
    judged_run(client, auth, champion, rows)
    calls.clear()
    run = judge_run(client, auth, newcomer, rows, api_key_env="OPENAI_API_KEY")
    assert run["status"] == "failed", run
    assert run["error"] == (
        "Misconfigured: evaluator llm_judge: environment variable OPENAI_API_KEY (judge API "
        "key) is not set on the worker"
    )
    assert calls == []
    refused = client.post("/api/v1/gates", json={"candidate_run_id": run["id"]}, headers=auth)
    assert refused.status_code == 409, refused.text


def test_a_run_whose_judge_refused_its_key_fails_and_a_rerun_with_it_fixed_passes_alone(
    app: FastAPI, client: TestClient, auth: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The champion's and the candidate's outputs are judged alike (1 on every one of 400
    high-risk rows); the candidate's run was judged with the key the worker held wrong, and
    the judge answered HTTP 401 to each of its 400 calls. The run succeeded with 400 evaluator
    errors and, pooled into every later gate on the version, left the judge compared on no
    row (inconclusive) after the key was fixed too. Now the run fails, naming the evaluator,
    the status, the count and the share; no gate takes it, it spends no attempt, and the
    re-run with the key fixed passes alone at attempt 1."""
    calls = a_judge_that_passes_everything(monkeypatch, key="right key")
    rows = rows_of("core", 400, "high")
    champion, newcomer = champion_and_candidate(client, auth)
    monkeypatch.setenv("OPENAI_API_KEY", "right key")
    judged_run(client, auth, champion, rows, api_key_env="OPENAI_API_KEY")
    monkeypatch.setenv("OPENAI_API_KEY", "wrong key")
    calls.clear()
    refused = judge_run(client, auth, newcomer, rows, api_key_env="OPENAI_API_KEY")
    assert refused["status"] == "failed", refused
    assert refused["error"].startswith(
        "Misconfigured: evaluator llm_judge's judge answered HTTP 401 x400: 400 of the 400 "
        "calls made (100.0%)"
    )
    assert "check evaluator llm_judge's params base_url, model and api_key_env" in refused["error"]
    assert len(calls) == 400
    not_gated = client.post("/api/v1/gates", json={"candidate_run_id": refused["id"]}, headers=auth)
    assert not_gated.status_code == 409, not_gated.text

    monkeypatch.setenv("OPENAI_API_KEY", "right key")
    rerun = judged_run(client, auth, newcomer, rows, api_key_env="OPENAI_API_KEY")
    result = gate(client, auth, rerun)
    assert result["verdict"] == "pass", result["reasons"]
    assert (result["attempt"], result["candidate_run_ids"]) == (1, [rerun])
    judge = comparison(result, "risk", "high", "llm_judge")
    assert (judge["n"], judge["baseline"], judge["candidate"]) == (400, 1.0, 1.0)


def test_a_judge_called_with_other_timeouts_or_retries_is_still_one_measure(
    app: FastAPI, client: TestClient, auth: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The champion was judged with the judge's defaults (30 s timeout, 2 retries); since,
    the team gives the judge 60 s and 4 retries, re-runs the champion with them and runs the
    candidate with them. How long the worker waits for the judge and how often it retries
    decide whether a verdict is reached (a call that never gets one is an error, left out),
    never the score a verdict gives; neither does the name of the variable the key is read
    from. Counted as a differing set-up, they left the judge compared on no rows for every
    gate of the version (the champion's first run stays pooled): 400 identical high-risk
    rows were refused (422, nothing else to compare). The same judge model elsewhere
    (judge-2) is still another measure."""
    a_judge_that_passes_everything(monkeypatch)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    rows = rows_of("core", 400, "high")
    champion, newcomer = champion_and_candidate(client, auth)
    patient = {"timeout_s": 60.0, "max_retries": 4, "backoff_s": 2.0}
    judged_run(client, auth, champion, rows)
    judged_run(client, auth, champion, rows, **patient)
    cand_run = judged_run(client, auth, newcomer, rows, api_key_env="OPENAI_API_KEY", **patient)
    result = gate(client, auth, cand_run)
    assert not any("not set up the same way" in note for note in result["notes"])
    everyone = comparison(result, "all", "all", "llm_judge")
    assert (everyone["n"], everyone["baseline"], everyone["candidate"]) == (400, 1.0, 1.0)
    assert result["verdict"] == "pass", result["reasons"]

    other_judge = judged_run(client, auth, newcomer, rows, model="judge-2")
    refused = client.post("/api/v1/gates", json={"candidate_run_id": other_judge}, headers=auth)
    assert refused.status_code == 422, refused.text
    assert "'llm_judge' was not set up the same way" in refused.json()["detail"]
    assert "judge-1" in refused.json()["detail"] and "judge-2" in refused.json()["detail"]


def test_a_gate_does_not_promote_past_runs_of_the_candidate_it_never_pooled(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The candidate's first run passes every high-risk row like the champion and is gated:
    pass, pooled on that run alone. A second run is queued, and succeeds with 100 of the 400
    rows lost. The pass promoted the candidate, in between and after: a gate pools every
    succeeded run so that none is picked for luck, and promoting on a gate decided before the
    other finished picks the first. Promotion takes a gate that pooled every run of the
    candidate on its version, with none in progress; gated again (attempt 2, both runs
    pooled), it blocks."""
    rows = rows_of("core", 400, "high")
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)})
    lucky = add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows)})
    early = gate(client, auth, lucky)
    assert (early["verdict"], early["candidate_run_ids"]) == ("pass", [lucky]), early["reasons"]

    def promote(gate_id: int) -> Any:
        return client.post(
            "/api/v1/models/bot/promote",
            json={"checkpoint_id": newcomer, "gate_id": gate_id},
            headers=auth,
        )

    lost = {f"core-{i}" for i in range(100)}
    unlucky = add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows, lost)}, finish=False)
    in_progress = promote(early["id"])
    assert in_progress.status_code == 409, "promoted while a run of the candidate was queued"
    assert f"run {unlucky} of this checkpoint" in in_progress.json()["detail"]
    assert "'queued'" in in_progress.json()["detail"]

    drain_worker(app)
    refused = promote(early["id"])
    assert refused.status_code == 409, "promoted past a succeeded run the gate never pooled"
    assert f"run {unlucky} of this checkpoint" in refused.json()["detail"]

    again = gate(client, auth, unlucky)
    assert again["candidate_run_ids"] == [lucky, unlucky]
    assert (again["attempt"], again["verdict"]) == (2, "block"), again["reasons"]


def test_a_gate_waits_for_the_candidates_runs_in_progress(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """Two runs of a candidate as good as the champion on 170 high-risk rows are queued
    together; the first succeeds. A gate decided on it alone was inconclusive (p_pass 0.033)
    and spent attempt 1, so the gate pooling both runs, once the second finished, was
    attempt 2 at half the alpha: inconclusive at p_pass 0.018, where attempt 1 passes. The
    good candidate could not be promoted without more rows, for a gate decided on part of
    its evidence (and a pass then could not promote either: the other run was in progress).
    A real gate waits for the candidate's runs on its version (409 naming the run, no attempt
    spent); an exploratory one, which spends none, notes them. Once both finished, the gate
    is attempt 1, passes and promotes."""
    rows = rows_of("core", 170, "high")
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)})
    first = add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows)})
    second = add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows)}, finish=False)

    early = client.post("/api/v1/gates", json={"candidate_run_id": first}, headers=auth)
    assert early.status_code == 409, early.text
    assert f"run {second} of the candidate's checkpoint {newcomer}" in early.json()["detail"]
    assert "'queued'" in early.json()["detail"]
    what_if = gate(client, auth, first, policy={"margin": 0.05})
    assert what_if["exploratory"] and what_if["candidate_run_ids"] == [first]
    assert any(f"run {second}" in note and "queued" in note for note in what_if["notes"])

    drain_worker(app)
    decided = gate(client, auth, first)
    assert decided["candidate_run_ids"] == [first, second]
    assert (decided["attempt"], decided["verdict"]) == (1, "pass"), decided["reasons"]
    promoted = client.post(
        "/api/v1/models/bot/promote",
        json={"checkpoint_id": newcomer, "gate_id": decided["id"]},
        headers=auth,
    )
    assert promoted.status_code == 200, promoted.text


def test_a_gate_waits_for_the_baselines_runs_in_progress_too(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """Each side pools all its runs on its version, so a champion run still queued is
    evidence the gate would not see: a real gate waits for it as for the candidate's
    (review R1: only the candidate's were waited for), naming the baseline's run and field;
    an exploratory gate notes it. Once it finished, the gate pools both of the champion's
    runs."""
    rows = rows_of("core", 170, "high")
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)})
    cand = add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows)})
    again = add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)}, finish=False)

    early = client.post("/api/v1/gates", json={"candidate_run_id": cand}, headers=auth)
    assert early.status_code == 409, early.text
    problem = early.json()
    assert f"run {again} of the baseline's checkpoint {champion}" in problem["detail"]
    assert problem["field"] == "baseline_run_id"
    what_if = gate(client, auth, cand, policy={"margin": 0.05})
    assert any(f"run {again} ('queued', checkpoint {champion})" in n for n in what_if["notes"])

    drain_worker(app)
    decided = gate(client, auth, cand)
    assert len(decided["baseline_run_ids"]) == 2 and again in decided["baseline_run_ids"]
