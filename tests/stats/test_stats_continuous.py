"""app.stats.continuous: log moments, quantile variances, normal predictive bands."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from app.stats.continuous import (
    estimate_mean_reference,
    log_moments,
    log_signal,
    mean_normal_score,
    mean_predictive_band,
    mean_predictive_pvalue,
)
from app.stats.reference import Reference, variance_inflation


def _reference(center: float, tau2: float, var: float, days: int = 28) -> Reference:
    return Reference(
        np.array([center]),
        np.array([tau2]),
        np.array([var]),
        np.array([days]),
        np.array([0]),
        np.array([True]),
    )


def test_log_moments_match_numpy() -> None:
    x = np.log(np.random.default_rng(0).lognormal(6.5, 0.5, 500))
    mean, var = log_moments(x.size, x.sum(), (x**2).sum())
    assert mean == pytest.approx(x.mean())
    assert var == pytest.approx(x.var(ddof=1))
    assert np.isnan(log_moments(1, 2.0, 4.0)[0])


@pytest.mark.parametrize(("statistic", "q"), [("p50", 0.5), ("p95", 0.95), ("mean", None)])
def test_within_day_variance_matches_the_spread_of_simulated_days(
    statistic: str, q: float | None
) -> None:
    rng = np.random.default_rng(1)
    n = 2000
    values, variances = [], []
    for _ in range(1500):
        log_x = rng.normal(6.7, 0.5, n)
        mean, var = log_moments(n, log_x.sum(), (log_x**2).sum())
        quantile = np.exp(np.quantile(log_x, q)) if q is not None else None
        value, within = log_signal(statistic, n, mean, var, quantile)  # type: ignore[arg-type]
        values.append(value)
        variances.append(within)
    assert np.mean(variances) == pytest.approx(np.var(values), rel=0.12)


def test_too_few_values_are_not_judged() -> None:
    value, var = log_signal("p95", 50, 6.0, 0.25, 1500.0)
    assert np.isnan(value) and np.isnan(var)


def test_p_values_bands_and_scores_agree() -> None:
    ref = _reference(6.7, 0.01, 0.001)
    sd = np.sqrt(0.002 + float(variance_inflation(27)) * 0.01 + 0.001)
    z = mean_normal_score(6.9, 0.002, ref, 1e-4)[0]
    assert z == pytest.approx((6.9 - 6.7) / sd)
    assert mean_predictive_pvalue(6.9, 0.002, ref)[0] == pytest.approx(stats.norm.sf(z))
    assert mean_predictive_pvalue(6.5, 0.002, ref, "two-sided")[0] == pytest.approx(
        2 * stats.norm.sf(z)
    )
    low, high = mean_predictive_band(0.002, ref, 0.01)
    assert np.isneginf(low[0])
    assert mean_predictive_pvalue(high[0], 0.002, ref)[0] == pytest.approx(0.01)
    low2, high2 = mean_predictive_band(0.002, ref, 0.01, "two-sided")
    assert mean_predictive_pvalue(low2[0], 0.002, ref, "two-sided")[0] == pytest.approx(0.01)
    assert high2[0] > high[0]
    # The CUSUM's score uses the t variance factor 27/25 on tau^2 instead.
    z_score = mean_normal_score(6.9, 0.002, ref)[0]
    assert z_score == pytest.approx(0.2 / np.sqrt(0.002 + 27 / 25 * 0.01 + 0.001))


def test_reference_recovers_day_to_day_wobble() -> None:
    rng = np.random.default_rng(2)
    rows, days = 300, 28
    within = rng.uniform(0.0005, 0.002, (rows, days))
    y = 6.7 + rng.normal(0, 0.05, (rows, days)) + rng.normal(0, np.sqrt(within))
    ref = estimate_mean_reference(y, within)
    assert np.median(ref.between_var) == pytest.approx(0.05**2, rel=0.2)
    assert np.mean(ref.center) == pytest.approx(6.7, abs=0.005)
    y[:, 3] = np.nan  # a missing day is simply unobserved
    assert np.all(estimate_mean_reference(y, within).days_used <= 27)
