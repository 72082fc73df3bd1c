"""Gate decisions against known truth, through the real decision code (app.stats.gate).

Golden sets are simulated as rough as real ones:

* every row has a latent pass probability drawn from a Beta law fitted to a base pass
  rate and a run-to-run flip rate (U-shaped at low flip rates: most rows always pass
  or always fail, a few flip), shifted per cohort value on the logit scale so
  cohorts differ in difficulty;
* each evaluator sees the row through its own monotone transform of that probability
  (stricter or looser judges), and the evaluators of one call are correlated: they
  judge the same output (a shared uniform per row and call), 30% of the time with
  noise of their own;
* run-to-run flips are not drawn, they emerge: every call redraws the outputs;
* cohort values have Zipf-like frequencies, so cohorts range from a few rows to
  hundreds; high-risk rows are scattered or form a declared cohort;
* a regression is a failure mode: a random set of the affected rows, chosen so the
  expected pass rate there drops by the stated amount, now always fails.

Scenarios (each with fixed seeds; counts, rates and Wilson 95% intervals):

* ``false_block``: unchanged candidates over six structures;
* ``power_high_risk``: a 15-point drop on the 100 high-risk rows, next to one
  uncorrected one-sided exact McNemar test on the same rows (evaluator 0);
* ``required_rows``: a pilot gate says how many rows each guarded cohort needs; on a
  set that size, how often an unchanged candidate passes and a drop of twice the
  margin blocks;
* ``retries``: up to 8 re-runs of a checkpoint with a real 15-point drop, fresh runs
  each time (what the old service allowed) against app.stats.retry's rule;
* ``repeats_test_size``: the simulated size of the per-row-mean score test (k = 3)
  at the null boundary, where no exact test exists;
* ``api``: the same decisions through the HTTP API (the app in-process, its worker
  drained in-process) on SQLite and on PostgreSQL, each gate's verdict and p-values
  compared with decide_gate on the same arrays (needs PostgreSQL at
  PLUMBLINE_BENCH_DATABASE_URL, default postgresql://postgres@127.0.0.1:5432/test).

    nice .venv/bin/python bench/decisions.py [--quick] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from scipy import special, stats
from scratch import BENCH_DATABASE_URL, scratch_schema
from statsmodels.stats.proportion import proportion_confint

from app.core import migrate
from app.core.settings import Settings
from app.evaluations.worker import work_runs
from app.keys import service as keys
from app.main import create_app
from app.models.project import Role
from app.stats.cohorts import CohortSpec, build_cohorts
from app.stats.gate import DecisionPolicy, EvaluatorOutcomes, decide_gate
from app.stats.margin import score_test
from app.stats.retry import pool_runs

POLICY = DecisionPolicy()


# --- simulated golden sets ----------------------------------------------------------------


@dataclass(frozen=True)
class Structure:
    """A golden set's shape: rows, cohort dimensions, where the high-risk rows are, noise."""

    name: str
    rows: int
    dimensions: dict[str, int]
    high_risk: str  # "scattered" or "declared:<dimension>"
    high_rows: int
    flip: float
    evaluators: int
    repeats: int = 1
    base_rate: float = 0.75
    seed: int = 0


@dataclass
class GoldenSet:
    """Fixed labels of one structure: cohorts, membership, high-risk rows."""

    structure: Structure
    cohorts: list[CohortSpec]
    membership: np.ndarray
    high: np.ndarray  # indices of the high-risk rows
    shifts: np.ndarray  # per-row logit shift from the row's cohort values
    gammas: np.ndarray  # per-evaluator transform exponents
    beta: tuple[float, float] = field(default=(1.5, 0.5))
    labels: dict[str, list[str]] = field(default_factory=dict)  # each dimension's row labels
    risk: list[str] = field(default_factory=list)  # each row's risk level
    declared: dict[str, dict[str, str]] = field(default_factory=dict)  # declared cohort risk


def beta_for(base_rate: float, flip: float) -> tuple[float, float]:
    """Beta(a, b) with mean base_rate and E[2 pi (1 - pi)] = flip."""
    ratio = flip / (2.0 * base_rate * (1.0 - base_rate))
    if not 0.0 < ratio < 1.0:
        raise ValueError("flip rate too high for this base rate")
    total = ratio / (1.0 - ratio)
    return base_rate * total, (1.0 - base_rate) * total


