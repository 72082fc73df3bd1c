"""One error budget per model-day, shared by every cohort x signal and both rules.

The budget ``alpha`` is the expected number of false alerts per model and day (a per-day
union bound, so it also bounds the probability of any false alert that day). Each
hypothesis i (cohort x signal) has a weight w_i: the whole population and declared
high-risk cohorts weigh more, so they get larger shares and detect sooner. Its weight is
split between the two rules: a share ``band_share`` for today's band test and the rest for
the CUSUM, whose threshold h is set so its per-day false-alarm rate 1/ARL0 equals its share.

Shares go only to hypotheses that can use them (Tarone 1990, weighted): a hypothesis whose
minimum achievable p-value (e.g. a cohort with a handful of requests today: even all of them
failing would not be significant) exceeds its share is left out of the count, so it does not
dilute everyone else's. Items are ordered by p_min / w; the largest prefix S whose every
member satisfies p_min_i <= alpha w_i / W(S) is tested, each at alpha w_i / W(S); the rest at
0. The p_min depend on volumes and the frozen reference only, never on today's outcomes, so
the total stays <= alpha. Unweighted, this tests every hypothesis Tarone's (1990) rule tests,
at a level at least as large (Tarone's alpha / K may leave part of alpha unspent).
CUSUM items pass p_min = 0 when they have data today (repeated
days can always accumulate to h) and 1 when they do not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.stats._arrays import BoolArray, FloatArray
from app.stats.cusum import DEFAULT_K, cusum_threshold

# Default budget: one false alert per model in 500 days (about one a year and a half).
DEFAULT_DAILY_ALPHA = 0.002
POPULATION_WEIGHT = 4.0
HIGH_RISK_WEIGHT = 2.0
DEFAULT_BAND_SHARE = 0.5


@dataclass(frozen=True)
class Allocation:
    """Per hypothesis: the band's alpha, the CUSUM's per-day alpha and its threshold h.

    Invariants: sum(band_alpha) + sum(cusum_alpha) <= alpha; an item at 0 is not tested
    (band never fires; h = inf); every tested band item can reach significance.
    """

    band_alpha: FloatArray
    cusum_alpha: FloatArray
    cusum_h: FloatArray

    @property
    def band_tested(self) -> BoolArray:
        return np.asarray(self.band_alpha > 0, dtype=np.bool_)


def hypothesis_weights(
    is_population: npt.ArrayLike,
    is_high_risk: npt.ArrayLike,
    signal_weight: npt.ArrayLike = 1.0,
    population_weight: float = POPULATION_WEIGHT,
    high_risk_weight: float = HIGH_RISK_WEIGHT,
) -> FloatArray:
    """w = signal weight x (population_weight for the whole population, high_risk_weight for
    a declared high-risk cohort, 1 otherwise). Positive wherever signal_weight is."""
    population = np.asarray(is_population, dtype=np.bool_)
    risky = np.asarray(is_high_risk, dtype=np.bool_)
    cohort = np.where(population, population_weight, np.where(risky, high_risk_weight, 1.0))
    return np.asarray(cohort * np.asarray(signal_weight, dtype=np.float64), dtype=np.float64)


def tarone_weighted(p_min: npt.ArrayLike, weights: npt.ArrayLike, alpha: float) -> FloatArray:
    """Per-item levels alpha w_i / W(S) on the largest self-consistent prefix S, else 0.

    Unweighted (all w = 1) this tests the m items with the smallest p_min, m the largest with
    p_min_(m) <= alpha / m: Bonferroni over the hypotheses that can reach significance.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must lie in (0, 1)")
    p = np.asarray(p_min, dtype=np.float64).ravel()
    w = np.asarray(weights, dtype=np.float64).ravel()
    if p.shape != w.shape or np.any(w < 0) or np.any(~np.isfinite(p)):
        raise ValueError("p_min and weights must be finite, of one shape, weights >= 0")
    level = np.zeros_like(p)
    candidate = w > 0
    if not np.any(candidate):
        return level.reshape(np.shape(p_min))
    idx = np.flatnonzero(candidate)
    ratio = p[idx] / w[idx]
    order = idx[np.argsort(ratio, kind="stable")]
    cumulative = np.cumsum(w[order])
    fits = (p[order] / w[order]) * cumulative <= alpha
    # p_min/w and the cumulative weight both grow along the order: `fits` is a prefix.
    m = int(np.count_nonzero(fits))
    if m:
        chosen = order[:m]
        level[chosen] = alpha * w[chosen] / cumulative[m - 1]
    return level.reshape(np.shape(p_min))


def allocate(
    weights: npt.ArrayLike,
    band_p_min: npt.ArrayLike,
    has_data: npt.ArrayLike,
    alpha: float = DEFAULT_DAILY_ALPHA,
    band_share: float = DEFAULT_BAND_SHARE,
    k: npt.ArrayLike = DEFAULT_K,
    cusum_sides: int = 1,
    reference_sd: npt.ArrayLike = 0.0,
) -> Allocation:
    """The day's allocation over hypotheses (arrays of one shape) for both rules jointly.

    ``band_p_min`` is each band's minimum achievable p-value at today's volume
    (bands.rate_min_pvalue; 0 for continuous signals that are judged at all, 1 when not).
    A CUSUM with ``cusum_sides`` = 2 splits its share between its two statistics. ``k`` is
    the CUSUM allowance and ``reference_sd`` the frozen centre's error in predictive SDs
    (cusum.reference_error_sd), both per hypothesis; h depends on them.
    """
    if not 0.0 <= band_share <= 1.0:
        raise ValueError("band_share must lie in [0, 1]")
    w = np.asarray(weights, dtype=np.float64)
    pmin = np.broadcast_to(np.asarray(band_p_min, dtype=np.float64), w.shape)
    data = np.broadcast_to(np.asarray(has_data, dtype=np.bool_), w.shape)
    item_p = np.concatenate([pmin.ravel(), np.where(data, 0.0, 1.0).ravel()])
    item_w = np.concatenate([(w * band_share).ravel(), (w * (1.0 - band_share)).ravel()])
    level = tarone_weighted(item_p, item_w, alpha)
    band = level[: w.size].reshape(w.shape)
    cusum = level[w.size :].reshape(w.shape)
    per_side = cusum / cusum_sides
    with np.errstate(divide="ignore"):
        arl0 = np.where(per_side > 0, 1.0 / np.maximum(per_side, 1e-300), np.inf)
    return Allocation(
        band_alpha=band, cusum_alpha=cusum, cusum_h=cusum_threshold(arl0, k, reference_sd)
    )
