"""The skewness-corrected score test on per-row means (graded scores, repeats) when the per-row
differences are tightly concentrated: Hall's correction with a huge kappa must never reject on
the side the observed mean contradicts (docs/statistics.md §4.3)."""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.stats.cohorts import build_cohorts
from app.stats.gate import DecisionPolicy, EvaluatorOutcomes, decide_gate
from app.stats.margin import score_test
from tests.gates.support import GRADED, add_run
from tests.gates.test_gates import champion_and_candidate, checkpoint, comparison, gate, rows_of

Headers = dict[str, str]


def _mean_score_gate(
    client: TestClient, auth: Headers, base: float, cand: float, n: int
) -> dict[str, Any]:
    checkpoint(client, auth, "v0")
    put = client.put("/api/v1/models/bot/gate-policy", json={"metric": "mean_score"}, headers=auth)
    assert put.status_code == 200, put.text
    rows = rows_of("core", n, "high")
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, {GRADED: [base] * n})
    return gate(client, auth, add_run(client, auth, newcomer, rows, {GRADED: [cand] * n}))


def test_every_row_worse_than_the_margin_is_not_certified_non_inferior(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """20 high-risk rows, mean_score, margin 0.02: every single row's score fell by 0.0202
    (0.9 -> 0.8798), more than the tolerated drop (without the sign guard the gate said 'pass',
    p = 0.0048)."""
    result = _mean_score_gate(client, auth, 0.9, 0.8798, 20)
    high = comparison(result, "risk", "high", GRADED)
    assert high["delta"] < -0.02
    assert result["verdict"] != "pass", high["reason"]


def test_every_row_inside_the_margin_does_not_block(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The mirror: every row fell by 0.0198, inside the 0.02 margin (it used to block with
    "drop -0.0198 shown beyond the margin 0.02")."""
    result = _mean_score_gate(client, auth, 0.9, 0.8802, 20)
    high = comparison(result, "risk", "high", GRADED)
    assert high["delta"] > -0.02
    assert result["verdict"] != "block", high["reason"]


def test_pass_test_size_at_the_margin_for_concentrated_differences() -> None:
    """Size of the non-inferiority test (nominal one-sided 2.5%) at the null boundary
    Delta = -margin when per-row differences are N(-0.02, 0.002): every rejection came from
    the wrong side (0.18 at n = 50 before the guard, 0.000 after)."""
    rng = np.random.default_rng(5)
    n, reps, m = 50, 400, 0.02
    d = np.round(np.clip(rng.normal(-m, 0.002, (reps, n)), -1, 1), 12)
    support, index = np.unique(d, return_inverse=True)
    index = index.reshape(reps, n)
    counts = np.stack([np.bincount(r, minlength=support.size) for r in index]).astype(float)
    _, p = score_test(support, counts, np.full(reps, -m), "upper")
    size = float(np.mean(p <= 0.025))
    assert size <= 0.05, f"wrong-pass rate at the margin {size:.3f} (nominal 0.025)"


def test_decide_gate_uniform_drop_beyond_margin() -> None:
    n = 20
    cohorts, membership = build_cohorts({}, ["high"] * n, block_risks=["high"])
    decided = decide_gate(
        [EvaluatorOutcomes("judge", np.full(n, 0.9), np.full(n, 0.8798), 1, 1)],
        membership,
        cohorts,
        DecisionPolicy(),
    )
    assert decided.verdict != "pass", [r.reason for r in decided.records]