def zipf_labels(rng: np.random.Generator, rows: int, values: int, prefix: str) -> list[str]:
    weights = 1.0 / np.arange(1, values + 1) ** 1.1
    return [f"{prefix}{v}" for v in rng.choice(values, size=rows, p=weights / weights.sum())]


def golden_set(structure: Structure) -> GoldenSet:
    rng = np.random.default_rng(structure.seed)
    n = structure.rows
    dims = {
        name: zipf_labels(rng, n, values, name[:3]) for name, values in structure.dimensions.items()
    }
    shifts = np.zeros(n)
    for labels in dims.values():
        codes, index = np.unique(labels, return_inverse=True)
        shifts += rng.normal(0.0, 0.5, codes.size)[index]
    risk = np.where(rng.random(n) < 0.3, "medium", "low").astype(object)
    declared: dict[str, dict[str, str]] = {}
    if structure.high_risk == "scattered":
        high = np.sort(rng.choice(n, structure.high_rows, replace=False))
    else:
        dimension = structure.high_risk.split(":", 1)[1]
        labels = np.asarray(dims[dimension], dtype=object)
        sizes = {v: int((labels == v).sum()) for v in set(dims[dimension])}
        value = min(sizes, key=lambda v: abs(sizes[v] - structure.high_rows))
        high = np.flatnonzero(labels == value)
        declared = {dimension: {value: "high"}}
    risk[high] = "high"
    cohorts, membership = build_cohorts(
        dims, list(risk), block_risks=["high"], declared_risk=declared
    )
    gammas = np.concatenate([[1.0], rng.uniform(0.7, 1.4, structure.evaluators - 1)])
    return GoldenSet(
        structure,
        cohorts,
        membership,
        high,
        shifts,
        gammas,
        beta_for(structure.base_rate, structure.flip),
        dims,
        [str(level) for level in risk],
        declared,
    )


def latent(gs: GoldenSet, rng: np.random.Generator) -> np.ndarray:
    """Per-row x evaluator pass probabilities of the champion (redrawn per trial)."""
    q = rng.beta(*gs.beta, gs.structure.rows)
    q = special.expit(special.logit(np.clip(q, 1e-6, 1 - 1e-6)) + gs.shifts)
    return np.asarray(q[:, None] ** gs.gammas[None, :])


def regress(pi: np.ndarray, rows: np.ndarray, drop: float, rng: np.random.Generator) -> np.ndarray:
    """A failure mode: rows (a random subset of ``rows``) that now always fail, costing ``drop``."""
    if drop <= 0.0:
        return pi
    order = rng.permutation(rows)
    lost = np.cumsum(pi[order].mean(axis=1))
    failing = order[: int(np.searchsorted(lost, drop * rows.size)) + 1]
    out = pi.copy()
    out[failing] = 0.0
    return out


def run(pi: np.ndarray, repeats: int, rng: np.random.Generator) -> np.ndarray:
    """Passes per row x evaluator over ``repeats`` calls; evaluators judge the same output."""
    n, e = pi.shape
    passes = np.zeros((n, e))
    for _ in range(repeats):
        shared = rng.random((n, 1))
        own = rng.random((n, e))
        use_own = rng.random((n, e)) < 0.3
        passes += np.where(use_own, own, shared) < pi
    return passes


def gate(
    gs: GoldenSet,
    base: np.ndarray,
    cand: np.ndarray,
    k_base: int,
    k_cand: int,
    policy: DecisionPolicy = POLICY,
    **kwargs: Any,
) -> Any:
    evaluators = [
        EvaluatorOutcomes(f"e{j}", base[:, j] / k_base, cand[:, j] / k_cand, k_base, k_cand)
        for j in range(base.shape[1])
    ]
    return decide_gate(evaluators, gs.membership, gs.cohorts, policy, with_bounds=False, **kwargs)


def rate(count: int, trials: int) -> dict[str, Any]:
    count = int(count)
    low, high = proportion_confint(count, trials, alpha=0.05, method="wilson")
    return {
        "count": count,
        "trials": trials,
        "rate": round(count / trials, 4),
        "wilson_95": [round(float(low), 4), round(float(high), 4)],
    }


