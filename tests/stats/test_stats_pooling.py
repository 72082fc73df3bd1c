"""app.stats.pooling: the wobble pooled across cohorts, against a direct computation."""

from __future__ import annotations

import numpy as np
import pytest
from statsmodels.stats.meta_analysis import combine_effects

from app.stats.bands import estimate_rate_reference
from app.stats.continuous import estimate_mean_reference
from app.stats.pooling import MIN_POOL_COHORTS, between_var_moments, pooled_between_var
from app.stats.reference import dersimonian_laird


def _rows(seed: int, taus: list[float], days: list[int]) -> tuple[np.ndarray, ...]:
    """(rows x 40 days) values, within-day variances and kept days: row i has taus[i]^2
    between days and days[i] kept days."""
    rng = np.random.default_rng(seed)
    rows, width = len(taus), 40
    v = rng.uniform(0.2, 2.0, (rows, width))
    y = 5.0 + rng.normal(0, 1, (rows, width)) * np.array(taus)[:, None] + rng.normal(0, np.sqrt(v))
    kept = np.arange(width)[None, :] < np.array(days)[:, None]
    return y, v, kept


def _direct(y: np.ndarray, v: np.ndarray, kept: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return _direct_with_weights(y, v, kept, scale)[0]


def _direct_with_weights(
    y: np.ndarray, v: np.ndarray, kept: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The documented computation, one row and one step at a time, statsmodels for both
    DerSimonian-Laird levels (it does not truncate a negative moment estimate)."""
    raw, within, df = [], [], []
    for i in range(y.shape[0]):
        yi, vi = y[i, kept[i]], v[i, kept[i]]
        raw.append(combine_effects(yi, vi, method_re="chi2").tau2)
        w = 1 / vi
        within.append((len(yi) - 1) / (w.sum() - (w**2).sum() / w.sum()))
        df.append(len(yi) - 1.0)
    theta = np.array(raw) / scale
    u, nu = np.array(within) / scale, np.array(df)
    theta0 = np.maximum(theta, 0).mean()
    for _ in range(2):
        sigma2 = 2 * (u + max(theta0, 0.0)) ** 2 / nu
        second = combine_effects(theta, sigma2, method_re="chi2")
        omega2 = max(second.tau2, 0.0)
        w_star = 1 / (sigma2 + omega2)
        theta0 = (w_star * theta).sum() / w_star.sum()
    lam = omega2 / (omega2 + sigma2)
    return np.asarray(np.maximum(theta0 + lam * (theta - theta0), 0.0) * scale), lam


def test_matches_the_direct_computation_when_cohorts_differ() -> None:
    taus = [0.3, 0.3, 0.6, 0.6, 1.0, 0.3, 0.6, 1.2]
    y, v, kept = _rows(1, taus, [28, 28, 20, 28, 28, 9, 28, 28])
    own = dersimonian_laird(y, v, kept).between_var
    scale = np.linspace(0.5, 2.0, len(taus))
    got = pooled_between_var(y, v, kept, own, scale, np.zeros(len(taus), int))
    expected = _direct(y, v, kept, scale)
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    # The cohorts differ (omega^2 > 0): each row keeps part of its own value, so the
    # wobbliest row stays the wobbliest and no row takes the pool's value outright.
    assert np.argmax(got / scale) == np.argmax(own / scale) == 7
    assert len(np.unique(np.round(got / scale, 12))) == len(taus)


def test_cohorts_that_agree_all_take_the_pooled_value() -> None:
    y, v, kept = _rows(4, [0.5] * 8, [28] * 8)
    own = dersimonian_laird(y, v, kept).between_var
    got = pooled_between_var(y, v, kept, own, np.ones(8), np.zeros(8, int))
    np.testing.assert_allclose(got, _direct(y, v, kept, np.ones(8)), rtol=1e-9)
    assert np.ptp(got) == pytest.approx(0.0, abs=1e-12)  # omega^2 = 0: one value for all
    assert own.std() > 0.1  # which the rows' own estimates scatter around
    assert got[0] == pytest.approx(0.25, rel=0.35)


def test_groups_are_pooled_apart_and_small_groups_or_negative_ids_keep_their_own() -> None:
    y, v, kept = _rows(3, [0.5] * 5 + [1.0] * 5 + [0.5] * 4, [28] * 14)
    own = dersimonian_laird(y, v, kept).between_var
    groups = np.array([0] * 5 + [1] * 5 + [2] * 3 + [-1])
    got = pooled_between_var(y, v, kept, own, np.ones(14), groups)
    for rows in (slice(0, 5), slice(5, 10)):
        np.testing.assert_allclose(
            got[rows], _direct(y[rows], v[rows], kept[rows], np.ones(5)), rtol=1e-9
        )
    np.testing.assert_array_equal(got[10:], own[10:])  # 3 < MIN_POOL_COHORTS; alone
    assert MIN_POOL_COHORTS == 5


def test_degenerate_cases() -> None:
    # One cohort: its own estimate.
    y, v, kept = _rows(4, [0.5], [28])
    own = dersimonian_laird(y, v, kept).between_var
    np.testing.assert_array_equal(pooled_between_var(y, v, kept, own, [1.0], [0]), own)
    # No wobble anywhere: every own estimate is 0 (the moments are negative), so is the pool.
    flat = np.tile(np.array([[4.9, 5.1, 5.0, 4.95, 5.05, 5.0, 4.98]]), (6, 1))
    flat = flat + 0.001 * np.arange(6)[:, None]
    ones, all_kept = np.ones_like(flat), np.ones_like(flat, bool)
    zero = dersimonian_laird(flat, ones, all_kept).between_var
    assert np.all(zero == 0.0)
    raw, _, _ = between_var_moments(flat, ones, all_kept)
    assert np.all(raw < 0)
    got = pooled_between_var(flat, ones, all_kept, zero, np.ones(6), np.zeros(6, int))
    np.testing.assert_array_equal(got, np.zeros(6))
    # A cohort with very few days (5, the minimum) is imprecise: it keeps less of its own
    # estimate than any 28-day cohort does.
    y, v, kept = _rows(9, [0.6] * 6, [28, 28, 28, 28, 28, 5])
    own = dersimonian_laird(y, v, kept).between_var
    got = pooled_between_var(y, v, kept, own, np.ones(6), np.zeros(6, int))
    expected, lam = _direct_with_weights(y, v, kept, np.ones(6))
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    assert 0.0 < lam[5] < 0.5 * lam[:5].min()
    # Rows without a reference (NaN) are left as they are and do not enter the pool.
    own_nan = own.copy()
    own_nan[0] = np.nan
    got = pooled_between_var(y, v, kept, own_nan, np.ones(6), np.zeros(6, int))
    assert np.isnan(got[0])
    np.testing.assert_allclose(got[1:], _direct(y[1:], v[1:], kept[1:], np.ones(5)), rtol=1e-9)


def test_rates_pool_the_relative_wobble_and_reweight_the_centre() -> None:
    rng = np.random.default_rng(6)
    rates = np.array([0.02, 0.05, 0.05, 0.1, 0.2, 0.05])
    n = np.array([20_000, 5_000, 8_000, 3_000, 2_000, 10_000])[:, None] * np.ones((1, 28))
    day_rate = rates[:, None] * np.exp(rng.normal(0, 0.1, (6, 28)))  # 10% wobble, all rows
    x = rng.binomial(n.astype(int), day_rate)
    own = estimate_rate_reference(x, n)
    pooled = estimate_rate_reference(x, n, groups=np.zeros(6, int))
    cv_own = np.sqrt(own.between_var) / own.center
    cv_pooled = np.sqrt(pooled.between_var) / pooled.center
    assert np.ptp(cv_pooled) < 0.5 * np.ptp(cv_own)  # one relative wobble, ...
    assert np.median(cv_pooled) == pytest.approx(0.1, rel=0.3)  # ... the true one
    np.testing.assert_allclose(pooled.center, own.center, rtol=0.05)
    np.testing.assert_array_equal(pooled.days_used, own.days_used)
    # The centre's variance is the reweighted one: larger where tau^2 grew.
    grew = pooled.between_var > own.between_var
    assert np.all((pooled.center_var > own.center_var)[grew])


def test_mean_references_pool_on_the_absolute_scale_and_none_keeps_each_row_alone() -> None:
    y, v, kept = _rows(7, [0.5] * 6, [28] * 6)
    values = np.where(kept, y, np.nan)
    alone = estimate_mean_reference(values, v)
    assert alone.between_var.tolist() == dersimonian_laird(y, v, kept).between_var.tolist()
    pooled = estimate_mean_reference(values, v, groups=np.zeros(6, int))
    np.testing.assert_allclose(pooled.between_var, _direct(y, v, kept, np.ones(6)), rtol=1e-9)
