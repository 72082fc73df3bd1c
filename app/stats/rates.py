"""Is today's event rate in a cohort still the baseline rate? For the daily drift monitors.

A cohort's daily volume ranges from a dozen requests to tens of thousands, so a
fixed tolerance on the rate is wrong at both ends. The band and the test below
are exact binomial statements about the day's count given its volume, and they
agree by construction: a rate is flagged exactly when it lies outside the band.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from app.stats._arrays import BoolArray, FloatArray
from app.stats.lazy import scipy_stats as stats

DEFAULT_ALPHA = 0.01


def rate_band(
    baseline_rate: npt.ArrayLike, volume: npt.ArrayLike, confidence: float = 1.0 - DEFAULT_ALPHA
) -> tuple[FloatArray, FloatArray]:
    """Range of daily rates expected at ``volume`` requests if the baseline rate still holds.

    Equal-tailed binomial quantiles: from the alpha/2 quantile of Binomial(volume,
    baseline) to its upper alpha/2 quantile, divided by volume. A day with no
    traffic carries no information: (0, 1).
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must lie strictly between 0 and 1")
    rate, n = _rates_and_volumes(baseline_rate, volume)
    tail = (1.0 - confidence) / 2.0
    safe_n = np.maximum(n, 1)
    low = stats.binom.ppf(tail, n, rate) / safe_n
    high = stats.binom.isf(tail, n, rate) / safe_n
    return np.where(n > 0, low, 0.0), np.where(n > 0, high, 1.0)


def smoothed_rate(numerator: npt.ArrayLike, denominator: npt.ArrayLike) -> FloatArray:
    """A baseline rate that is never exactly 0 or 1: (x + 1/2) / (n + 1).

    A clean history (0 of n) would otherwise make any later event "impossible" and every
    band collapse; half an event each way (Jeffreys-style) keeps the band finite."""
    x = np.asarray(numerator, dtype=np.float64)
    n = np.asarray(denominator, dtype=np.float64)
    return np.asarray((x + 0.5) / (n + 1.0), dtype=np.float64)


def rate_pvalue(
    successes: npt.ArrayLike, n: npt.ArrayLike, baseline_rate: npt.ArrayLike
) -> FloatArray:
    """Two-sided exact binomial p-value by doubling the smaller tail (equal-tailed).

    Chosen over scipy's likelihood-ordered two-sided test because its acceptance
    region is exactly ``rate_band``, so the band drawn on the dashboard and the
    alert never disagree.
    """
    rate, total = _rates_and_volumes(baseline_rate, n)
    count = np.asarray(successes, dtype=np.int64)
    if np.any(count < 0) or np.any(count > total):
        raise ValueError("successes must lie between 0 and n")
    lower = stats.binom.cdf(count, total, rate)
    upper = stats.binom.sf(count - 1, total, rate)
    return np.asarray(np.minimum(1.0, 2.0 * np.minimum(lower, upper)), dtype=np.float64)


def rate_outside_band(
    successes: npt.ArrayLike,
    n: npt.ArrayLike,
    baseline_rate: npt.ArrayLike,
    alpha: float = DEFAULT_ALPHA,
) -> BoolArray:
    """True where the day's count is implausible under the baseline rate at level ``alpha``.

    alpha is per cohort and day; the drift job decides how to spread it over many.
    """
    return np.asarray(rate_pvalue(successes, n, baseline_rate) < alpha, dtype=np.bool_)


def _rates_and_volumes(
    rate: npt.ArrayLike, volume: npt.ArrayLike
) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    p = np.asarray(rate, dtype=np.float64)
    n = np.asarray(volume, dtype=np.int64)
    if np.any(~np.isfinite(p)) or np.any((p < 0.0) | (p > 1.0)):
        raise ValueError("baseline_rate must lie in [0, 1]")
    if np.any(n < 0):
        raise ValueError("volume must be non-negative")
    return p, n