def describe(gs: GoldenSet) -> dict[str, Any]:
    s = gs.structure
    sizes = gs.membership.sum(axis=1)
    guarded = [c.name for c in gs.cohorts if c.guarded]
    return {
        "rows": s.rows,
        "dimensions": s.dimensions,
        "cohorts": len(gs.cohorts),
        "cohort_rows_min_median_max": [int(sizes.min()), int(np.median(sizes)), int(sizes.max())],
        "high_risk": s.high_risk,
        "high_risk_rows": int(gs.high.size),
        "guarded_cohorts": guarded,
        "target_flip_rate": s.flip,
        "evaluators": s.evaluators,
        "repeats": s.repeats,
        "base_rate": s.base_rate,
    }


def observed_flip(pi: np.ndarray) -> float:
    return float(np.mean(2.0 * pi[:, 0] * (1.0 - pi[:, 0])))


# --- scenarios --------------------------------------------------------------------------------


STRUCTURES = [
    Structure(
        "issue_1000_rows_1_eval", 1000, {"route": 8, "segment": 4}, "scattered", 100, 0.25, 1
    ),
    Structure(
        "issue_1000_rows_4_evals",
        1000,
        {"route": 8, "segment": 4},
        "scattered",
        100,
        0.25,
        4,
        seed=1,
    ),
    Structure(
        "three_dims_declared_2000_rows",
        2000,
        {"route": 12, "segment": 6, "locale": 8},
        "declared:route",
        160,
        0.10,
        4,
        seed=2,
    ),
    Structure(
        "fifty_cohorts_3000_rows",
        3000,
        {"route": 20, "segment": 15, "locale": 15},
        "scattered",
        150,
        0.30,
        1,
        seed=3,
    ),
    Structure(
        "small_set_declared_400_rows",
        400,
        {"route": 6, "segment": 4},
        "declared:segment",
        40,
        0.20,
        4,
        seed=4,
    ),
    Structure(
        "issue_1000_rows_k3",
        1000,
        {"route": 8, "segment": 4},
        "scattered",
        100,
        0.25,
        1,
        repeats=3,
        seed=5,
    ),
]


def false_block(trials: int) -> dict[str, Any]:
    out = {}
    for structure in STRUCTURES:
        gs = golden_set(structure)
        rng = np.random.default_rng(100 + structure.seed)
        verdicts = {"block": 0, "pass": 0, "inconclusive": 0}
        warned = 0
        flips = []
        for _ in range(trials):
            pi = latent(gs, rng)
            flips.append(observed_flip(pi))
            k = structure.repeats
            decision = gate(gs, run(pi, k, rng), run(pi, k, rng), k, k)
            verdicts[decision.verdict] += 1
            warned += any(r.status == "warn" for r in decision.records)
        out[structure.name] = {
            "settings": describe(gs)
            | {"mean_flip_rate_evaluator_0": round(float(np.mean(flips)), 3)},
            "false_block": rate(verdicts["block"], trials),
            "pass": rate(verdicts["pass"], trials),
            "inconclusive": rate(verdicts["inconclusive"], trials),
            "any_unguarded_warning": rate(warned, trials),
        }
    return out


def power_high_risk(trials: int) -> dict[str, Any]:
    out = {}
    for structure in (STRUCTURES[0], STRUCTURES[1], STRUCTURES[5]):
        gs = golden_set(structure)
        rng = np.random.default_rng(200 + structure.seed)
        k = structure.repeats
        blocked = mcnemar_05 = mcnemar_025 = 0
        for _ in range(trials):
            pi = latent(gs, rng)
            worse = regress(pi, gs.high, 0.15, rng)
            base, cand = run(pi, k, rng), run(worse, k, rng)
            blocked += gate(gs, base, cand, k, k).verdict == "block"
            # The reference: one exact one-sided McNemar on the high-risk rows, evaluator 0,
            # one call per side (with repeats, a separate single-call pair of runs).
            if k == 1:
                b0, c0 = base[gs.high, 0] > 0, cand[gs.high, 0] > 0
            else:
                b0, c0 = run(pi, 1, rng)[gs.high, 0] > 0, run(worse, 1, rng)[gs.high, 0] > 0
            lost, won = int((b0 & ~c0).sum()), int((~b0 & c0).sum())
            p = (
                stats.binomtest(won, lost + won, 0.5, alternative="less").pvalue
                if lost + won
                else 1.0
            )
            mcnemar_05 += p <= 0.05
            mcnemar_025 += p <= 0.025
        out[structure.name] = {
            "settings": describe(gs) | {"drop": 0.15, "drop_rows": "the high-risk cohort"},
            "gate_blocks": rate(blocked, trials),
            "mcnemar_one_sided_0.05_one_call": rate(mcnemar_05, trials),
            "mcnemar_one_sided_0.025_one_call": rate(mcnemar_025, trials),
        }
    return out


