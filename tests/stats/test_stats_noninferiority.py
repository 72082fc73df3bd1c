"""Known-answer cases for the gate's verdicts, with statsmodels as the multiplicity reference."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from app.stats.noninferiority import Evidence, apply_gate, decide, gate_verdict
from app.stats.paired import CohortComparison, CohortMeta, compare_cohorts
from app.stats.policy import GatePolicy

DEFAULTS = GatePolicy()


def pass_fail_cohort(
    both: int,
    b: int,
    c: int,
    neither: int,
    policy: GatePolicy = DEFAULTS,
    meta: CohortMeta = CohortMeta("cohort"),
) -> CohortComparison:
    """One decided cohort whose rows form the given paired 2x2 table (scores = pass indicators)."""
    baseline = np.repeat([1.0, 1.0, 0.0, 0.0], [both, b, c, neither])
    candidate = np.repeat([1.0, 0.0, 1.0, 0.0], [both, b, c, neither])
    return decided_cohort(baseline, candidate, policy, meta)


def decided_cohort(
    baseline: np.ndarray,
    candidate: np.ndarray,
    policy: GatePolicy,
    meta: CohortMeta = CohortMeta("cohort"),
) -> CohortComparison:
    membership = np.ones((1, baseline.size), dtype=np.bool_)
    records = compare_cohorts(
        baseline, candidate, baseline >= 0.5, candidate >= 0.5, membership, [meta], policy
    )
    return apply_gate(records, policy)[0]


HIGH_RISK = CohortMeta("high-risk", high_risk=True)


class TestProductKnownAnswers:
    def test_high_risk_ten_of_ten_to_six_of_ten_blocks_under_the_defaults(self) -> None:
        cohort = pass_fail_cohort(both=6, b=4, c=0, neither=0, meta=HIGH_RISK)
        assert cohort.pass_p_value == pytest.approx(0.125)  # exact McNemar alone cannot block
        assert cohort.pass_ci_high == pytest.approx(-0.0384, abs=1e-4)
        assert cohort.status == "regressed"
        assert "beyond the margin" in cohort.reason
        assert gate_verdict([cohort]) == "block"

    def test_high_risk_ten_of_ten_to_six_of_ten_blocks_on_the_mean_score_too(self) -> None:
        cohort = pass_fail_cohort(6, 4, 0, 0, GatePolicy(metric="mean_score"), HIGH_RISK)
        assert cohort.ci_high is not None and cohort.ci_high < -0.02
        assert cohort.status == "regressed"

    def test_ordinary_ten_of_ten_to_six_of_ten_is_flagged_but_not_blocked(self) -> None:
        cohort = pass_fail_cohort(both=6, b=4, c=0, neither=0)
        assert cohort.status == "inconclusive"
        assert "beyond the margin indicated" in cohort.reason
        assert gate_verdict([cohort]) == "inconclusive"

    def test_high_risk_block_survives_a_large_gate(self) -> None:
        # 399 other guarded cohorts push the adjusted p to 1; the margin rule still blocks.
        rng = np.random.default_rng(0)
        others = (rng.random(3990) < 0.9).astype(float)
        baseline = np.concatenate([np.ones(10), others])
        candidate = np.concatenate([np.repeat([1.0, 0.0], [6, 4]), others])
        membership = np.repeat(np.eye(400, dtype=np.bool_), 10, axis=1)
        meta = [HIGH_RISK] + [CohortMeta(f"c{k}") for k in range(1, 400)]
        records = compare_cohorts(
            baseline, candidate, baseline > 0.5, candidate > 0.5, membership, meta, DEFAULTS
        )
        decided = apply_gate(records, DEFAULTS)
        assert decided[0].p_adjusted == 1.0
        assert decided[0].status == "regressed"
        assert gate_verdict(decided) == "block"

    def test_large_cohort_with_a_tiny_insignificant_drop_is_non_inferior(self) -> None:
        # 5,000 rows, 90.0% -> 89.8%: a 0.2 point drop.
        cohort = pass_fail_cohort(both=4370, b=130, c=120, neither=380)
        assert cohort.pass_delta == pytest.approx(-0.002)
        reference = mcnemar([[4370, 130], [120, 380]], exact=True).pvalue
        assert cohort.pass_p_value == pytest.approx(reference)
        assert cohort.pass_p_value > 0.5
        assert cohort.status == "non_inferior"

    def test_large_cohort_with_a_tiny_drop_in_mean_score_is_non_inferior(self) -> None:
        rng = np.random.default_rng(4)
        baseline = rng.beta(5, 2, 5000)
        noise = rng.normal(0, 0.15, 5000)
        candidate = baseline + noise - noise.mean() - 0.002
        cohort = decided_cohort(baseline, candidate, GatePolicy(metric="mean_score"))
        assert cohort.delta == pytest.approx(-0.002, abs=1e-12)
        assert cohort.p_value > 0.05
        assert cohort.status == "non_inferior"

    @pytest.mark.parametrize("metric", ["pass_rate", "mean_score"])
    def test_identical_runs_are_non_inferior(self, metric: str) -> None:
        scores = np.random.default_rng(1).random(1000)
        cohort = decided_cohort(scores, scores.copy(), GatePolicy(metric=metric))  # type: ignore[arg-type]
        assert cohort.delta == 0.0 and cohort.ci_low == 0.0 and cohort.ci_high == 0.0
        assert cohort.status == "non_inferior"

    @pytest.mark.parametrize("metric", ["pass_rate", "mean_score"])
    def test_three_identical_rows_are_inconclusive_with_the_rows_needed(self, metric: str) -> None:
        policy = GatePolicy(metric=metric)  # type: ignore[arg-type]
        cohort = decided_cohort(np.ones(3), np.ones(3), policy)
        assert cohort.status == "inconclusive"
        assert cohort.underpowered
        assert cohort.required_n is not None and cohort.required_n >= policy.minimum_rows
        assert "too few rows" in cohort.reason and str(cohort.required_n) in cohort.reason

    def test_zero_variance_needs_the_minimum_rows(self) -> None:
        policy = GatePolicy(metric="mean_score")
        assert policy.minimum_rows == 183
        assert decided_cohort(np.ones(182), np.ones(182), policy).status == "inconclusive"
        assert decided_cohort(np.ones(183), np.ones(183), policy).status == "non_inferior"


class TestRules:
    def test_floor_blocks_whatever_the_significance(self) -> None:
        cohort = pass_fail_cohort(95, 1, 0, 4, meta=CohortMeta("floored", floor=0.97))
        assert cohort.pass_p_value == 1.0
        assert cohort.status == "regressed" and "floor" in cohort.reason

    def test_policy_floor_applies_when_the_cohort_has_none(self) -> None:
        cohort = pass_fail_cohort(95, 1, 0, 4, GatePolicy(floor=0.97))
        assert cohort.floor == 0.97 and cohort.status == "regressed"

    def test_significant_drop_inside_the_margin_still_regresses(self) -> None:
        cohort = pass_fail_cohort(both=17000, b=400, c=250, neither=2350)
        assert -0.02 < cohort.pass_ci_low < cohort.pass_ci_high < 0
        assert cohort.p_adjusted is not None and cohort.p_adjusted < 0.05
        assert cohort.status == "regressed" and "significant" in cohort.reason

    def test_noisy_cohort_is_inconclusive(self) -> None:
        cohort = pass_fail_cohort(both=250, b=60, c=56, neither=34)
        assert cohort.n >= DEFAULTS.minimum_rows
        assert cohort.status == "inconclusive" and "too noisy" in cohort.reason

    def test_unchanged_candidates_are_rarely_blocked_by_a_large_gate(self) -> None:
        # 200 small cohorts, 20% of rows flip pass/fail in each direction equally (no change).
        # Blocking on per-cohort margin evidence everywhere would block most such gates;
        # the multiplicity-adjusted rule blocks (almost) none.
        rng = np.random.default_rng(12)
        ordinary_blocks = high_risk_blocks = 0
        for _ in range(20):
            sizes = np.exp(rng.uniform(np.log(5), np.log(100), 200)).astype(int)
            cells = rng.choice(4, size=sizes.sum(), p=[0.75, 0.1, 0.1, 0.05])
            baseline, candidate = np.isin(cells, [0, 1]), np.isin(cells, [0, 2])
            membership = np.repeat(np.eye(200, dtype=np.bool_), sizes, axis=1)
            meta = [CohortMeta(f"c{k}") for k in range(200)]
            records = compare_cohorts(
                baseline * 1.0, candidate * 1.0, baseline, candidate, membership, meta, DEFAULTS
            )
            risky = [dataclasses.replace(r, high_risk=True) for r in records]
            ordinary_blocks += gate_verdict(apply_gate(records, DEFAULTS)) == "block"
            high_risk_blocks += gate_verdict(apply_gate(risky, DEFAULTS)) == "block"
        assert ordinary_blocks <= 1
        assert high_risk_blocks >= 8

    def test_no_rows_is_inconclusive(self) -> None:
        evidence = Evidence(0, None, None, None, 1.0, None, 0.9, None)
        assert decide(evidence, DEFAULTS).status == "inconclusive"

    def test_improvement_is_non_inferior(self) -> None:
        evidence = Evidence(500, 0.03, 0.01, 0.05, 0.001, 0.95, None, 400)
        assert decide(evidence, DEFAULTS).status == "non_inferior"


class TestApplyGate:
    def gate(self, policy: GatePolicy) -> tuple[list[CohortComparison], list[CohortComparison]]:
        rng = np.random.default_rng(8)
        n = 3000
        baseline = (rng.random(n) < 0.8).astype(float)
        flips = rng.random(n) < np.linspace(0.02, 0.12, n)
        candidate = np.where(flips & (rng.random(n) < 0.65), 0.0, baseline)
        membership = np.array([np.arange(n) % 5 == k for k in range(5)] + [np.ones(n, bool)])
        meta = [CohortMeta(f"c{k}", guarded=k != 2) for k in range(6)]
        records = compare_cohorts(
            baseline, candidate, baseline > 0.5, candidate > 0.5, membership, meta, policy
        )
        return records, apply_gate(records, policy)

    @pytest.mark.parametrize(("method", "reference"), [("holm", "holm"), ("bh", "fdr_bh")])
    def test_adjusts_only_guarded_cohorts(self, method: str, reference: str) -> None:
        policy = GatePolicy(correction=method)  # type: ignore[arg-type]
        records, decided = self.gate(policy)
        guarded = [r.pass_p_value for r in records if r.guarded]
        expected = multipletests(guarded, method=reference)[1]
        adjusted = np.array([d.p_adjusted for d in decided if d.guarded], dtype=float)
        np.testing.assert_allclose(adjusted, expected, rtol=1e-12)
        assert decided[2].status == "unguarded" and decided[2].p_adjusted is None
        assert [d.cohort_index for d in decided] == list(range(6))

    def test_mean_score_policy_adjusts_the_score_p_values(self) -> None:
        policy = GatePolicy(metric="mean_score")
        records, decided = self.gate(policy)
        guarded = [r.p_value for r in records if r.guarded]
        adjusted = np.array([d.p_adjusted for d in decided if d.guarded], dtype=float)
        np.testing.assert_allclose(adjusted, multipletests(guarded, method="holm")[1], rtol=1e-12)


class TestGateVerdict:
    def with_statuses(self, *statuses: str) -> list[CohortComparison]:
        template = pass_fail_cohort(6, 4, 0, 0)
        return [
            dataclasses.replace(template, status=s, guarded=s != "unguarded")  # type: ignore[arg-type]
            for s in statuses
        ]

    def test_outcomes(self) -> None:
        assert gate_verdict(self.with_statuses("non_inferior", "unguarded")) == "pass"
        assert gate_verdict(self.with_statuses("non_inferior", "inconclusive")) == "inconclusive"
        assert gate_verdict(self.with_statuses("inconclusive", "regressed")) == "block"
        assert gate_verdict(self.with_statuses("unguarded")) == "inconclusive"


class TestPolicy:
    def test_minimum_rows_follows_the_rule_of_three_argument(self) -> None:
        for margin in (0.01, 0.02, 0.05):
            n = GatePolicy(margin=margin).minimum_rows
            assert (1 - margin) ** n <= 0.025 < (1 - margin) ** (n - 1)
        scaled = GatePolicy(metric="mean_score", margin=0.2, score_range=10.0)
        assert scaled.minimum_rows == GatePolicy(margin=0.02).minimum_rows
        assert GatePolicy(min_n=50).minimum_rows == 50
        assert math.isclose(GatePolicy().confidence, 0.95)

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"margin": 0.0},
            {"margin": 1.5},
            {"alpha": 1.0},
            {"power": 0.0},
            {"min_n": 1},
            {"min_effect": -0.1},
            {"score_range": 0.0},
            {"n_resamples": 10},
        ],
    )
    def test_rejects_nonsense(self, kwargs: dict[str, float]) -> None:
        with pytest.raises(ValueError):
            GatePolicy(**kwargs)  # type: ignore[arg-type]
