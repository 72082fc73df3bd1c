"""Predictive bands for daily rates: is today's count plausible for a known-good day?

The reference (``estimate_rate_reference``) is a random-effects summary of the frozen
reference days: the rate p, the between-day variance tau^2 of the true daily rate, and the
variance of p's own estimate. Today's count X at volume n is then predicted by a
beta-binomial whose beta has mean p and variance

    V = kappa * tau^2 + Var(p_hat)        (kappa: reference.variance_inflation)

so the band widens for the extra-binomial wobble of real traffic (which matters for large
cohorts) and for an uncertain reference (which matters for short windows), and is exactly
binomial in spirit at small volumes, where a dozen requests can page no one. With tau^2 = 0
and a pooled reference of N requests, the beta has N + 1 pseudo-observations: the Bayesian
posterior predictive of a new day given the reference.

Band and test agree by construction: ``rate_predictive_pvalue(x) < alpha`` exactly when x
lies outside ``rate_predictive_band(alpha)`` (both come from the same beta-binomial tail).
Alerts are one-sided (``"upper"``: only increases of a bad-event rate page) unless a monitor
asks for ``"two-sided"``. See docs/statistics.md section 8.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import numpy.typing as npt

from app.stats._arrays import FloatArray, IntArray
from app.stats.lazy import scipy_stats as stats
from app.stats.reference import (
    DEFAULT_DESIGN_TAIL,
    DEFAULT_MAX_TRIM_FRACTION,
    DEFAULT_MIN_DAYS,
    DEFAULT_TRIM_Z,
    Reference,
    dersimonian_laird,
    pool_reference,
    robust_between_var,
    trim_days,
    trim_pvalue,
)

Side = Literal["upper", "lower", "two-sided"]
SIDES: tuple[Side, ...] = ("upper", "lower", "two-sided")
# Normal scores are clipped here: beyond it the CUSUM gains nothing and tails lose precision.
MAX_SCORE = 8.0


def estimate_rate_reference(
    numerators: npt.ArrayLike,
    denominators: npt.ArrayLike,
    *,
    trim_z: float = DEFAULT_TRIM_Z,
    max_trim_fraction: float = DEFAULT_MAX_TRIM_FRACTION,
    min_days: int = DEFAULT_MIN_DAYS,
    groups: npt.ArrayLike | None = None,
) -> Reference:
    """Reference rate, between-day variance and Var(rate) per row from (rows x days) counts.

    A day with denominator 0 is unobserved. Odd days are screened out (reference.screen_days),
    then DerSimonian-Laird runs on daily rates with binomial within-day variance
    p(1-p)/n_t, re-evaluated at the random-effects rate (two passes). The centre is pulled
    half an event towards 1/2 (Jeffreys), so a clean history still gives a finite band:
    centre = (p_re * N + 0.5) / (N + 1) with N the kept requests. Invariants: 0 < centre < 1
    and center_var <= centre(1 - centre) / (N + 1) where valid.

    With ``groups`` (an integer per row; negative: alone), tau^2 is partially pooled across
    the rows of a group on the relative scale tau^2 / p^2 (the squared coefficient of
    variation of the day's rate; reference.pool_reference, pooling.py) before the centre is
    pulled.
    """
    x = np.atleast_2d(np.asarray(numerators, dtype=np.float64))
    n = np.atleast_2d(np.asarray(denominators, dtype=np.float64))
    if x.shape != n.shape:
        raise ValueError("numerators and denominators must have one shape")
    if np.any(n < 0) or np.any(x < 0) or np.any(x > n) or not np.all(np.isfinite(x)):
        raise ValueError("need 0 <= numerator <= denominator")
    observed = n > 0
    safe_n = np.where(observed, n, 1.0)
    y = np.where(observed, x / safe_n, 0.0)
    pooled = (np.where(observed, x, 0.0).sum(1) + 0.5) / (np.where(observed, n, 0.0).sum(1) + 1.0)
    kept = _screen_rate_days(x, n, y, observed, pooled, trim_z, max_trim_fraction)
    total = np.where(kept, n, 0.0).sum(1)
    rate = (np.where(kept, x, 0.0).sum(1) + 0.5) / (total + 1.0)
    ref = dersimonian_laird(y, _binomial_var(rate, safe_n), kept, min_days=min_days)
    for _ in range(2):
        rate = np.where(ref.valid, (ref.center * total + 0.5) / (total + 1.0), rate)
        ref = dersimonian_laird(y, _binomial_var(rate, safe_n), kept, min_days=min_days)
    if groups is not None:
        scale = np.where(ref.valid, np.square(rate), np.nan)
        ref = pool_reference(y, _binomial_var(rate, safe_n), kept, ref, scale, groups)
    center = np.where(ref.valid, (ref.center * total + 0.5) / (total + 1.0), np.nan)
    bern = center * (1.0 - center)
    # Var of the centre plus one pseudo-observation's worth of information (the half-counts).
    center_var = 1.0 / (1.0 / ref.center_var + 1.0 / bern)
    return Reference(
        center=center,
        between_var=ref.between_var,
        center_var=center_var,
        days_used=ref.days_used,
        days_excluded=(observed.sum(1) - ref.days_used).astype(np.int64),
        valid=ref.valid,
    )


def predictive_beta(
    reference: Reference, design_tail: float | None = DEFAULT_DESIGN_TAIL
) -> tuple[FloatArray, FloatArray]:
    """(a, b) of the beta for a new day's true rate: mean = centre, variance = V (clipped).

    a + b + 1 = p(1-p)/V; V is capped at 0.999 p(1-p) so a, b > 0 always.
    """
    p = reference.center
    bern = p * (1.0 - p)
    var = np.minimum(reference.predictive_var(design_tail), 0.999 * bern)
    size = bern / var - 1.0
    return p * size, (1.0 - p) * size


def rate_predictive_pvalue(
    count: npt.ArrayLike,
    n: npt.ArrayLike,
    reference: Reference,
    side: Side = "upper",
    design_tail: float = DEFAULT_DESIGN_TAIL,
) -> FloatArray:
    """P-value of today's ``count`` of ``n`` under the reference's beta-binomial predictive.

    upper: P(X >= x); lower: P(X <= x); two-sided: min(1, 2 min of both). NaN where n = 0 or
    the reference is not valid (not judged).
    """
    x, size, a, b, ok = _prepare(count, n, reference, design_tail)
    upper = upper_tail(x, size, a, b)
    lower = stats.betabinom.cdf(x, size, a, b)
    p = _combine(upper, lower, side)
    return np.asarray(np.where(ok, np.clip(p, 0.0, 1.0), np.nan), dtype=np.float64)


def rate_min_pvalue(
    n: npt.ArrayLike,
    reference: Reference,
    side: Side = "upper",
    design_tail: float = DEFAULT_DESIGN_TAIL,
) -> FloatArray:
    """Smallest p-value any count could reach at volume n (Tarone's p_min); 1 where n = 0.

    upper: P(X = n); lower: P(X = 0); two-sided: min(1, 2 min of both). Depends on the volume
    and the reference only, never on today's count, so excluding hypotheses on it keeps the
    error budget valid.
    """
    size = np.asarray(n, dtype=np.float64)
    a, b = predictive_beta(reference, design_tail)
    ok = (size > 0) & reference.valid
    s = np.where(ok, size, 1.0)
    aa, bb = np.where(ok, a, 1.0), np.where(ok, b, 1.0)
    upper = stats.betabinom.pmf(s, s, aa, bb)
    lower = stats.betabinom.pmf(0, s, aa, bb)
    return np.asarray(np.where(ok, _combine(upper, lower, side), 1.0), dtype=np.float64)


def rate_predictive_band(
    n: npt.ArrayLike,
    reference: Reference,
    alpha: npt.ArrayLike,
    side: Side = "upper",
    design_tail: float = DEFAULT_DESIGN_TAIL,
) -> tuple[FloatArray, FloatArray]:
    """(low, high) rates at volume n: a count is outside iff its p-value is below alpha.

    upper: high = max{x/n : P(X >= x) >= alpha}, low = 0; lower: low = min{x/n : P(X <= x) >=
    alpha}, high = 1; two-sided: both at alpha/2. n = 0, an invalid reference or alpha = 0
    (an excluded hypothesis) gives (0, 1).
    """
    size = np.asarray(n, dtype=np.int64)
    level = np.broadcast_to(np.asarray(alpha, dtype=np.float64), size.shape)
    a, b = predictive_beta(reference, design_tail)
    ok = (size > 0) & reference.valid & (level > 0)
    s = np.where(ok, size, 1)
    aa, bb = np.where(ok, a, 1.0), np.where(ok, b, 1.0)
    tail = level / 2.0 if side == "two-sided" else level
    high = np.asarray(s, dtype=np.float64)
    low = np.zeros_like(high)
    if side in ("upper", "two-sided"):
        # Largest x in [0, n] with sf(x - 1) >= tail; sf(-1) = 1 so x = 0 always qualifies.
        high = _last_true(lambda k: stats.betabinom.sf(k - 1, s, aa, bb) >= tail, s)
    if side in ("lower", "two-sided"):
        # Smallest x with cdf(x) >= tail: one past the largest x with cdf(x) < tail.
        low = _last_true(lambda k: stats.betabinom.cdf(k - 1, s, aa, bb) < tail, s)
    safe = np.asarray(s, dtype=np.float64)
    return (
        np.asarray(np.where(ok, low / safe, 0.0), dtype=np.float64),
        np.asarray(np.where(ok, high / safe, 1.0), dtype=np.float64),
    )


def rate_normal_score(
    count: npt.ArrayLike,
    n: npt.ArrayLike,
    reference: Reference,
    design_tail: float | None = None,
) -> FloatArray:
    """Standardized residual for the CUSUM: z = Phi^-1 of the mid-p predictive CDF at x.

    z = isf(P(X > x) + P(X = x)/2), clipped to +-MAX_SCORE: near N(0, 1) on a known-good day
    even at a handful of events, where a Pearson residual is badly skewed. Positive = more
    events than expected. NaN where n = 0 or the reference is not valid. The predictive
    uses the variance factor df/(df - 2) by default (Reference.predictive_var(None)): the
    CUSUM sums scores, so their variance matters, not a far tail.
    """
    x, size, a, b, ok = _prepare(count, n, reference, design_tail)
    mid = upper_tail(x + 1, size, a, b) + 0.5 * stats.betabinom.pmf(x, size, a, b)
    z = np.clip(stats.norm.isf(np.clip(mid, 0.0, 1.0)), -MAX_SCORE, MAX_SCORE)
    return np.asarray(np.where(ok, z, np.nan), dtype=np.float64)


def upper_tail(
    x: npt.ArrayLike, n: npt.ArrayLike, a: npt.ArrayLike, b: npt.ArrayLike
) -> FloatArray:
    """P(X >= x) for X ~ BetaBinomial(n, a, b), accurate far into the tail.

    scipy computes the survival function as 1 - cdf, which loses everything below ~1e-10;
    where that result is below 1e-6 the tail is summed directly from x over 40 SDs (+50).
    """
    xx, nn, aa, bb = np.broadcast_arrays(
        np.asarray(x, dtype=np.int64),
        np.asarray(n, dtype=np.int64),
        np.asarray(a, dtype=np.float64),
        np.asarray(b, dtype=np.float64),
    )
    out = np.asarray(stats.betabinom.sf(xx - 1, nn, aa, bb), dtype=np.float64).copy()
    small = (out < 1e-6) & (xx <= nn)
    if np.any(small):
        xs, ns, as_, bs = xx[small], nn[small], aa[small], bb[small]
        total = as_ + bs
        sd = np.sqrt(ns * as_ * bs * (total + ns) / (total**2 * (total + 1.0)))
        width = np.minimum(ns - xs, np.ceil(40.0 * sd + 50.0)).astype(np.int64)
        k = xs[:, None] + np.arange(int(width.max()) + 1)[None, :]
        inside = k <= (xs + width)[:, None]
        pmf = stats.betabinom.pmf(np.where(inside, k, 0), ns[:, None], as_[:, None], bs[:, None])
        out[small] = np.sum(np.where(inside, pmf, 0.0), axis=1)
    return np.asarray(np.where(xx > nn, 0.0, out), dtype=np.float64)


def _prepare(
    count: npt.ArrayLike, n: npt.ArrayLike, reference: Reference, design_tail: float | None
) -> tuple[IntArray, IntArray, FloatArray, FloatArray, npt.NDArray[np.bool_]]:
    x = np.asarray(count, dtype=np.int64)
    size = np.asarray(n, dtype=np.int64)
    if np.any(x < 0) or np.any(x > size):
        raise ValueError("count must lie between 0 and n")
    a, b = predictive_beta(reference, design_tail)
    ok = (size > 0) & reference.valid
    return (
        np.where(ok, x, 0),
        np.where(ok, size, 1),
        np.where(ok, a, 1.0),
        np.where(ok, b, 1.0),
        np.asarray(ok),
    )


def _combine(upper: FloatArray, lower: FloatArray, side: Side) -> FloatArray:
    if side == "upper":
        return np.asarray(upper, dtype=np.float64)
    if side == "lower":
        return np.asarray(lower, dtype=np.float64)
    if side == "two-sided":
        return np.asarray(np.minimum(1.0, 2.0 * np.minimum(upper, lower)), dtype=np.float64)
    raise ValueError(f"side must be one of {SIDES}")


def _last_true(predicate: Callable[[IntArray], npt.ArrayLike], n: IntArray) -> FloatArray:
    """Largest k in [0, n] with predicate(k) true, for a predicate true at 0 and monotone."""
    lo = np.zeros_like(n)
    hi = n.copy()
    while np.any(lo < hi):
        mid = (lo + hi + 1) // 2
        good = np.asarray(predicate(mid), dtype=np.bool_)
        lo = np.where(good, mid, lo)
        hi = np.where(good, hi, mid - 1)
    return np.asarray(lo, dtype=np.float64)


def _screen_rate_days(
    x: FloatArray,
    n: FloatArray,
    y: FloatArray,
    observed: npt.NDArray[np.bool_],
    pooled: FloatArray,
    trim_z: float,
    max_trim_fraction: float,
) -> npt.NDArray[np.bool_]:
    """Odd reference days by an exact beta-binomial tail around a robust centre.

    Centre: the median daily rate (the pooled rate when the median is 0 or 1, i.e. a few
    events a day); spread: the median-based tau^2 (reference.robust_between_var). A day is
    odd when its two-sided tail probability is below that of a normal beyond trim_z; the
    exact tail keeps a small cohort's ordinary 12-of-100 day from looking like an incident.
    """
    rates = np.where(observed, y, np.nan)
    has = np.any(observed, axis=1)
    median = np.full(y.shape[0], np.nan)
    if np.any(has):
        median[has] = np.nanmedian(rates[has], axis=1)
    center = np.where((median > 0) & (median < 1), median, pooled)
    safe_n = np.where(observed, n, 1.0)
    resid = np.where(observed, y - center[:, None], 0.0)
    tau2 = robust_between_var(resid, _binomial_var(center, safe_n), observed)
    bern = center * (1.0 - center)
    var = np.minimum(tau2 + bern / (np.where(observed, n, 0.0).sum(1) + 1.0), 0.999 * bern)
    size = (bern / var - 1.0)[:, None]
    a, b = center[:, None] * size, (1.0 - center[:, None]) * size
    upper = stats.betabinom.sf(x - 1, safe_n, a, b)
    lower = stats.betabinom.cdf(x, safe_n, a, b)
    pvalue = np.minimum(1.0, 2.0 * np.minimum(upper, lower))
    return trim_days(pvalue, observed, trim_pvalue(trim_z), max_trim_fraction)


def _binomial_var(rate: FloatArray, n: FloatArray) -> FloatArray:
    r = np.asarray(rate, dtype=np.float64)[:, None]
    return np.asarray(r * (1.0 - r) / n, dtype=np.float64)