def _guarded_requirements(gs: GoldenSet, k: int, rng: np.random.Generator) -> dict[str, int]:
    """The largest required_n per guarded cohort over a few pilot gates of unchanged runs."""
    needs: dict[str, int] = {}
    for _ in range(3):
        pi = latent(gs, rng)
        decision = gate(gs, run(pi, k, rng), run(pi, k, rng), k, k)
        for r in decision.records:
            if r.guarded and r.required_n is not None:
                needs[r.cohort] = max(needs.get(r.cohort, 0), r.required_n)
    return needs


def required_rows(trials: int) -> dict[str, Any]:
    out = {}
    for evaluators, repeats in ((1, 1), (1, 3), (4, 1)):
        shape = Structure(
            f"pilot_e{evaluators}_k{repeats}",
            1000,
            {"route": 8, "segment": 4},
            "scattered",
            300,
            0.20,
            evaluators,
            repeats=repeats,
            seed=7,
        )
        rng = np.random.default_rng(300 + 10 * evaluators + repeats)
        # Grow the set until every guarded cohort has the rows the gate asks for (the
        # shares of the block budget depend on the sizes, so iterate).
        history = []
        for _ in range(6):
            gs = golden_set(shape)
            needs = _guarded_requirements(gs, repeats, rng)
            history.append(
                {"rows": shape.rows, "high_risk_rows": shape.high_rows, "required": needs}
            )
            high_need, all_need = needs["risk=high"], needs["all"]
            if shape.high_rows >= high_need and shape.rows >= all_need:
                break
            high_rows = max(shape.high_rows, high_need)
            shape = replace(shape, high_rows=high_rows, rows=max(all_need, int(high_rows / 0.3)))
        gs = golden_set(shape)
        verdicts = {
            "unchanged_pass": 0,
            "unchanged_block": 0,
            "high_2m_block": 0,
            "all_2m_block": 0,
        }
        everyone = np.arange(shape.rows)
        for _ in range(trials):
            pi = latent(gs, rng)
            base = run(pi, repeats, rng)
            same = gate(gs, base, run(pi, repeats, rng), repeats, repeats)
            verdicts["unchanged_pass"] += same.verdict == "pass"
            verdicts["unchanged_block"] += same.verdict == "block"
            high = regress(pi, gs.high, 2 * POLICY.margin, rng)
            verdicts["high_2m_block"] += (
                gate(gs, base, run(high, repeats, rng), repeats, repeats).verdict == "block"
            )
            wide = regress(pi, everyone, 2 * POLICY.margin, rng)
            verdicts["all_2m_block"] += (
                gate(gs, base, run(wide, repeats, rng), repeats, repeats).verdict == "block"
            )
        out[shape.name] = {
            "settings": describe(gs) | {"margin": POLICY.margin, "sizing": history},
            "unchanged_passes": rate(verdicts["unchanged_pass"], trials),
            "unchanged_blocked": rate(verdicts["unchanged_block"], trials),
            "drop_2x_margin_on_high_risk_blocks": rate(verdicts["high_2m_block"], trials),
            "drop_2x_margin_on_all_rows_blocks": rate(verdicts["all_2m_block"], trials),
        }
    return out


