"""app.stats.bands: the beta-binomial predictive against scipy, band/test agreement, estimation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from app.stats.bands import (
    estimate_rate_reference,
    predictive_beta,
    rate_min_pvalue,
    rate_normal_score,
    rate_predictive_band,
    rate_predictive_pvalue,
)
from app.stats.reference import Reference, variance_inflation


def _reference(p: float, tau2: float, center_var: float, days: int = 28) -> Reference:
    return Reference(
        center=np.array([p]),
        between_var=np.array([tau2]),
        center_var=np.array([center_var]),
        days_used=np.array([days]),
        days_excluded=np.array([0]),
        valid=np.array([True]),
    )


def test_predictive_beta_has_the_reference_mean_and_inflated_variance() -> None:
    ref = _reference(0.05, 1e-5, 2e-6)
    a, b = predictive_beta(ref)
    mean, var = stats.beta.stats(a[0], b[0], moments="mv")
    assert mean == pytest.approx(0.05)
    assert var == pytest.approx(float(variance_inflation(27)) * 1e-5 + 2e-6)


@pytest.mark.parametrize(("x", "n"), [(2, 12), (40, 600), (58, 600), (700, 12_000), (0, 50)])
def test_p_values_are_beta_binomial_tails(x: int, n: int) -> None:
    ref = _reference(0.05, 2e-5, 3e-6)
    a, b = predictive_beta(ref)
    upper = stats.betabinom.sf(x - 1, n, a[0], b[0])
    lower = stats.betabinom.cdf(x, n, a[0], b[0])
    assert rate_predictive_pvalue(x, n, ref, "upper")[0] == pytest.approx(upper)
    assert rate_predictive_pvalue(x, n, ref, "lower")[0] == pytest.approx(lower)
    assert rate_predictive_pvalue(x, n, ref, "two-sided")[0] == pytest.approx(
        min(1.0, 2 * min(upper, lower))
    )


def test_without_overdispersion_and_a_huge_reference_it_is_the_binomial_test() -> None:
    ref = _reference(0.05, 0.0, 0.05 * 0.95 / 1e7)
    for x, n in [(3, 20), (45, 600), (300, 5000)]:
        exact = stats.binomtest(x, n, 0.05, alternative="greater").pvalue
        assert rate_predictive_pvalue(x, n, ref)[0] == pytest.approx(exact, rel=5e-3)


@pytest.mark.parametrize("side", ["upper", "lower", "two-sided"])
@pytest.mark.parametrize("n", [12, 100, 600, 2000])
def test_outside_the_band_exactly_when_p_is_below_alpha(side: str, n: int) -> None:
    ref = _reference(0.05, 4e-5, 2e-6)
    alpha = 1e-3
    low, high = rate_predictive_band(n, ref, alpha, side)  # type: ignore[arg-type]
    counts = np.arange(n + 1)
    p = rate_predictive_pvalue(counts, np.full(n + 1, n), ref, side)  # type: ignore[arg-type]
    rate = counts / n
    outside = (rate < low[0] - 1e-12) | (rate > high[0] + 1e-12)
    np.testing.assert_array_equal(outside, p < alpha)


def test_an_upper_band_never_flags_a_drop() -> None:
    ref = _reference(0.05, 1e-5, 1e-6)
    assert rate_predictive_pvalue(0, 5000, ref, "upper")[0] == pytest.approx(1.0)
    assert rate_predictive_pvalue(0, 5000, ref, "two-sided")[0] < 1e-10


def test_min_pvalue_is_the_all_events_probability() -> None:
    ref = _reference(0.05, 1e-5, 1e-6)
    a, b = predictive_beta(ref)
    assert rate_min_pvalue(3, ref)[0] == pytest.approx(stats.betabinom.pmf(3, 3, a[0], b[0]))
    assert rate_min_pvalue(0, ref)[0] == 1.0
    # A cohort of 3 requests cannot reach 1e-5; one of 100 easily can.
    assert rate_min_pvalue(3, ref)[0] > 1e-5 > rate_min_pvalue(100, ref)[0]


def test_no_volume_or_invalid_reference_is_not_judged() -> None:
    ref = _reference(0.05, 1e-5, 1e-6)
    assert np.isnan(rate_predictive_pvalue(0, 0, ref)[0])
    assert np.isnan(rate_normal_score(0, 0, ref)[0])
    bad = Reference(*(np.array([np.nan]),) * 3, np.array([2]), np.array([0]), np.array([False]))
    assert np.isnan(rate_predictive_pvalue(1, 10, bad)[0])
    assert rate_predictive_band(100, bad, 0.01) == (pytest.approx([0.0]), pytest.approx([1.0]))


def test_normal_score_is_standard_normal_on_predictive_draws() -> None:
    rng = np.random.default_rng(0)
    ref = _reference(0.05, 2e-5, 1e-6)
    a, b = predictive_beta(ref, None)  # scores use the variance factor df / (df - 2)
    for n in (40, 600, 12_000):
        x = stats.betabinom.rvs(n, a[0], b[0], size=20_000, random_state=rng)
        z = rate_normal_score(x, np.full(x.size, n), ref)
        assert abs(z.mean()) < 0.03
        assert 0.85 < z.std() < 1.05  # mid-p scores are slightly under-dispersed when discrete


def test_estimation_recovers_rate_and_overdispersion_from_beta_binomial_days() -> None:
    rng = np.random.default_rng(1)
    p, rho, n = 0.05, 0.0004, 5000  # tau^2 = rho p (1 - p)
    rows = 200
    size = (1 - rho) / rho
    day_rate = rng.beta(p * size, (1 - p) * size, (rows, 28))
    x = rng.binomial(n, day_rate)
    ref = estimate_rate_reference(x, np.full_like(x, n))
    assert np.mean(ref.center) == pytest.approx(p, rel=0.01)
    assert np.median(ref.between_var) == pytest.approx(rho * p * (1 - p), rel=0.2)
    # The centre's own uncertainty is what it claims: z of the error has SD ~1.
    assert np.std((ref.center - p) / np.sqrt(ref.center_var)) == pytest.approx(1.0, abs=0.15)


def test_a_clean_history_still_gives_a_finite_band() -> None:
    ref = estimate_rate_reference(np.zeros((1, 14)), np.full((1, 14), 100))
    assert 0 < ref.center[0] < 0.001
    _, high = rate_predictive_band(100, ref, 1e-3)
    assert 0 < high[0] < 1
    assert rate_predictive_pvalue(0, 100, ref)[0] == pytest.approx(1.0)


def test_incident_day_in_the_reference_is_screened_out() -> None:
    rng = np.random.default_rng(2)
    n = np.full((1, 28), 2000)
    x = rng.binomial(n, 0.05)
    x[0, 10] = 400  # a 20% day
    ref = estimate_rate_reference(x, n)
    assert ref.days_excluded[0] == 1
    assert ref.center[0] == pytest.approx(0.05, abs=0.004)


def test_a_small_cohorts_ordinary_busy_day_is_kept() -> None:
    # 12 of 100 at 5% happens on ~0.4% of days: unusual, not an incident.
    n = np.full((1, 28), 100)
    x = np.full((1, 28), 5)
    x[0, 3] = 12
    assert estimate_rate_reference(x, n).days_excluded[0] == 0


def test_upper_tail_is_accurate_far_beyond_scipys_one_minus_cdf() -> None:
    from app.stats.bands import upper_tail

    k = np.arange(6000, 100_001)
    direct = np.sum(stats.betabinom.pmf(k, 100_000, 2000.0, 38_000.0))
    assert upper_tail(6000, 100_000, 2000.0, 38_000.0) == pytest.approx(direct, rel=1e-6)
    assert 0 < direct < 1e-12
    assert upper_tail(0, 10, 1.0, 1.0) == pytest.approx(1.0)
    assert upper_tail(11, 10, 1.0, 1.0) == 0.0
