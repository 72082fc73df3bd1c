"""The Brier score's within-day variance from the stored per-bin sums alone (what the drift
job has): it must match the day-to-day spread of simulated days whatever the calibration,
since drift exists to see miscalibrated days."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from app.stats.calibration import (
    DEFAULT_BINS,
    bin_statistics,
    brier_day_signal,
    equal_mass_bins,
)
from app.stats.continuous import estimate_mean_reference, mean_predictive_pvalue

FIELDS = ("count", "sum_prob", "sum_label", "sum_prob_sq", "sum_prob_label")
Generator = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]


def hard_predictions(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """A thresholded classifier: probabilities 0 or 1, wrong 15% of the time."""
    p = (rng.random(n) < 0.4).astype(float)
    wrong = rng.random(n) < 0.15
    return p, np.where(wrong, 1.0 - p, p)


def overconfident(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Says 0.05-0.15 where the outcome is a coin flip."""
    p = rng.uniform(0.05, 0.15, n)
    return p, (rng.random(n) < 0.5).astype(float)


def calibrated(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    p = rng.beta(2.0, 5.0, n)
    return p, (rng.random(n) < p).astype(float)


@pytest.mark.parametrize("generate", [hard_predictions, overconfident, calibrated])
def test_brier_variance_from_bin_sums_matches_the_spread_of_days(generate: Generator) -> None:
    """Before, without a per-day fourth-power sum (the job never stores one) the variance was
    the calibrated-null bound sum p(1 - p) / N^2: zero (floored at 1e-12) for 0/1
    probabilities and about half the truth for the overconfident model, so the Brier band
    and CUSUM read sampling noise as drift."""
    rng = np.random.default_rng(7)
    values, variances = [], []
    for _ in range(2000):
        p, y = generate(rng, 400)
        s = bin_statistics(p, y, equal_mass_bins(p), DEFAULT_BINS)
        value, var = brier_day_signal(*(getattr(s, f) for f in FIELDS))
        values.append(float(value))
        variances.append(float(var))
    assert np.mean(variances) == pytest.approx(np.var(values), rel=0.1)


def test_a_small_day_of_a_thresholded_classifier_is_not_a_brier_shift() -> None:
    """The consequence in the band: a 200-row day of a 0/1 classifier whose error rate did
    not move, against a reference of 2,000-row days. With the calibrated-null variance (0)
    a quarter of such days fell outside the 1% band; with the estimated one about 1% do."""
    rng = np.random.default_rng(3)

    def bins(n: int) -> list[np.ndarray]:
        p, y = hard_predictions(rng, n)
        s = bin_statistics(p, y, equal_mass_bins(p), DEFAULT_BINS)
        return [getattr(s, f) for f in FIELDS]

    reference_days = [brier_day_signal(*bins(2000)) for _ in range(28)]
    reference = estimate_mean_reference(
        np.array([[float(v) for v, _ in reference_days]]),
        np.array([[float(w) for _, w in reference_days]]),
    )
    today = [brier_day_signal(*bins(200)) for _ in range(2000)]
    pvalues = mean_predictive_pvalue(
        np.array([float(v) for v, _ in today]), np.array([float(w) for _, w in today]), reference
    )
    assert np.mean(pvalues < 0.01) < 0.02