def _retry_trial(
    gs: GoldenSet, policy: DecisionPolicy, drop: float, attempts: int, rng: np.random.Generator
) -> tuple[list[str], bool]:
    """A checkpoint re-gated ``attempts`` times: fresh verdicts, and whether the rule passes it."""
    pi = latent(gs, rng)
    worse = regress(pi, gs.high, drop, rng)
    base = run(pi, 1, rng)
    # Old behaviour: every attempt is a fresh run judged alone.
    fresh = [gate(gs, base, run(worse, 1, rng), 1, 1, policy).verdict for _ in range(attempts)]
    # The rule: pool all of the candidate's runs, spend alpha per attempt, blocks stick.
    sums = np.zeros((0, gs.structure.rows))
    blocked = False
    for attempt in range(1, attempts + 1):
        sums = np.vstack([sums, run(worse, 1, rng)[:, 0]])
        means, k = pool_runs(sums, np.ones_like(sums, dtype=np.int64))
        decision = decide_gate(
            [EvaluatorOutcomes("e0", base[:, 0], means, 1, k)],
            gs.membership,
            gs.cohorts,
            policy,
            attempt=attempt,
            previously_blocked=blocked,
            with_bounds=False,
        )
        if decision.verdict == "pass":
            return fresh, True
        blocked = blocked or decision.verdict == "block"
    return fresh, False


def retries(trials: int, attempts: int = 8) -> dict[str, Any]:
    """A real drop re-gated 8 times: at the default margin, and at the null boundary of a wide one.

    ``drop_15_points``: the 15-point drop on the high-risk rows with the default policy.
    ``drop_at_the_margin``: margin 0.10 and a drop of exactly 0.10 there, the hardest
    case for a wrong pass, where a pass on 100 rows is within reach.
    """
    structure = STRUCTURES[0]
    gs = golden_set(structure)
    out: dict[str, Any] = {}
    for name, policy, drop in (
        ("drop_15_points", POLICY, 0.15),
        ("drop_at_the_margin", replace(POLICY, margin=0.10), 0.10),
    ):
        rng = np.random.default_rng(400 if drop == 0.15 else 401)
        first_blocked = unblocked = fresh_pass = rule_pass = 0
        for _ in range(trials):
            fresh, passed = _retry_trial(gs, policy, drop, attempts, rng)
            first_blocked += fresh[0] == "block"
            # The old service: any later non-block verdict un-blocks a blocked checkpoint.
            unblocked += fresh[0] == "block" and any(v != "block" for v in fresh[1:])
            fresh_pass += any(v == "pass" for v in fresh)
            rule_pass += passed
        out[name] = {
            "settings": describe(gs)
            | {
                "drop": drop,
                "margin": policy.margin,
                "drop_rows": "the high-risk cohort",
                "attempts": attempts,
            },
            "first_gate_blocks": rate(first_blocked, trials),
            "fresh_runs_a_later_non_block_unblocks": rate(unblocked, trials),
            "fresh_runs_some_attempt_passes": rate(fresh_pass, trials),
            "rule_some_attempt_passes": rate(rule_pass, trials),
        }
    return out


def repeats_test_size(replicates: int) -> dict[str, Any]:
    """Size of the per-row-mean test at the null boundary Delta = -margin, k = 3 calls a side."""
    rng = np.random.default_rng(500)
    a, b = beta_for(0.75, 0.25)
    out = {}
    for n in (20, 50, 100, 200, 400):
        pi = rng.beta(a, b, (replicates, n))
        base = rng.binomial(3, pi) / 3.0
        cand = rng.binomial(3, pi) / 3.0
        # Failure mode of exactly the margin in expectation: each row fails with
        # probability margin / E[pi], losing its candidate passes.
        fails = rng.random((replicates, n)) < POLICY.margin / (a / (a + b))
        diffs = np.where(fails, -base, cand - base)
        support, index = np.unique(np.round(diffs, 12), return_inverse=True)
        counts = np.zeros((replicates, support.size))
        np.add.at(counts, (np.repeat(np.arange(replicates), n), index.ravel()), 1.0)
        _, lower = score_test(support, counts, -POLICY.margin, "lower")
        _, upper = score_test(support, counts, -POLICY.margin, "upper")
        out[f"n={n}"] = {
            level: {
                "block_side": rate(int((lower <= alpha).sum()), replicates),
                "pass_side": rate(int((upper <= alpha).sum()), replicates),
            }
            for level, alpha in (
                ("alpha=0.05", 0.05),
                ("alpha=0.025", 0.025),
                ("alpha=0.005", 0.005),
            )
        }
    return {
        "settings": {
            "repeats": 3,
            "truth": "Delta = -margin (the null boundary)",
            "margin": POLICY.margin,
            "flip_rate": 0.25,
        },
        "sizes": out,
    }


