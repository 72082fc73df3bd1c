"""Floors tested on per-row means (repeats, scores) near the top of the range: a candidate at
or above the floor everywhere is never shown below it."""

from __future__ import annotations

import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.stats.cohorts import build_cohorts
from app.stats.gate import DecisionPolicy, EvaluatorOutcomes, decide_gate
from app.stats.margin import score_test
from tests.gates.support import add_run
from tests.gates.test_gates import (
    EVALUATOR,
    champion_and_candidate,
    checkpoint,
    comparison,
    gate,
    passing,
    rows_of,
)
from tests.web.test_pages import sign_in

Headers = dict[str, str]


def test_a_perfect_candidate_is_not_shown_below_a_floor_of_one(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """A "must always hold" floor (floors: {exact_match: 1.0}) with 2 calls per row: the
    candidate passes every call of every row, exactly like the champion. The floor test on
    per-row means clips the floor to 1 - 1e-9, where the skewness-corrected score test
    returns p = 0 for "candidate >= floor", so the gate reports the candidate (1.0000)
    "shown below the floor 1" and blocks a flawless checkpoint."""
    checkpoint(client, auth, "v0")
    put = client.put(
        "/api/v1/models/bot/gate-policy", json={"floors": {EVALUATOR: 1.0}}, headers=auth
    )
    assert put.status_code == 200, put.text
    rows = rows_of("core", 200, "high")
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)}, repeats=2)
    cand_run = add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows)}, repeats=2)
    result = gate(client, auth, cand_run)
    high = comparison(result, "risk", "high")
    assert high["candidate"] == 1.0
    assert high["floor_status"] != "broken", high["reason"]
    assert result["verdict"] != "block", high["reason"]


def test_floor_test_never_shows_a_level_below_the_floor_when_every_value_is_above() -> None:
    """Computation behind the defect: every candidate value is 1.0 (mean 1.0, Z > 0), yet the
    lower-tail ("candidate < floor") p-value falls below 0.5, and below alpha as the floor
    nears 1: Hall's correction with kappa -> -inf (v0 -> 0 at the range's end) flips the
    sign. With 300 rows and a floor of 0.99999 p = 0.0014: shown below the floor."""
    values, counts = np.array([1.0]), np.array([[300.0]])
    z, p = score_test(values, counts, np.array([0.99999]), "lower", lo=0.0, hi=1.0)
    assert z[0] > 0
    assert p[0] >= 0.5, p[0]


def test_decide_gate_floor_near_one_on_repeats_does_not_block_a_perfect_candidate() -> None:
    n = 300
    cohorts, membership = build_cohorts({}, ["high"] * n, block_risks=["high"])
    decided = decide_gate(
        [EvaluatorOutcomes("json_valid", np.ones(n), np.ones(n), 3, 3)],
        membership,
        cohorts,
        DecisionPolicy(floor=0.99999),
    )
    assert decided.verdict != "block", [r.reason for r in decided.records]


def test_the_gate_page_prints_a_floor_near_one_with_its_own_digits(
    app: FastAPI, client: TestClient, auth: Headers, admin_key: str
) -> None:
    """A floor of 0.999 read "floor 1.00: not shown met" on the gate page (two digits): a
    floor the candidate (1.0000) seems to meet, and not the one the policy states."""
    rows = rows_of("core", 200, "high")
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)})
    cand_run = add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows)})
    result = gate(client, auth, cand_run, policy={"floor": 0.999})
    high = comparison(result, "risk", "high")
    assert (high["candidate"], high["floor"], high["floor_status"]) == (1.0, 0.999, "unclear")
    sign_in(client, admin_key)
    page = client.get(f"/gates/{result['id']}").text
    assert "floor 0.999: not shown met" in page and "floor 1.00" not in page
