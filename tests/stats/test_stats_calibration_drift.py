"""app.stats.calibration, drift part: debiased calibration error, ECE and Brier bands.

Unbiasedness is checked by simulation against generators whose calibration is known.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from app.stats.calibration import (
    DEFAULT_BINS,
    BinStatistics,
    bin_noise_variance,
    bin_statistics,
    brier_day_signal,
    brier_decomposition,
    debiased_ece,
    debiased_squared_calibration_error,
    ece_predictive_pvalue,
    equal_mass_bins,
    estimate_ece_reference,
    expected_calibration_error,
)

FIELDS = ("count", "sum_prob", "sum_label", "sum_prob_sq", "sum_prob_label")


def day(rng: np.random.Generator, n: int, offset: float = 0.0) -> np.ndarray:
    """Five per-bin sums (5, bins) for n rows with p ~ Beta(2, 2), P(y = 1) = p + offset."""
    p = rng.uniform(0.15, 0.85, n) if offset else rng.beta(2.0, 2.0, n)
    y = (rng.random(n) < p + offset).astype(float)
    s = bin_statistics(p, y, equal_mass_bins(p), DEFAULT_BINS)
    return np.array([getattr(s, f) for f in FIELDS])


def many(rng: np.random.Generator, n: int, offset: float, reps: int) -> np.ndarray:
    return np.stack([day(rng, n, offset) for _ in range(reps)], axis=0)  # (reps, 5, bins)


def test_noise_variance_is_exact_in_expectation_for_one_bin() -> None:
    # Enumerate all outcomes of 4 rows with known probabilities (one bin).
    p = np.array([0.2, 0.3, 0.5, 0.6])
    var_true = np.sum(p * (1 - p)) / 16
    expected = 0.0
    for outcome in range(16):
        y = np.array([(outcome >> i) & 1 for i in range(4)], dtype=float)
        prob = np.prod(np.where(y == 1, p, 1 - p))
        v = bin_noise_variance([4.0], [p.sum()], [y.sum()], [(p**2).sum()])[0]
        expected += prob * v
    assert expected == pytest.approx(var_true)


@pytest.mark.parametrize("n", [100, 400])
def test_debiased_squared_error_is_unbiased_when_calibrated(n: int) -> None:
    sums = many(np.random.default_rng(n), n, 0.0, 4000)
    values = debiased_squared_calibration_error(*(sums[:, i] for i in range(4)))
    plug_in = np.mean([np.sum((s[2] - s[1]) ** 2 / np.maximum(s[0], 1)) / n for s in sums])
    assert abs(values.mean()) < 4 * values.std() / np.sqrt(values.size)
    assert plug_in > 10 * values.std() / np.sqrt(values.size)  # the plug-in REL is not


def test_debiased_squared_error_recovers_a_constant_offset() -> None:
    sums = many(np.random.default_rng(7), 300, 0.08, 4000)
    values = debiased_squared_calibration_error(*(sums[:, i] for i in range(4)))
    assert values.mean() == pytest.approx(0.08**2, abs=4 * values.std() / np.sqrt(values.size))


def test_debiased_ece_reads_near_zero_where_plug_in_reads_a_tenth() -> None:
    rng = np.random.default_rng(3)
    sums = many(rng, 100, 0.0, 2000)
    plug = [expected_calibration_error(bin_statistics_from(s)) for s in sums]
    debiased = debiased_ece(*(sums[:, i] for i in range(4)))
    assert np.mean(plug) > 0.09
    assert np.mean(debiased) < 0.05
    assert np.median(debiased) == 0.0


def bin_statistics_from(s: np.ndarray) -> BinStatistics:
    return BinStatistics.from_sums(*s)


def test_calibrated_null_p_values_are_roughly_uniform() -> None:
    sums = many(np.random.default_rng(11), 200, 0.0, 3000)
    p = ece_predictive_pvalue(*(sums[:, i] for i in range(4)), 0.0, 0.0)
    for level in (0.1, 0.01):
        assert np.mean(p < level) == pytest.approx(level, rel=0.35, abs=0.003)
    # A clearly miscalibrated day is flagged.
    bad = many(np.random.default_rng(12), 2000, 0.1, 1)[0]
    assert ece_predictive_pvalue(*(bad[i] for i in range(4)), 0.0, 0.0) < 1e-6


def test_reference_calibration_error_shifts_the_null() -> None:
    rng = np.random.default_rng(13)
    reference = many(rng, 1000, 0.05, 28)  # (days, 5, bins)
    ref = estimate_ece_reference(*(reference[None, :, i] for i in range(4)))
    assert ref.center[0] == pytest.approx(0.05**2, rel=0.25)
    today = many(rng, 1000, 0.05, 400)
    p = ece_predictive_pvalue(*(today[:, i] for i in range(4)), ref.center, ref.predictive_var())
    assert np.mean(p < 0.05) < 0.1  # same miscalibration as the reference: no alarm
    worse = many(rng, 1000, 0.12, 1)[0]
    p_bad = ece_predictive_pvalue(*(worse[i] for i in range(4)), ref.center, ref.predictive_var())
    assert p_bad < 1e-3


def wobbly_day(rng: np.random.Generator, n: int, offset: float) -> np.ndarray:
    """Five per-bin sums for n rows with p ~ Beta(2, 3) and P(y = 1) = expit(logit(p) +
    offset): the simulator's miscalibration (bench/traffic_sim.py)."""
    p = rng.beta(2.0, 3.0, n)
    q = 1.0 / (1.0 + np.exp(-(np.log(p / (1.0 - p)) + offset)))
    y = (rng.random(n) < q).astype(float)
    s = bin_statistics(p, y, equal_mass_bins(p), DEFAULT_BINS)
    return np.array([getattr(s, f) for f in FIELDS])


