"""One-sided CUSUM on standardized residuals against the frozen reference.

The daily band sees one day at a time; a persistent shift of one predictive SD, or a slow
ramp, never leaves it. Page's (1954) CUSUM accumulates the evidence:

    S_t = min(cap, max(0, S_{t-1} + z_t - k)),       S_0 = 0,      signal when S_t > h,

where z_t is today's standardized residual (bands.rate_normal_score,
continuous.mean_normal_score, calibration's ECE score), ~N(0, 1) on a known-good day. k is
half the shift (in SDs) it is tuned to detect fastest: 1, i.e. 2-SD shifts, because the frozen
centre is itself off by ~1/sqrt(K) SDs every day (0.19 for K = 28) and a smaller k lets that
permanent error walk the statistic up to h (docs/statistics.md section 8.4). h is set from the
in-control average run length ARL0 = 1 / (the per-day false-alarm share the error budget
gives it), through Siegmund's (1985) approximation

    ARL(delta) = (exp(-2 D b) + 2 D b - 1) / (2 D^2),   D = delta - k,   b = h + 1.166,

averaged over the reference's error (``cusum_threshold``). Against the exact (Brook & Evans
1972) Markov-chain value it is within 1% at k = 0.5 and overstates ARL0 by ~6% at k = 1.

``cap`` (h + headroom) bounds the statistic while an alert is open: without it, S after a
month-long shift would take months of good days to come back under h, and the alert would
outlive the shift. ``release_level`` (h / 2) is where S counts as back in control.
The state per cohort x signal (and side) is the one number S, so the daily
job stores it and calls ``cusum_update`` with yesterday's S and today's z. A day without data
(z NaN) leaves S unchanged. For a two-sided monitor run two: one on z, one on -z.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from app.stats._arrays import FloatArray

DEFAULT_K = 1.0
DEFAULT_HEADROOM = 1.0
DEFAULT_RELEASE = 0.5
_SIEGMUND_SHIFT = 1.166
# Gauss-Hermite nodes for averaging the ARL over the reference's error.
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(40)
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def release_level(h: npt.ArrayLike, fraction: float = DEFAULT_RELEASE) -> FloatArray:
    """S at or below which the CUSUM counts as back in control: ``fraction`` x h.

    Hysteresis for alerting.alert_step: an alert opened at S > h resolves only after S has
    come down to this level (and stayed there), so a shift that holds S near its cap never
    resolves on a couple of lucky days.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError("fraction must lie in [0, 1]")
    return np.asarray(fraction * np.asarray(h, dtype=np.float64), dtype=np.float64)


def reference_error_sd(days_used: npt.ArrayLike) -> FloatArray:
    """SD of the frozen centre's error in predictive SDs: ~1/sqrt(K) for K reference days.

    Exact when the K days have equal within-day variance (Var(centre) = (v + tau^2)/K);
    slightly conservative otherwise, since today's predictive SD also carries kappa tau^2.
    """
    days = np.maximum(np.asarray(days_used, dtype=np.float64), 1.0)
    return np.asarray(1.0 / np.sqrt(days), dtype=np.float64)


def siegmund_arl(
    h: npt.ArrayLike, k: npt.ArrayLike = DEFAULT_K, shift: npt.ArrayLike = 0.0
) -> FloatArray:
    """Average run length of the one-sided CUSUM (start 0) when z ~ N(shift, 1)."""
    b = np.asarray(h, dtype=np.float64) + _SIEGMUND_SHIFT
    d = np.asarray(shift, dtype=np.float64) - np.asarray(k, dtype=np.float64)
    small = np.abs(d) < 1e-9
    safe = np.where(small, 1.0, d)
    with np.errstate(over="ignore"):  # a far in-control side: ARL = inf, rate 0
        arl = (np.exp(-2.0 * safe * b) + 2.0 * safe * b - 1.0) / (2.0 * safe**2)
    return np.asarray(np.where(small, b**2, arl), dtype=np.float64)


