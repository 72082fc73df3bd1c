"""Always-valid bounds for comparing a candidate's event rates with the champion's on live
traffic. Each bound is one side of a confidence sequence: it holds at every moment at once, so
a canary may be looked at after every ingest batch, on every page view or every few minutes,
and stopped the first time a bound crosses its margin, without inflating the error
(docs/statistics.md §12 argues the choices).

Everything here takes counts, never events: the database aggregates, and both constructions
depend on the data through counts alone.

* `betting_lower` / `betting_upper`: exact, nonasymptotic bounds on the mean of observations in
  [0, 1] that take finitely many values: a rate ({0, 1}) or a paired difference rescaled to
  {0, 1/2, 1}. For each candidate mean m the bound bets a grid of constant fractions of its
  capital on the data exceeding m ("diversified Kelly", Waudby-Smith & Ramdas 2023); under the
  null the capital is a nonnegative supermartingale started at 1, so by Ville's inequality it
  ever reaches 1/alpha with probability at most alpha. Constant bets make the capital a product
  over observations, a function of the counts whatever their order.
* `rate_difference_lower`: an asymptotic confidence sequence (Waudby-Smith et al. 2023) for the
  difference of two rates observed in two independent arms of the same traffic, with Robbins'
  (1970) normal-mixture boundary in its one-sided form (Howard et al. 2021).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from app.stats._arrays import FloatArray
from app.stats.lazy import scipy_special as special

DEFAULT_TARGET_TIME = 10_000.0
"""Observations (both arms) at which the normal-mixture boundary is tuned to be narrowest:
half a day at 20,000 calls a day. The width changes slowly away from it."""

# Fractions c of the largest bet that keeps the capital positive: lambda = c/m when betting
# on a mean above m. Geometric, from the small bets that win on small differences of rates
# to bold bets that win fast on large ones; every fraction gets the same share of capital.
BET_FRACTIONS: FloatArray = np.geomspace(1e-3, 0.95, 32)
_BISECTIONS = 52  # the normal-mixture boundary's bisection: relative precision 2^-52
# Betting bounds: 14 halvings of log m over [MIN_MEAN, 1] bracket the root within 0.2%, and
# Newton's method from the rejected side takes it to machine precision in a few steps.
_MIN_MEAN = 1e-12
_BRACKETING = 14
_NEWTON_STEPS = 6


# --- The normal mixture (Robbins 1970; one-sided form, Howard et al. 2021) ----------------


def mixture_rho(alpha: npt.ArrayLike, target_time: float = DEFAULT_TARGET_TIME) -> FloatArray:
    """The mixture's prior precision, in units of intrinsic time, that makes the boundary
    nearly narrowest at `target_time` (Waudby-Smith et al. 2023). Any fixed positive value
    keeps the guarantee; it must not depend on the data."""
    alphas = _checked_alpha(alpha)
    if target_time <= 0:
        raise ValueError("target_time must be positive")
    log_term = 2.0 * np.log(1.0 / alphas)
    return np.asarray(target_time / (log_term + np.log1p(log_term)), dtype=np.float64)


def normal_mixture_log_value(
    s: npt.ArrayLike, time: npt.ArrayLike, rho: npt.ArrayLike
) -> FloatArray:
    """log of the one-sided normal-mixture martingale at sum `s` and intrinsic time `time`:

        M(s, v) = mean over lambda ~ |N(0, 1/rho)| of exp(lambda s - lambda^2 v / 2)
                = 2 sqrt(rho / (v + rho)) exp(s^2 / (2 (v + rho))) Phi(s / sqrt(v + rho)).

    For a process with sub-Gaussian (or, asymptotically, Gaussian) increments of unit variance
    per unit of time it is a nonnegative supermartingale started at 1."""
    s_arr = np.asarray(s, dtype=np.float64)
    rhos = np.asarray(rho, dtype=np.float64)
    w = np.asarray(time, dtype=np.float64) + rhos
    value = (
        math.log(2.0)
        + 0.5 * np.log(rhos / w)
        + s_arr * s_arr / (2.0 * w)
        + special.log_ndtr(s_arr / np.sqrt(w))
    )
    return np.asarray(value, dtype=np.float64)


def normal_mixture_boundary(
    time: npt.ArrayLike, alpha: npt.ArrayLike, rho: npt.ArrayLike
) -> FloatArray:
    """The sum at which the one-sided mixture reaches 1/alpha at intrinsic time `time`, so
    that P(exists v: S_v >= boundary(v)) <= alpha (Ville's inequality).

    log M rises with s (its slope is (x + phi(x)/Phi(x)) / sqrt(v + rho) > 0, x = s/sqrt(v + rho)),
    and M(0) = sqrt(rho / (v + rho)) < 1/alpha, so the crossing is found by bisection above 0.
    The upper end of the bracket is Howard et al.'s (2021) closed form
    sqrt(2 (v + rho) log(sqrt((v + rho) / rho) / (2 alpha) + 1)), at which M >= 1/alpha for
    alpha <= 1/2 (the Mills-ratio bound; docs/statistics.md §12.3): 1-2% above the crossing at
    the alphas canaries use."""
    alphas = _checked_alpha(alpha)
    rhos = np.asarray(rho, dtype=np.float64)
    times = np.asarray(time, dtype=np.float64)
    w = times + rhos
    threshold = np.log(1.0 / alphas)
    lo = np.zeros(np.broadcast(times, alphas, rhos).shape)
    hi = np.broadcast_to(
        np.sqrt(2.0 * w * np.log(np.sqrt(w / rhos) / (2.0 * alphas) + 1.0)), lo.shape
    )
    for _ in range(_BISECTIONS):
        mid = (lo + hi) / 2.0
        reached = normal_mixture_log_value(mid, times, rhos) >= threshold
        lo, hi = np.where(reached, lo, mid), np.where(reached, mid, hi)
    return np.asarray(hi, dtype=np.float64)


def rate_difference_lower(
    x_a: npt.ArrayLike,
    n_a: npt.ArrayLike,
    x_b: npt.ArrayLike,
    n_b: npt.ArrayLike,
    alpha: npt.ArrayLike,
    target_time: float = DEFAULT_TARGET_TIME,
) -> FloatArray:
    """Lower confidence-sequence bound for p_a - p_b from x_a of n_a and x_b of n_b events.

    The arms are two streams of the same traffic. Counting time in observations
    n = n_a + n_b, the difference of the two sample rates is an average of n per-observation
    terms with variance sigma^2 = n (v_a / n_a + v_b / n_b); the bound subtracts
    sigma u(n) / n = se u(n) / sqrt(n), with u the one-sided normal-mixture boundary and se the
    familiar sqrt(v_a / n_a + v_b / n_b). Each arm's v is the larger of p(1 - p) at its own
    smoothed rate (x + 1/2) / (n + 1) and at the pooled one (x_a + x_b + 1/2) / (n_a + n_b + 1).

    Why the floor: an arm's plug-in variance is estimated from the arm's own few events, and
    when that arm is small its estimate is low exactly when its rate is (0-2 events of a
    few hundred), the case in which the difference is overstated. With the champion as the
    small arm (a candidate at 95-99% of traffic) that made false rollbacks 21-90 per 1,000
    at alpha 0.0083 (docs/statistics.md §12.7). The pooled rate, dominated by the large arm,
    cannot collapse with the small one. Only a floor: a fully pooled v understates the
    variance of a small, worse candidate arm (39 per 1,000 at the margin). The floor is at
    least each arm's own consistent estimate, so the bound stays asymptotically valid at every
    time at once (Waudby-Smith et al. 2023), if anything conservative; -1 (nothing shown)
    while an arm is empty."""
    xa, na, xb, nb = _two_arms(x_a, n_a, x_b, n_b)
    safe_na, safe_nb = np.maximum(na, 1.0), np.maximum(nb, 1.0)
    pooled = _bernoulli_variance((xa + xb + 0.5) / (safe_na + safe_nb + 1.0))
    va = np.maximum(_bernoulli_variance((xa + 0.5) / (safe_na + 1.0)), pooled)
    vb = np.maximum(_bernoulli_variance((xb + 0.5) / (safe_nb + 1.0)), pooled)
    se = np.sqrt(va / safe_na + vb / safe_nb)
    time = safe_na + safe_nb
    boundary = normal_mixture_boundary(time, alpha, mixture_rho(alpha, target_time))
    lower = xa / safe_na - xb / safe_nb - se * boundary / np.sqrt(time)
    empty = (na <= 0) | (nb <= 0)
    return np.asarray(np.where(empty, -1.0, np.clip(lower, -1.0, 1.0)), dtype=np.float64)


# --- Betting (Waudby-Smith & Ramdas 2023) ------------------------------------------------


def _split(
    counts: npt.ArrayLike, support: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(log capital of the zero observations per fraction, counts and values of the positive
    ones): a zero observation's factor 1 - c does not depend on m."""
    k = np.asarray(counts, dtype=np.float64)
    y = np.asarray(support, dtype=np.float64)
    positive = y > 0
    zeros = k[..., ~positive].sum(axis=-1)[..., None] * np.log1p(-BET_FRACTIONS)
    return zeros, k[..., positive], y[positive]


def _log_capital(
    m: FloatArray, zeros: FloatArray, counts: FloatArray, values: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """log of the capital after betting that the mean exceeds m, and its derivative in m, per
    row: zero observations' part, then the counts of the positive support values.

    Each of the fractions c in BET_FRACTIONS bets lambda = c / m on every observation y: its
    capital is prod (1 + lambda (y - m)) = prod (1 - c + c y / m) > 0. Under a mean of at most
    m each factor has expectation at most 1. The capital is the average over the fractions."""
    c = BET_FRACTIONS[:, None]
    shifted = 1.0 - c + c * values / m[..., None, None]  # (P, G, K+), each factor
    per_fraction = zeros + np.sum(counts[..., None, :] * np.log(shifted), axis=-1)
    capital = special.logsumexp(per_fraction, axis=-1)
    weights = np.exp(per_fraction - capital[..., None])
    slopes = np.sum(
        counts[..., None, :] * (-c * values / m[..., None, None] ** 2) / shifted, axis=-1
    )
    slope = np.sum(weights * slopes, axis=-1)
    return capital - math.log(len(BET_FRACTIONS)), slope


def betting_lower(
    counts: npt.ArrayLike, support: npt.ArrayLike, alpha: npt.ArrayLike
) -> FloatArray:
    """Exact lower confidence-sequence bound on the mean: the largest m the bets reject
    (capital >= 1/alpha), below which they reject every m. `counts` has the support values on
    its last axis; any leading shape is kept. 0 when nothing above 0 was observed (no bet
    ever wins).

    f(m) = log capital(m) - log(1/alpha) is decreasing and convex in m (a log-sum-exp of sums
    of log(1 - c + c y / m), each decreasing and convex). So after bracketing the root by
    bisection on log m, Newton's method from the rejected side never steps past it: every
    iterate is itself a valid bound, and a few reach machine precision."""
    k = np.asarray(counts, dtype=np.float64)
    y = np.asarray(support, dtype=np.float64)
    if y.ndim != 1 or k.shape[-1:] != y.shape:
        raise ValueError("counts must have one column per support value")
    if np.any(y < 0) or np.any(y > 1) or np.any(k < 0):
        raise ValueError("support must lie in [0, 1] and counts must be nonnegative")
    shape = k.shape[:-1]
    flat = k.reshape(-1, y.size)
    threshold = np.broadcast_to(-np.log(np.asarray(alpha, dtype=np.float64)), shape).reshape(-1)
    if np.any(threshold <= 0):
        raise ValueError("alpha must lie strictly between 0 and 1")
    lower = np.zeros(len(flat))
    live = flat[:, y > 0].sum(axis=1) > 0
    if np.any(live):
        zeros, positive, values = _split(flat[live], y)
        lower[live] = _rejected_up_to(zeros, positive, values, threshold[live])
    return lower.reshape(shape)


def _rejected_up_to(
    zeros: FloatArray, counts: FloatArray, values: FloatArray, threshold: FloatArray
) -> FloatArray:
    """Per row, the root of the decreasing convex f(m) = log capital(m) - threshold in
    (0, 1]; 0 where even m = MIN_MEAN is not rejected. At m = 1 no factor exceeds 1."""
    rows = len(threshold)
    lo, hi = np.full(rows, math.log(_MIN_MEAN)), np.zeros(rows)  # log m: lo rejected, hi not
    none = _log_capital(np.exp(lo), zeros, counts, values)[0] < threshold
    for _ in range(_BRACKETING):
        mid = (lo + hi) / 2.0
        rejected = _log_capital(np.exp(mid), zeros, counts, values)[0] >= threshold
        lo, hi = np.where(rejected, mid, lo), np.where(rejected, hi, mid)
    m, ceiling = np.exp(lo), np.exp(hi)
    rejected_at = m  # the last m known to be rejected: every m below it is too
    for _ in range(_NEWTON_STEPS):
        value, slope = _log_capital(m, zeros, counts, values)
        excess = value - threshold
        rejected_at = np.where(excess >= 0, m, rejected_at)
        # From the rejected side the tangent of a decreasing convex function meets zero at or
        # before the root (rounding may land a hair past it: then the last rejected m stays).
        step = np.where(excess > 0, excess / np.maximum(-slope, 1e-300), 0.0)
        m = np.minimum(m + step, ceiling)
    final = _log_capital(m, zeros, counts, values)[0] >= threshold
    m = np.where(final, m, rejected_at)
    return np.where(none, 0.0, m)


def betting_upper(
    counts: npt.ArrayLike, support: npt.ArrayLike, alpha: npt.ArrayLike
) -> FloatArray:
    """Exact upper bound on the mean: the lower bound of the reflected data 1 - y."""
    reflected = 1.0 - np.asarray(support, dtype=np.float64)
    return np.asarray(1.0 - betting_lower(counts, reflected, alpha), dtype=np.float64)


_RATE_SUPPORT = np.array([0.0, 1.0])
_PAIRED_SUPPORT = np.array([0.0, 0.5, 1.0])


def rate_bounds(
    x: npt.ArrayLike, n: npt.ArrayLike, alpha_lower: npt.ArrayLike, alpha_upper: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Exact confidence-sequence bounds on one rate, x events of n."""
    xs, ns = np.asarray(x, dtype=np.float64), np.asarray(n, dtype=np.float64)
    if np.any((xs < 0) | (xs > ns)):
        raise ValueError("x must lie between 0 and n")
    counts = np.stack([ns - xs, xs], axis=-1)
    return (
        betting_lower(counts, _RATE_SUPPORT, alpha_lower),
        betting_upper(counts, _RATE_SUPPORT, alpha_upper),
    )


def rate_difference_upper(
    x_a: npt.ArrayLike,
    n_a: npt.ArrayLike,
    x_b: npt.ArrayLike,
    n_b: npt.ArrayLike,
    alpha: npt.ArrayLike,
) -> FloatArray:
    """Exact upper confidence-sequence bound for p_a - p_b: arm a's upper bound minus arm b's
    lower bound, each at alpha / 2 (a union bound, so it holds whatever the arms' dependence).
    1 (nothing shown) while an arm is empty."""
    xa, na, xb, nb = _two_arms(x_a, n_a, x_b, n_b)
    half = np.asarray(alpha, dtype=np.float64) / 2.0
    upper_a = rate_bounds(xa, na, half, half)[1]
    lower_b = rate_bounds(xb, nb, half, half)[0]
    empty = (na <= 0) | (nb <= 0)
    return np.asarray(np.where(empty, 1.0, np.clip(upper_a - lower_b, -1.0, 1.0)), dtype=np.float64)


def paired_difference_bounds(
    worse: npt.ArrayLike,
    better: npt.ArrayLike,
    pairs: npt.ArrayLike,
    alpha_lower: npt.ArrayLike,
    alpha_upper: npt.ArrayLike,
) -> tuple[FloatArray, FloatArray]:
    """Exact bounds on the mean paired difference d = candidate - champion in {-1, 0, 1}, from
    the pairs where only the candidate had the event (`worse`), only the champion (`better`),
    and all pairs. d is rescaled to (d + 1) / 2 in {0, 1/2, 1} for the bets."""
    w, b, n = (np.asarray(v, dtype=np.float64) for v in (worse, better, pairs))
    if np.any((w < 0) | (b < 0) | (w + b > n)):
        raise ValueError("worse and better pairs must be nonnegative and at most all pairs")
    counts = np.stack([b, n - w - b, w], axis=-1)
    low = betting_lower(counts, _PAIRED_SUPPORT, alpha_lower)
    high = betting_upper(counts, _PAIRED_SUPPORT, alpha_upper)
    return 2.0 * low - 1.0, 2.0 * high - 1.0


def _bernoulli_variance(p: FloatArray) -> FloatArray:
    return np.asarray(p * (1.0 - p), dtype=np.float64)


def _two_arms(
    x_a: npt.ArrayLike, n_a: npt.ArrayLike, x_b: npt.ArrayLike, n_b: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    arms = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (x_a, n_a, x_b, n_b)))
    xa, na, xb, nb = arms
    if np.any((xa < 0) | (xa > na) | (xb < 0) | (xb > nb)):
        raise ValueError("counts must lie between 0 and their totals")
    return xa, na, xb, nb


def _checked_alpha(alpha: npt.ArrayLike) -> FloatArray:
    alphas = np.asarray(alpha, dtype=np.float64)
    if np.any(alphas <= 0.0) or np.any(alphas > 0.5):
        raise ValueError("alpha must lie in (0, 0.5]")
    return alphas
