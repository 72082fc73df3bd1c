"""app.stats.margin against independent computations, scipy/statsmodels, and full enumeration."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import optimize, special, stats
from statsmodels.stats.contingency_tables import mcnemar

from app.stats.margin import (
    binomial_floor_pvalues,
    exact_bound,
    exact_pvalue,
    mcnemar_one_sided,
    restricted_moments,
    restricted_variance,
    score_bound,
    score_test,
    score_z,
    tango_restricted,
    tango_z,
)

TRINOMIAL = np.array([-1.0, 0.0, 1.0])


def reference_restricted(b: int, c: int, n: int, mu0: float) -> float:
    """p_b maximising the trinomial likelihood subject to p_c - p_b = mu0, by direct search."""
    a = n - b - c

    def negative_loglik(x: float) -> float:
        terms = [(b, x), (c, x + mu0), (a, 1.0 - 2.0 * x - mu0)]
        return -sum(count * math.log(p) for count, p in terms if count)

    low, high = max(0.0, -mu0), (1.0 - mu0) / 2.0
    found = optimize.minimize_scalar(
        negative_loglik,
        bounds=(low + 1e-13, high - 1e-13),
        method="bounded",
        options={"xatol": 1e-13},
    )
    return float(found.x)


def reference_z(b: int, c: int, n: int, mu0: float) -> float:
    p_b = reference_restricted(b, c, n, mu0)
    variance = 2.0 * p_b + mu0 - mu0 * mu0
    return (c - b - n * mu0) / math.sqrt(n * variance)


TABLES = [
    (4, 0, 10, -0.02),
    (0, 0, 100, -0.02),
    (40, 20, 160, -0.1),
    (3, 7, 50, 0.05),
    (0, 5, 20, -0.3),
    (5, 0, 20, 0.2),
    (12, 12, 24, -0.05),
]


class TestTangoRestricted:
    @pytest.mark.parametrize(("b", "c", "n", "mu0"), TABLES)
    def test_matches_a_direct_maximisation_of_the_likelihood(
        self, b: int, c: int, n: int, mu0: float
    ) -> None:
        p_b, p_c = tango_restricted(b, c, n, mu0)
        assert float(p_b) == pytest.approx(reference_restricted(b, c, n, mu0), abs=1e-7)
        assert float(p_c - p_b) == pytest.approx(mu0)

    @pytest.mark.parametrize(("b", "c", "n", "mu0"), TABLES)
    def test_score_statistic_matches_the_reference(
        self, b: int, c: int, n: int, mu0: float
    ) -> None:
        assert float(tango_z(b, c, n, mu0)) == pytest.approx(reference_z(b, c, n, mu0), rel=1e-7)

    def test_no_discordant_rows_still_have_variance_under_a_margin(self) -> None:
        # The constrained fit puts mass m on "lost": three identical rows prove nothing.
        p_b, p_c = tango_restricted(0, 0, 3, -0.02)
        assert (float(p_b), float(p_c)) == pytest.approx((0.02, 0.0))
        assert float(tango_z(0, 0, 3, -0.02)) == pytest.approx(math.sqrt(3 * 0.02 / 0.98))

    def test_vectorised(self) -> None:
        b, c, n, mu0 = (np.array(column) for column in zip(*TABLES, strict=True))
        expected = [reference_z(*table) for table in TABLES]
        np.testing.assert_allclose(tango_z(b, c, n, mu0), expected, rtol=1e-7)


class TestRestrictedMoments:
    @pytest.mark.parametrize(("b", "c", "n", "mu0"), TABLES)
    def test_general_solver_reproduces_tango_on_pass_fail_pairs(
        self, b: int, c: int, n: int, mu0: float
    ) -> None:
        # An extra support point with no rows forces the empirical-likelihood path.
        support = np.array([-1.0, 0.0, 0.5, 1.0])
        counts = np.array([[b, n - b - c, 0, c]], dtype=float)
        closed = restricted_moments(TRINOMIAL, counts[:, [0, 1, 3]], mu0)
        general = restricted_moments(support, counts, mu0)
        np.testing.assert_allclose(general[0], closed[0], rtol=1e-7)
        np.testing.assert_allclose(general[1], closed[1], rtol=1e-6, atol=1e-12)
        p_b = reference_restricted(b, c, n, mu0)
        assert float(closed[0][0]) == pytest.approx(2 * p_b + mu0 - mu0 * mu0, rel=1e-7)

    @pytest.mark.parametrize(
        ("values", "mu0"),
        [
            ([0.0, 0.0, 1 / 3, -1 / 3, 2 / 3, 0.0, -2 / 3, -1 / 3], -0.05),
            ([0.5, 0.25, 0.25, 0.0, 1.0], -0.02),  # mu0 below every value: mass goes to -1
            ([-0.5, -0.25, -1.0, 0.0], 0.1),  # mu0 above every value: mass goes to +1
            ([0.2, -0.4, 0.6, -0.2, 0.0, 0.4], 0.0),
        ],
    )
    def test_matches_a_direct_constrained_maximisation(
        self, values: list[float], mu0: float
    ) -> None:
        observed, counts = np.unique(values, return_counts=True)
        got = restricted_variance(observed, counts[None, :].astype(float), mu0)
        assert float(got[0]) == pytest.approx(constrained_variance(values, mu0), rel=1e-4)

    def test_many_cohorts_of_graded_values_at_once_match_each_alone(self) -> None:
        # Graded values (nearly all distinct), cohorts of different sizes and nulls, some
        # whose fit puts mass on an end of [-1, 1], one empty: one vectorised call.
        rng = np.random.default_rng(3)
        values = np.round(np.clip(rng.normal(-0.01, 0.2, 60), -1, 1), 6)
        support, index = np.unique(values, return_inverse=True)
        members = [slice(0, 60), slice(0, 12), slice(10, 40), slice(40, 60), slice(0, 0)]
        nulls = np.array([-0.02, -0.3, 0.05, 0.25, -0.02])
        counts = np.zeros((len(members), support.size))
        for k, rows in enumerate(members):
            np.add.at(counts[k], index[rows], 1.0)
        got = restricted_variance(support, counts, nulls)
        for k, rows in enumerate(members[:-1]):
            expected = constrained_variance(list(values[rows]), float(nulls[k]))
            assert float(got[k]) == pytest.approx(expected, rel=1e-4), k
        assert np.isnan(got[-1])

    def test_rejects_a_null_outside_the_range(self) -> None:
        with pytest.raises(ValueError, match="strictly inside"):
            restricted_variance(TRINOMIAL, [[1, 2, 3]], 1.0)


def constrained_variance(values: list[float], mu0: float) -> float:
    """Reference: maximise sum log p over distributions on the observed values plus both
    ends of [-1, 1], subject to the mean, with a generic optimiser; the variance about mu0."""
    observed, counts = np.unique(values, return_counts=True)
    support = np.unique(np.concatenate([observed, [-1.0, 1.0]]))
    weight = np.array([counts[observed == s].sum() for s in support], dtype=float)

    def negative_loglik(p: np.ndarray) -> float:
        return -float(np.sum(weight * np.log(np.maximum(p, 1e-300))))

    constraints = [
        {"type": "eq", "fun": lambda p: p.sum() - 1.0},
        {"type": "eq", "fun": lambda p: p @ support - mu0},
    ]
    start = np.full(support.size, 1.0 / support.size)
    found = optimize.minimize(
        negative_loglik,
        start,
        method="SLSQP",
        bounds=[(1e-12, 1.0)] * support.size,
        constraints=constraints,
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    return float(found.x @ (support - mu0) ** 2)


class TestScoreTest:
    def test_symmetric_null_fit_needs_no_skewness_correction(self) -> None:
        counts = np.array([[7, 30, 7]], dtype=float)
        z, p = score_test(TRINOMIAL, counts, 0.0, "lower")
        assert float(z[0]) == 0.0
        assert float(p[0]) == pytest.approx(0.5)
        counts = np.array([[9, 30, 5]], dtype=float)
        z, p = score_test(TRINOMIAL, counts, 0.0, "lower")
        # Tango's variance at mu0 = 0 is (b + c) / n: the McNemar z, and m3 = 0.
        assert float(z[0]) == pytest.approx(-4 / math.sqrt(14))
        assert float(p[0]) == pytest.approx(stats.norm.cdf(-4 / math.sqrt(14)))

    def test_statistic_is_tangos(self) -> None:
        for b, c, n, mu0 in TABLES:
            z, _ = score_test(TRINOMIAL, [[b, n - b - c, c]], mu0, "upper")
            assert float(z[0]) == pytest.approx(reference_z(b, c, n, mu0), rel=1e-7)

    def test_skewness_correction_follows_halls_transform(self) -> None:
        b, c, n, mu0 = 4, 1, 60, -0.02
        counts = np.array([[b, n - b - c, c]], dtype=float)
        p_b = reference_restricted(b, c, n, mu0)
        cells = np.array([p_b, 1 - 2 * p_b - mu0, p_b + mu0])
        dev = TRINOMIAL - mu0
        variance, third = cells @ dev**2, cells @ dev**3
        kappa = third / variance**1.5 / math.sqrt(n)
        z = reference_z(b, c, n, mu0)
        h = z - kappa * (z * z - 1) / 6 + kappa * kappa * z**3 / 108
        _, lower = score_test(TRINOMIAL, counts, mu0, "lower")
        _, upper = score_test(TRINOMIAL, counts, mu0, "upper")
        assert float(lower[0]) == pytest.approx(stats.norm.cdf(h), rel=1e-6)
        assert float(upper[0]) == pytest.approx(stats.norm.sf(h), rel=1e-6)

    def test_more_lost_rows_never_make_a_drop_less_significant(self) -> None:
        counts = np.array([[b, 100 - b - 5, 5] for b in range(0, 60)], dtype=float)
        _, p = score_test(TRINOMIAL, counts, -0.02, "lower")
        assert np.all(np.diff(p) <= 1e-12)

    def test_empty_cohort_has_p_one(self) -> None:
        _, p = score_test(TRINOMIAL, [[0, 0, 0]], -0.02, "lower")
        assert float(p[0]) == 1.0

    def test_score_z_agrees_with_score_test(self) -> None:
        counts = np.array([[3, 40, 9], [10, 10, 1]], dtype=float)
        np.testing.assert_allclose(
            score_z(TRINOMIAL, counts, -0.05), score_test(TRINOMIAL, counts, -0.05, "lower")[0]
        )


def all_tables(n: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = [(b, c) for b in range(n + 1) for c in range(n + 1 - b)]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def table_probabilities(n: int, b: np.ndarray, c: np.ndarray, p_b: float, p_c: float) -> np.ndarray:
    log = (
        special.gammaln(n + 1)
        - special.gammaln(b + 1)
        - special.gammaln(c + 1)
        - special.gammaln(n - b - c + 1)
        + special.xlogy(b, p_b)
        + special.xlogy(c, p_c)
        + special.xlog1py(n - b - c, -(p_b + p_c))
    )
    return np.exp(log)


class TestExactPvalue:
    @pytest.mark.parametrize("n", [6, 12, 25])
    @pytest.mark.parametrize("mu0", [-0.02, -0.1, -0.25])
    @pytest.mark.parametrize("tail", ["lower", "upper"])
    def test_size_never_exceeds_alpha_anywhere_in_the_null(
        self, n: int, mu0: float, tail: str
    ) -> None:
        # Enumerate every table, then the rejection probability over a dense grid of
        # null parameters: the boundary p_c - p_b = mu0 and points inside the null.
        b, c = all_tables(n)
        p = np.array(
            [exact_pvalue(n, int(x), int(y), mu0, tail) for x, y in zip(b, c, strict=True)]
        )  # type: ignore[arg-type]
        worst = {alpha: 0.0 for alpha in (0.05, 0.025, 0.01)}
        for psi in np.linspace(0.0, 1.0, 401):
            # Every Delta the null allows at this psi: from the boundary (or all
            # discordant rows going the null's way) inwards.
            if tail == "lower":
                deltas = np.linspace(max(mu0, -psi), psi, 5) if psi >= mu0 else []
            else:
                deltas = np.linspace(-psi, min(mu0, psi), 5) if psi >= -mu0 else []
            for delta in deltas:
                mass = table_probabilities(n, b, c, (psi - delta) / 2.0, (psi + delta) / 2.0)
                for alpha in worst:
                    worst[alpha] = max(worst[alpha], float(mass[p <= alpha].sum()))
        for alpha, size in worst.items():
            assert size <= alpha + 1e-9, (alpha, size)

    @pytest.mark.parametrize(
        ("n", "b", "c", "mu0", "tail"),
        [
            (10, 4, 0, -0.02, "lower"),
            (12, 1, 6, -0.1, "upper"),
            (20, 7, 2, -0.05, "lower"),
            (15, 0, 0, -0.02, "upper"),
        ],
    )
    def test_without_berger_boos_it_is_the_supremum_over_every_psi(
        self, n: int, b: int, c: int, mu0: float, tail: str
    ) -> None:
        # Independent brute force: the region from the reference statistic, the
        # supremum over a dense grid of psi.
        bs, cs = all_tables(n)
        z = np.array([reference_z(int(x), int(y), n, mu0) for x, y in zip(bs, cs, strict=True)])
        observed = reference_z(b, c, n, mu0)
        region = z <= observed + 1e-9 if tail == "lower" else z >= observed - 1e-9
        dense = max(
            float(table_probabilities(n, bs, cs, (s - mu0) / 2, (s + mu0) / 2)[region].sum())
            for s in np.linspace(abs(mu0), 1.0, 20001)
        )
        got = exact_pvalue(n, b, c, mu0, tail, gamma=0.0)  # type: ignore[arg-type]
        assert got == pytest.approx(dense, rel=1e-4, abs=1e-9)
        assert got >= dense - 1e-9

    def test_identical_rows_need_the_rule_of_three_rows_to_pass(self) -> None:
        # With no discordant row, psi = m gives P(no lost row) = (1 - m)^n: the old
        # "minimum rows" (183 at m = 0.02) is a lower bound the exact test rediscovers.
        assert exact_pvalue(50, 0, 0, -0.02, "upper", gamma=0.0) == pytest.approx(0.98**50)
        for n in (100, 183, 250):
            assert exact_pvalue(n, 0, 0, -0.02, "upper", gamma=0.0) >= 0.98**n - 1e-12
        # Berger-Boos: 0 discordant rows rule out a large psi, so the supremum is at psi = m.
        assert exact_pvalue(185, 0, 0, -0.02, "upper") == pytest.approx(0.98**185 + 0.001)
        assert exact_pvalue(185, 0, 0, -0.02, "upper") <= 0.025
        assert exact_pvalue(184, 0, 0, -0.02, "upper") > 0.025

    def test_two_flipped_rows_cannot_show_anything(self) -> None:
        assert exact_pvalue(2, 2, 0, -0.02, "lower") > 0.25

    def test_rejects_impossible_tables(self) -> None:
        with pytest.raises(ValueError):
            exact_pvalue(5, 4, 3, -0.02, "lower")

    def test_bound_inverts_the_exact_test(self) -> None:
        n, b, c = 60, 14, 3
        upper = exact_bound(n, b, c, 0.95, "upper")
        assert exact_pvalue(n, b, c, upper + 0.002, "lower") <= 0.05
        assert exact_pvalue(n, b, c, upper - 0.002, "lower") > 0.05
        lower = exact_bound(n, b, c, 0.975, "lower")
        assert lower < (c - b) / n < upper


class TestMcNemarAndFloors:
    @pytest.mark.parametrize(("b", "c"), [(4, 0), (10, 3), (30, 25), (0, 0), (2, 9)])
    def test_one_sided_mcnemar_is_the_exact_binomial_tail(self, b: int, c: int) -> None:
        got = float(mcnemar_one_sided(b, c))
        if b + c == 0:
            assert got == 1.0
            return
        assert got == pytest.approx(stats.binomtest(c, b + c, 0.5, alternative="less").pvalue)
        if c < b:  # half of statsmodels' two-sided exact McNemar
            assert got == pytest.approx(mcnemar([[0, b], [c, 0]], exact=True).pvalue / 2.0)

    @pytest.mark.parametrize(("x", "n", "floor"), [(95, 100, 0.97), (160, 200, 0.9), (7, 7, 0.9)])
    def test_floor_pvalues_are_scipys_exact_binomial_tests(
        self, x: int, n: int, floor: float
    ) -> None:
        broken, met = binomial_floor_pvalues(x, n, floor)
        assert float(broken) == pytest.approx(
            stats.binomtest(x, n, floor, alternative="less").pvalue
        )
        assert float(met) == pytest.approx(
            stats.binomtest(x, n, floor, alternative="greater").pvalue
        )


class TestScoreBound:
    def test_the_bound_is_where_the_test_switches(self) -> None:
        counts = np.array([[14, 40, 6], [2, 300, 1], [0, 50, 0]], dtype=float)
        upper = score_bound(TRINOMIAL, counts, 0.95, "upper")
        lower = score_bound(TRINOMIAL, counts, 0.975, "lower")
        for k in range(counts.shape[0]):
            row = counts[k : k + 1]
            assert score_test(TRINOMIAL, row, upper[k] + 1e-6, "lower")[1][0] <= 0.05
            assert score_test(TRINOMIAL, row, upper[k] - 1e-6, "lower")[1][0] > 0.05
            assert score_test(TRINOMIAL, row, lower[k] - 1e-6, "upper")[1][0] <= 0.025
            assert score_test(TRINOMIAL, row, lower[k] + 1e-6, "upper")[1][0] > 0.025
            estimate = (row[0, 2] - row[0, 0]) / row.sum()
            assert lower[k] <= estimate <= upper[k]

    def test_fractional_values_on_zero_to_one(self) -> None:
        values = np.array([0.0, 1 / 3, 2 / 3, 1.0])
        counts = np.array([[5, 10, 30, 55]], dtype=float)
        low = score_bound(values, counts, 0.975, "lower", lo=0.0, hi=1.0)[0]
        high = score_bound(values, counts, 0.975, "upper", lo=0.0, hi=1.0)[0]
        mean = float(counts[0] @ values / counts.sum())
        assert 0.0 < low < mean < high < 1.0


def test_exact_and_score_p_values_agree_closely_on_a_large_cohort() -> None:
    n, b, c = 380, 60, 35
    for mu0, tail in itertools.product((-0.02, -0.1), ("lower", "upper")):
        exact = exact_pvalue(n, b, c, mu0, tail)  # type: ignore[arg-type]
        score = float(score_test(TRINOMIAL, [[b, n - b - c, c]], mu0, tail)[1][0])  # type: ignore[arg-type]
        assert exact == pytest.approx(score, rel=0.3, abs=0.002)