def cusum_threshold(
    arl0: npt.ArrayLike, k: npt.ArrayLike = DEFAULT_K, reference_sd: npt.ArrayLike = 0.0
) -> FloatArray:
    """h whose in-control alarm rate is 1/ARL0, averaged over the reference's own error.

    The frozen centre is off by b ~ N(0, reference_sd^2) predictive SDs, the same error every
    day, so a row's in-control z has mean b, not 0, and its ARL is siegmund_arl(h, k, b).
    h solves E_b[1 / ARL(h, k, b)] = 1 / ARL0 (Gauss-Hermite over b, then bisection), so
    the budget holds on average over references rather than only for a perfect one; with
    reference_sd = 0 it is the plain inverse of Siegmund's formula. Invariants: h >= 0,
    nondecreasing in ARL0 and in reference_sd; ARL0 = inf gives h = inf.
    """
    kk = np.asarray(k, dtype=np.float64)
    if np.any(kk <= 0):
        raise ValueError("k must be positive")
    arl = np.asarray(arl0, dtype=np.float64)
    sd = np.asarray(reference_sd, dtype=np.float64)
    if np.any(sd < 0):
        raise ValueError("reference_sd must be non-negative")
    arl, kk, sd = np.broadcast_arrays(arl, kk, sd)
    finite = np.isfinite(arl)
    plain = _siegmund_inverse(np.where(finite, arl, 1.0), kk)
    if not np.any(sd > 0):
        return np.asarray(np.where(finite, plain, np.inf), dtype=np.float64)
    target = np.log(np.where(finite, 1.0 / np.maximum(arl, 1e-300), 1.0))

    def log_rate(h: FloatArray) -> FloatArray:
        shifts = sd[..., None] * _NODES
        inv = 1.0 / siegmund_arl(h[..., None], kk[..., None], shifts)
        return np.asarray(np.log(np.sum(_WEIGHTS * inv, axis=-1)), dtype=np.float64)

    lo, hi = plain.copy(), plain + 1.0
    for _ in range(40):  # widen until the rate at hi is below the target
        high = log_rate(hi) > target
        if not np.any(high):
            break
        hi = np.where(high, lo + 2.0 * (hi - lo), hi)
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        above = log_rate(mid) > target
        lo, hi = np.where(above, mid, lo), np.where(above, hi, mid)
    h = np.where(sd > 0, hi, plain)
    return np.asarray(np.where(finite, h, np.inf), dtype=np.float64)


def _siegmund_inverse(arl0: FloatArray, k: FloatArray) -> FloatArray:
    """Solves exp(u) - u - 1 = 2 k^2 ARL0 for u = 2 k b by Newton (convex, started above the
    root, so the iterates decrease to it); h = b - 1.166, floored at 0."""
    c = np.maximum(2.0 * k * k * arl0, 1e-12)
    u = np.maximum(np.log1p(c) + np.log1p(np.log1p(c)) + 1.0, 1e-3)
    for _ in range(60):
        u = u - (np.expm1(u) - u - c) / np.expm1(u)
    return np.asarray(np.maximum(u / (2.0 * k) - _SIEGMUND_SHIFT, 0.0), dtype=np.float64)


def cusum_update(
    statistic: npt.ArrayLike,
    z: npt.ArrayLike,
    k: npt.ArrayLike = DEFAULT_K,
    cap: npt.ArrayLike = np.inf,
) -> FloatArray:
    """Today's S from yesterday's S and today's standardized residual z.

    S = min(cap, max(0, S + z - k)); where z is NaN (no data, not judged) S is unchanged.
    Invariant: 0 <= S <= cap wherever z is finite.
    """
    s = np.asarray(statistic, dtype=np.float64)
    zz = np.asarray(z, dtype=np.float64)
    if np.any(s < 0):
        raise ValueError("a CUSUM statistic is never negative")
    kk = np.asarray(k, dtype=np.float64)
    new = np.minimum(np.maximum(s + zz - kk, 0.0), np.asarray(cap, dtype=np.float64))
    return np.asarray(np.where(np.isfinite(zz), new, s), dtype=np.float64)