# --- through the HTTP API ---------------------------------------------------------------


@contextmanager
def database(kind: str) -> Iterator[str]:
    """A migrated, empty database: a SQLite file, or a scratch PostgreSQL schema."""
    if kind == "postgresql":
        with scratch_schema(BENCH_DATABASE_URL, "bench_decisions") as url:
            yield url
        return
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'bench.db'}"
        migrate.upgrade(url)
        yield url


class Api:
    """The real app in-process (FastAPI's TestClient), the worker drained in-process."""

    def __init__(self, client: TestClient, settings: Settings, key: str) -> None:
        self.client, self.settings = client, settings
        self.auth = {"Authorization": f"Bearer {key}"}

    def post(self, path: str, body: dict[str, Any], status: int) -> Any:
        response = self.client.post(path, json=body, headers=self.auth)
        assert response.status_code == status, response.text
        return response.json()

    def run(self, checkpoint: int, version: int, calls: np.ndarray) -> int:
        """A run whose k outputs per row pass exactly where `calls` (k x rows) says."""
        repeats = calls.shape[0]
        outputs = [
            {"key": f"r{i}", "output": "ok" if passed else "no"}
            | ({"repeat": r} if repeats > 1 else {})
            for r in range(repeats)
            for i, passed in enumerate(calls[r])
        ]
        body = {
            "checkpoint_id": checkpoint,
            "dataset_version": version,
            "evaluators": [{"name": "exact_match"}],
            "outputs": outputs,
            "repeats": repeats,
        }
        run_id = int(self.post("/api/v1/datasets/golden/evaluations", body, 202)["run_id"])
        app = self.client.app
        while work_runs(app.state.sessionmaker, self.settings):  # type: ignore[attr-defined]
            pass
        return run_id


def _compare(gate: dict[str, Any], decided: Any) -> tuple[bool, float]:
    """Whether the API's verdict and every comparison's status match decide_gate's on the
    same arrays, and the largest difference of their p-values."""
    same = gate["verdict"] == decided.verdict
    worst = 0.0
    expected = {(r.dimension, r.value): r for r in decided.records}
    for c in gate["comparisons"]:
        record = expected[(c["dimension"], c["value"])]
        same = same and c["status"] == record.status
        for name in ("p_block", "p_pass", "p_drop"):
            worst = max(worst, abs(c[name] - getattr(record, name)))
    return same and len(expected) == len(gate["comparisons"]), worst


