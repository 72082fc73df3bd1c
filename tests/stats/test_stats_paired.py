"""app.stats.paired against statsmodels/scipy references and constructed known answers."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_confint

from app.stats.paired import (
    CohortMeta,
    adjust_pvalues,
    compare_cohorts,
    mcnemar_exact,
    paired_bootstrap_mean_diff,
    paired_pass_interval,
    required_pairs,
    wilson_interval,
)
from app.stats.policy import GatePolicy


def block_membership(sizes: list[int]) -> np.ndarray:
    """Disjoint consecutive cohorts of the given sizes."""
    edges = np.cumsum([0, *sizes])
    membership = np.zeros((len(sizes), edges[-1]), dtype=np.bool_)
    for k, (start, stop) in enumerate(itertools.pairwise(edges)):
        membership[k, start:stop] = True
    return membership


class TestMcNemarExact:
    @pytest.mark.parametrize(
        ("b", "c"), [(0, 1), (1, 0), (4, 0), (3, 3), (16, 6), (7, 25), (130, 120), (900, 1020)]
    )
    def test_matches_statsmodels_and_binomtest(self, b: int, c: int) -> None:
        reference = mcnemar([[50, b], [c, 40]], exact=True).pvalue
        assert mcnemar_exact(b, c) == pytest.approx(reference, rel=1e-12)
        assert mcnemar_exact(b, c) == pytest.approx(
            stats.binomtest(min(b, c), b + c, 0.5).pvalue, rel=1e-12
        )

    def test_no_discordant_rows_is_no_evidence(self) -> None:
        assert mcnemar_exact(0, 0) == 1.0

    def test_ten_of_ten_to_six_of_ten_is_not_significant_alone(self) -> None:
        assert mcnemar_exact(4, 0) == pytest.approx(0.125)

    def test_rejects_negative_counts(self) -> None:
        with pytest.raises(ValueError):
            mcnemar_exact(-1, 3)


class TestWilsonInterval:
    def test_matches_statsmodels_vectorised(self) -> None:
        n = np.array([1, 3, 10, 10, 10, 57, 1000, 20000])
        x = np.array([0, 3, 0, 6, 10, 31, 5, 19000])
        for confidence in (0.9, 0.95, 0.99):
            low, high = wilson_interval(x, n, confidence)
            ref_low, ref_high = proportion_confint(x, n, alpha=1 - confidence, method="wilson")
            np.testing.assert_allclose(low, ref_low, atol=1e-12)
            np.testing.assert_allclose(high, ref_high, atol=1e-12)

    def test_empty_sample_is_uninformative(self) -> None:
        low, high = wilson_interval(0, 0)
        assert (float(low), float(high)) == (0.0, 1.0)

    def test_rejects_impossible_counts(self) -> None:
        with pytest.raises(ValueError):
            wilson_interval(11, 10)


def newcombe_reference(both: int, b: int, c: int, neither: int) -> tuple[float, float]:
    """Newcombe (1998) method 10 restated from the paper on statsmodels' Wilson intervals."""
    n = both + b + c + neither
    p1, p2 = (both + c) / n, (both + b) / n
    l1, u1 = proportion_confint(both + c, n, method="wilson")
    l2, u2 = proportion_confint(both + b, n, method="wilson")
    margins = (both + c) * (b + neither) * (both + b) * (c + neither)
    cross = both * neither - b * c
    if margins == 0:
        phi = 0.0
    elif cross > n / 2:
        phi = (cross - n / 2) / math.sqrt(margins)
    else:
        phi = min(cross, 0) / math.sqrt(margins)
    low = (p1 - p2) - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2))
    high = (p1 - p2) + math.sqrt((p2 - l2) ** 2 + (u1 - p1) ** 2 - 2 * phi * (p2 - l2) * (u1 - p1))
    return low, high