def wobbly_windows(
    rng: np.random.Generator, histories: int, days: int, rows: int = 2400
) -> np.ndarray:
    """(histories, days, 5, bins) sums of a cohort whose logit offset wobbles N(0.2, 0.125)
    from day to day (the simulator's 25% wobble)."""
    offsets = (rng.normal(0.2, 0.125, days) for _ in range(histories))
    return np.stack([np.stack([wobbly_day(rng, rows, o) for o in h]) for h in offsets])


@pytest.mark.parametrize(("rows", "seed"), [(2400, 1), (120, 3)])
def test_a_wobbling_calibration_error_rarely_loses_a_day_and_scores_near_normal(
    rows: int, seed: int
) -> None:
    # 40 healthy histories of a cohort: 28 reference days, then 20 days like them. The
    # squared error is right-skewed, and the 4-SD screen on it dropped an ordinary high day
    # in 27 of the 40 windows at 2,400 rows; their references read low, and P(score > 2) on
    # the new days was 4.6% (nominal 2.3%), the tail that drives the CUSUM. Screened on the
    # root scale 1 (2,400 rows) and 3 (120 rows) windows lose a day; with the root's
    # variance taken at each day's own value, not the common theta_0, 25 of 40 did at 120
    # rows (the bench's 600/day segment labels 120) and P(score > 2) was 3.1%.
    rng = np.random.default_rng(seed)
    reference_days = 28
    days = wobbly_windows(rng, 40, reference_days + 20, rows)
    ref = estimate_ece_reference(*(days[:, :reference_days, i] for i in range(4)))
    assert np.mean(ref.days_excluded > 0) <= 0.1
    new = days[:, reference_days:]
    p = ece_predictive_pvalue(
        *(new[:, :, i] for i in range(4)),
        ref.center[:, None],
        ref.predictive_var(None)[:, None],
    )
    score = stats.norm.isf(p)
    assert np.mean(score > 2.0) < 0.03
    assert np.mean(score > 3.0) < 0.004


def test_an_unmarked_calibration_incident_day_is_screened_out_of_the_reference() -> None:
    # A champion's first window has no alerts to leave days out: one day of 28 at logit
    # offset 1.2 (the cohort's usual is 0.2). Kept, it multiplied the band variance by 23
    # (median of 40 windows) and blinded the monitor for the reference's life.
    rng = np.random.default_rng(2)
    healthy = wobbly_windows(rng, 40, 28)
    sick = healthy.copy()
    for window, incident in zip(sick, rng.integers(28, size=40), strict=True):
        window[incident] = wobbly_day(rng, 2400, 1.2)
    before = estimate_ece_reference(*(healthy[:, :, i] for i in range(4)))
    after = estimate_ece_reference(*(sick[:, :, i] for i in range(4)))
    assert np.mean(after.days_excluded - before.days_excluded == 1) >= 0.9
    ratio = after.predictive_var() / before.predictive_var()
    assert np.mean(ratio < 1.5) >= 0.9


def test_brier_value_matches_the_decomposition_and_its_variance_the_spread() -> None:
    rng = np.random.default_rng(5)
    values, variances = [], []
    for _ in range(3000):
        p = rng.beta(2.0, 5.0, 300)
        y = (rng.random(300) < p).astype(float)
        s = bin_statistics(p, y, equal_mass_bins(p), DEFAULT_BINS)
        b, v = brier_day_signal(*(getattr(s, f) for f in FIELDS), np.sum((p - y) ** 4))
        assert b == pytest.approx(brier_decomposition(s).brier)
        values.append(b)
        variances.append(v)
    assert np.mean(variances) == pytest.approx(np.var(values), rel=0.1)
    # Without the fourth-power sum (the drift job stores none) it is estimated from the bins.
    _, estimated = brier_day_signal(*(getattr(s, f) for f in FIELDS))
    assert estimated == pytest.approx(variances[-1], rel=0.05)


def test_small_days_are_not_judged() -> None:
    s = day(np.random.default_rng(0), 30)
    assert np.isnan(brier_day_signal(*s)[0])
    assert np.isnan(ece_predictive_pvalue(*s[:4], 0.0, 0.0))


def test_scaled_chi_square_matches_its_two_moments() -> None:
    # The null statistic sum w V chi2(1) for equal V is exactly V/K chi2(K): the match is exact.
    k = 10
    n = np.full(k, 50.0)
    sp = np.full(k, 25.0)  # p = 0.5 in every bin: V0 = 0.25 / 50
    spp = np.full(k, 12.5)
    gap = np.sqrt(stats.chi2.ppf(0.99, k) / k * 0.25 / 50)
    sy = sp + gap * n
    p = ece_predictive_pvalue(n, sp, sy, spp, 0.0, 0.0)
    assert p == pytest.approx(0.01, rel=1e-6)