def api_pass(trials: int) -> dict[str, Any]:
    """Gates through the HTTP API on SQLite and PostgreSQL, against decide_gate on the same
    arrays: the declared-segment structure (400 rows, risk=high rows forming a declared
    cohort), one evaluator (exact_match on uploaded outputs). Per trial, in turn: an
    unchanged candidate; a 15-point drop on the declared cohort; the same with 3 calls per
    row on both sides; and a blocked candidate re-run and re-gated (pooled runs, attempt 2)."""
    gs = golden_set(STRUCTURES[4])
    rows = [
        {
            "key": f"r{i}",
            "input": f"question {i}",
            "expected": "ok",
            "cohort": {dim: labels[i] for dim, labels in gs.labels.items()},
            "risk": gs.risk[i],
        }
        for i in range(gs.structure.rows)
    ]
    settings_out = describe(gs) | {"declared": gs.declared, "evaluators": 1}
    out: dict[str, Any] = {"settings": settings_out}
    for kind in ("sqlite", "postgresql"):
        rng = np.random.default_rng(600)
        tally = {"gates": 0, "agree": 0, "max_p_difference": 0.0}
        verdicts: dict[str, dict[str, int]] = {}
        with database(kind) as url:
            settings = Settings(
                database_url=url, run_workers=False, run_scheduler=False, log_level="WARNING"
            )
            app = create_app(settings)
            with app.state.sessionmaker() as session:
                project = keys.get_or_create_project(session, "bench")
                _key, secret = keys.create_key(session, project.id, Role.admin, "bench")
                session.commit()
            with TestClient(app) as client:
                api = Api(client, settings, secret)
                api.post("/api/v1/datasets", {"name": "golden"}, 201)
                body = {"rows": rows, "cohort_risk": gs.declared}
                version = api.post("/api/v1/datasets/golden/versions", body, 201)["version"]
                for trial in range(trials):
                    scenario = ("unchanged", "drop_15", "drop_15_k3", "retry_drop_30")[trial % 4]
                    k = 3 if scenario == "drop_15_k3" else 1
                    drop = {"unchanged": 0.0, "retry_drop_30": 0.3}.get(scenario, 0.15)
                    pi = latent(gs, rng)[:, :1]
                    worse = regress(pi, gs.high, drop, rng)
                    checkpoints = [
                        api.post(
                            "/api/v1/checkpoints",
                            {"model": f"m{trial}", "version": side},
                            201,
                        )["id"]
                        for side in ("champion", "candidate")
                    ]
                    base = np.stack([run(pi, 1, rng)[:, 0] for _ in range(k)])
                    cand = np.stack([run(worse, 1, rng)[:, 0] for _ in range(k)])
                    base_run = api.run(checkpoints[0], version, base)
                    cand_runs = [api.run(checkpoints[1], version, cand)]
                    attempts = 2 if scenario == "retry_drop_30" else 1
                    blocked = False
                    for attempt in range(1, attempts + 1):
                        if attempt > 1:
                            cand = np.vstack([cand, run(worse, 1, rng)[:, 0]])
                            cand_runs.append(api.run(checkpoints[1], version, cand[-1:]))
                        gate = api.post(
                            "/api/v1/gates",
                            {"candidate_run_id": cand_runs[-1], "baseline_run_id": base_run},
                            201,
                        )
                        means, calls = pool_runs(cand, np.ones_like(cand, dtype=np.int64))
                        decided = decide_gate(
                            [
                                EvaluatorOutcomes(
                                    "exact_match", base.mean(axis=0), means, base.shape[0], calls
                                )
                            ],
                            gs.membership,
                            gs.cohorts,
                            POLICY,
                            attempt=attempt,
                            previously_blocked=blocked,
                        )
                        blocked = blocked or decided.verdict == "block"
                        agree, worst = _compare(gate, decided)
                        tally["gates"] += 1
                        tally["agree"] += agree
                        tally["max_p_difference"] = max(tally["max_p_difference"], worst)
                        key = f"{scenario}_attempt_{attempt}" if attempts > 1 else scenario
                        counts = verdicts.setdefault(key, {})
                        counts[gate["verdict"]] = counts.get(gate["verdict"], 0) + 1
            app.state.engine.dispose()
        out[kind] = tally | {"verdicts_by_scenario": verdicts}
    return out


SCENARIOS = {
    "false_block": (false_block, 300, 60),
    "power_high_risk": (power_high_risk, 400, 60),
    "required_rows": (required_rows, 150, 30),
    "retries": (retries, 200, 40),
    "repeats_test_size": (repeats_test_size, 20000, 4000),
    "api": (api_pass, 12, 4),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer trials (a smoke run)")
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), help="scenarios to run")
    args = parser.parse_args()
    chosen = args.only or list(SCENARIOS)
    result: dict[str, Any] = {
        "command": " ".join(["bench/decisions.py", *sys.argv[1:]]),
        "policy": {
            "margin": POLICY.margin,
            "alpha": POLICY.alpha,
            "power": POLICY.power,
            "block_power": POLICY.block_power,
            "correction": POLICY.correction,
            "weighting": POLICY.weighting,
            "min_discordant": POLICY.min_discordant,
            "exact_max_n": POLICY.exact_max_n,
        },
        "targets": {
            "false_block": "<= 0.05 in every structure",
            "power_high_risk": "within 10 points of the one-sided exact McNemar",
            "required_rows": "unchanged passes >= 0.80, a drop of 2x the margin blocks >= 0.90",
            "retries": "a real 15-point drop gets through <= 0.05",
            "api": "the API's verdicts equal decide_gate's on the same arrays",
        },
    }
    for name in chosen:
        function, full, quick = SCENARIOS[name]
        started = time.process_time()
        result[name] = function(quick if args.quick else full)
        result[name]["cpu_seconds"] = round(time.process_time() - started, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