class TestPairedPassInterval:
    def test_published_example(self) -> None:
        # Cavo et al. (2012) as analysed in Fagerland, Lydersen & Laake (2017), ch. 8:
        # Newcombe square-and-add 95% CI -0.1186 to -0.0046 for a change of -10/161.
        low, high = paired_pass_interval(both_pass=59, b=16, c=6, both_fail=80)
        assert (float(low), float(high)) == pytest.approx((-0.1186, -0.0046), abs=5e-5)

    @pytest.mark.parametrize(
        "table", [(6, 4, 0, 0), (10, 0, 0, 0), (5, 0, 0, 5), (59, 16, 6, 80), (3, 7, 2, 1)]
    )
    def test_matches_the_formula_on_statsmodels_wilson(
        self, table: tuple[int, int, int, int]
    ) -> None:
        low, high = paired_pass_interval(*table)
        assert (float(low), float(high)) == pytest.approx(newcombe_reference(*table), abs=1e-12)

    def test_ten_of_ten_to_six_of_ten_excludes_a_two_point_drop(self) -> None:
        low, high = paired_pass_interval(both_pass=6, b=4, c=0, both_fail=0)
        assert float(low) == pytest.approx(-0.6873, abs=1e-4)
        assert float(high) == pytest.approx(-0.0384, abs=1e-4)

    def test_identical_runs_get_a_nonzero_width_that_shrinks_with_n(self) -> None:
        intervals = [paired_pass_interval(n // 2, 0, 0, n // 2) for n in (4, 40, 400)]
        widths = [float(high - low) for low, high in intervals]
        assert all(w > 0 for w in widths)
        assert widths[0] > widths[1] > widths[2]

    def test_coverage_is_near_nominal(self) -> None:
        rng = np.random.default_rng(7)
        cells = rng.multinomial(60, [0.6, 0.12, 0.06, 0.22], size=4000)
        low, high = paired_pass_interval(*cells.T)
        covered = (low <= -0.06) & (high >= -0.06)
        assert 0.93 <= covered.mean() <= 0.98


class TestPairedBootstrapMeanDiff:
    def test_large_cohorts_use_the_paired_t_test(self) -> None:
        rng = np.random.default_rng(1)
        d = rng.normal(-0.01, 0.1, 5000)
        membership = np.vstack([np.ones(5000, bool), np.arange(5000) % 3 == 0])
        result = paired_bootstrap_mean_diff(d, membership)
        for k in range(2):
            cohort = d[membership[k]]
            reference = stats.ttest_1samp(cohort, 0.0)
            interval = reference.confidence_interval(0.95)
            assert not result.bootstrapped[k]
            assert result.n[k] == cohort.size
            assert result.mean[k] == pytest.approx(cohort.mean(), rel=1e-12)
            assert result.sd[k] == pytest.approx(cohort.std(ddof=1), rel=1e-9)
            assert result.p_value[k] == pytest.approx(reference.pvalue, rel=1e-6)
            assert result.ci_low[k] == pytest.approx(interval.low, rel=1e-9)
            assert result.ci_high[k] == pytest.approx(interval.high, rel=1e-9)

    @pytest.mark.parametrize("n", [8, 30, 150])
    def test_small_cohorts_match_scipy_percentile_bootstrap_at_the_expanded_level(
        self, n: int
    ) -> None:
        rng = np.random.default_rng(n)
        d = rng.exponential(0.1, n) - 0.08
        result = paired_bootstrap_mean_diff(d, np.ones((1, n), bool), n_resamples=20000, seed=1)
        # Hesterberg's expansion: percentile level whose z equals sqrt(n/(n-1)) t_{n-1}.
        z = math.sqrt(n / (n - 1)) * stats.t.isf(0.025, n - 1)
        level = 1 - 2 * stats.norm.sf(z)
        reference = stats.bootstrap(
            (d,), np.mean, confidence_level=level, n_resamples=20000, method="percentile", rng=2
        ).confidence_interval
        se = d.std(ddof=1) / math.sqrt(n)
        assert result.bootstrapped[0]
        assert result.ci_low[0] == pytest.approx(reference.low, abs=0.15 * se)
        assert result.ci_high[0] == pytest.approx(reference.high, abs=0.15 * se)

    def test_p_value_agrees_with_the_interval_and_with_the_t_test(self) -> None:
        rng = np.random.default_rng(5)
        sizes = [40] * 6
        shifts = np.repeat([0.0, 0.0, -0.05, -0.05, -0.2, 0.1], 40)
        d = rng.normal(0.0, 0.15, sum(sizes)) + shifts
        membership = block_membership(sizes)
        result = paired_bootstrap_mean_diff(d, membership, n_resamples=5000)
        for k in range(len(sizes)):
            excludes_zero = result.ci_low[k] > 0 or result.ci_high[k] < 0
            assert (result.p_value[k] < 0.05) == excludes_zero
            reference = stats.ttest_1samp(d[membership[k]], 0.0).pvalue
            assert result.p_value[k] == pytest.approx(reference, abs=0.03)

    def test_expanded_interval_keeps_nominal_coverage_at_ten_rows(self) -> None:
        # The plain percentile interval covers about 0.89 here; the expansion restores ~0.945.
        rng = np.random.default_rng(11)
        sizes = [10] * 2000
        d = rng.normal(0.3, 1.0, sum(sizes))
        result = paired_bootstrap_mean_diff(d, block_membership(sizes))
        covered = (result.ci_low <= 0.3) & (result.ci_high >= 0.3)
        assert 0.925 <= covered.mean() <= 0.97

    def test_identical_rows_contribute_zero(self) -> None:
        d = np.array([0.0, 0.0, -1.0, 1.0, 0.5])
        result = paired_bootstrap_mean_diff(d, np.ones((1, 5), bool))
        assert result.mean[0] == pytest.approx(0.1)

    @pytest.mark.parametrize("n", [5, 500])
    def test_identical_runs_give_a_zero_interval_and_p_one(self, n: int) -> None:
        result = paired_bootstrap_mean_diff(np.zeros(n), np.ones((1, n), bool))
        assert (result.mean[0], result.ci_low[0], result.ci_high[0]) == (0.0, 0.0, 0.0)
        assert result.p_value[0] == 1.0

    def test_cohorts_too_small_for_an_interval(self) -> None:
        membership = np.array([[True, False, False], [False, False, False]])
        result = paired_bootstrap_mean_diff(np.array([0.5, 0.1, 0.2]), membership)
        assert result.n.tolist() == [1, 0]
        assert result.mean[0] == 0.5 and np.isnan(result.mean[1])
        assert np.isnan(result.ci_low).all() and np.isnan(result.ci_high).all()
        assert result.p_value.tolist() == [1.0, 1.0]

    def test_seeded_and_independent_of_the_other_cohorts(self) -> None:
        rng = np.random.default_rng(2)
        d = rng.normal(0, 1, 300)
        both = block_membership([20, 150, 130])
        alone = paired_bootstrap_mean_diff(d[:20], np.ones((1, 20), bool), seed=3)
        together = paired_bootstrap_mean_diff(d, both, seed=3)
        again = paired_bootstrap_mean_diff(d, both, seed=3)
        other_seed = paired_bootstrap_mean_diff(d, both, seed=4)
        assert together.ci_low[0] == alone.ci_low[0] and together.ci_high[0] == alone.ci_high[0]
        np.testing.assert_array_equal(together.ci_low, again.ci_low)
        assert other_seed.ci_low[0] != together.ci_low[0]

    def test_rejects_bad_input(self) -> None:
        with pytest.raises(ValueError):
            paired_bootstrap_mean_diff(np.array([0.1, np.nan]), np.ones((1, 2), bool))
        with pytest.raises(ValueError):
            paired_bootstrap_mean_diff(np.zeros(3), np.ones((1, 4), bool))
        with pytest.raises(ValueError):
            paired_bootstrap_mean_diff(np.zeros(3), np.ones((1, 3)))


class TestAdjustPvalues:
    @pytest.mark.parametrize(("method", "reference"), [("holm", "holm"), ("bh", "fdr_bh")])
    def test_matches_statsmodels(self, method: str, reference: str) -> None:
        rng = np.random.default_rng(0)
        p = np.concatenate([rng.uniform(0, 0.05, 20), rng.uniform(0, 1, 380), [0.01, 0.01, 1.0]])
        expected = multipletests(p, method=reference)[1]
        np.testing.assert_allclose(adjust_pvalues(p, method), expected, rtol=1e-12)  # type: ignore[arg-type]

    def test_empty_and_invalid(self) -> None:
        assert adjust_pvalues([]).size == 0
        with pytest.raises(ValueError):
            adjust_pvalues([0.2, 1.5])
        with pytest.raises(ValueError):
            adjust_pvalues([0.2], "bonferroni")  # type: ignore[arg-type]


class TestRequiredPairs:
    @pytest.mark.parametrize(("effect", "sd"), [(0.02, 0.1), (0.05, 0.3), (0.01, 0.25)])
    def test_means_match_the_one_sample_normal_power_of_statsmodels(
        self, effect: float, sd: float
    ) -> None:
        reference = NormalIndPower().solve_power(effect / sd, alpha=0.05, power=0.8, ratio=0)
        assert int(required_pairs(effect, sd=sd)) == math.ceil(reference)

    def test_connor_known_value(self) -> None:
        # psi = 0.2, delta = 0.1: (1.95996 sqrt(.2) + 0.84162 sqrt(.19))^2 / .01 = 154.6
        assert int(required_pairs(0.1, discordance_rate=0.2)) == 155

    def test_connor_delivers_the_promised_power(self) -> None:
        p10, p01 = 0.12, 0.07  # candidate loses 5 points with 19% discordance
        n = int(required_pairs(0.05, discordance_rate=p10 + p01))
        rng = np.random.default_rng(3)
        cells = rng.multinomial(n, [p10, p01, 1 - p10 - p01], size=3000)
        rejected = [
            mcnemar([[0, b], [c, 0]], exact=False, correction=False).pvalue < 0.05
            for b, c in cells[:, :2]
        ]
        assert np.mean(rejected) == pytest.approx(0.8, abs=0.03)

    def test_discordance_is_raised_to_the_effect(self) -> None:
        assert int(required_pairs(0.02, discordance_rate=0.0)) == int(
            required_pairs(0.02, discordance_rate=0.02)
        )

    def test_needs_exactly_one_nuisance_parameter(self) -> None:
        with pytest.raises(ValueError):
            required_pairs(0.02)
        with pytest.raises(ValueError):
            required_pairs(0.02, sd=0.1, discordance_rate=0.1)


class TestCompareCohorts:
    @pytest.fixture
    def runs(self) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(9)
        n = 600
        baseline = rng.beta(5, 2, n)
        candidate = np.clip(baseline + rng.normal(-0.01, 0.05, n), 0, 1)
        candidate[:50] = baseline[:50]
        membership = np.vstack(
            [np.ones(n, bool), np.arange(n) < 40, np.arange(n) % 7 == 0, np.zeros(n, bool)]
        )
        return {"baseline": baseline, "candidate": candidate, "membership": membership}

    def test_every_field_matches_its_reference(self, runs: dict[str, np.ndarray]) -> None:
        base, cand, membership = runs["baseline"], runs["candidate"], runs["membership"]
        base_pass, cand_pass = base >= 0.7, cand >= 0.7
        meta = [CohortMeta(f"c{k}", floor=0.5 if k == 1 else None) for k in range(4)]
        policy = GatePolicy()
        records = compare_cohorts(base, cand, base_pass, cand_pass, membership, meta, policy)
        scores = paired_bootstrap_mean_diff(cand - base, membership)
        for k, record in enumerate(records[:3]):
            rows = membership[k]
            b = int(np.sum(base_pass[rows] & ~cand_pass[rows]))
            c = int(np.sum(~base_pass[rows] & cand_pass[rows]))
            both = int(np.sum(base_pass[rows] & cand_pass[rows]))
            low, high = paired_pass_interval(both, b, c, int(rows.sum()) - both - b - c)
            assert record.n == rows.sum()
            assert record.baseline_mean == pytest.approx(base[rows].mean())
            assert record.candidate_mean == pytest.approx(cand[rows].mean())
            assert record.delta == pytest.approx(cand[rows].mean() - base[rows].mean())
            assert (record.ci_low, record.ci_high) == (scores.ci_low[k], scores.ci_high[k])
            assert record.p_value == scores.p_value[k]
            assert record.baseline_pass_rate == pytest.approx(base_pass[rows].mean())
            assert record.candidate_pass_rate == pytest.approx(cand_pass[rows].mean())
            assert (record.discordant_b, record.discordant_c) == (b, c)
            assert record.pass_p_value == pytest.approx(
                mcnemar([[both, b], [c, 0]], exact=True).pvalue
            )
            assert (record.pass_ci_low, record.pass_ci_high) == (float(low), float(high))
            assert record.status == "pending" and record.p_adjusted is None
        assert records[1].floor == 0.5 and records[0].floor is None

    def test_json_serialisable_even_for_an_empty_cohort(self, runs: dict[str, np.ndarray]) -> None:
        base, cand, membership = runs["baseline"], runs["candidate"], runs["membership"]
        meta = [CohortMeta(f"c{k}") for k in range(4)]
        records = compare_cohorts(
            base, cand, base > 0.7, cand > 0.7, membership, meta, GatePolicy()
        )
        empty = records[3]
        assert empty.n == 0 and empty.delta is None and empty.candidate_pass_rate is None
        assert empty.required_n is None and not empty.underpowered
        encoded = json.dumps([dataclasses.asdict(r) for r in records], allow_nan=False)
        assert json.loads(encoded)[0]["cohort_name"] == "c0"

    def test_required_n_follows_the_guarded_metric(self, runs: dict[str, np.ndarray]) -> None:
        base, cand, membership = runs["baseline"], runs["candidate"], runs["membership"]
        meta = [CohortMeta(f"c{k}") for k in range(4)]
        for metric in ("pass_rate", "mean_score"):
            policy = GatePolicy(metric=metric)
            records = compare_cohorts(base, cand, base > 0.7, cand > 0.7, membership, meta, policy)
            record = records[0]
            rows = membership[0]
            if metric == "pass_rate":
                discordance = (record.discordant_b + record.discordant_c) / record.n
                expected = required_pairs(0.02, discordance_rate=discordance)
            else:
                expected = required_pairs(0.02, sd=np.std(cand[rows] - base[rows], ddof=1))
            assert record.required_n == max(int(expected), policy.minimum_rows)
            assert record.underpowered == (record.n < record.required_n)

    def test_rejects_mismatched_input(self, runs: dict[str, np.ndarray]) -> None:
        base, cand, membership = runs["baseline"], runs["candidate"], runs["membership"]
        meta = [CohortMeta(f"c{k}") for k in range(4)]
        with pytest.raises(ValueError):
            compare_cohorts(base, cand[:-1], base > 0.7, cand > 0.7, membership, meta, GatePolicy())
        with pytest.raises(ValueError):
            compare_cohorts(base, cand, base > 0.7, cand > 0.7, membership, meta[:2], GatePolicy())
        with pytest.raises(ValueError):
            compare_cohorts(base, cand, base * 2, cand > 0.7, membership, meta, GatePolicy())
