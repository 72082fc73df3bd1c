"""Bands for daily means and quantiles of continuous, skewed values (latency, tokens, Brier).

Latency and token counts are right-skewed with long tails, so they are judged on the log
scale (tokens as log(1 + tokens)), where a multiplicative slow-down is a shift and the
spread is roughly constant. Per day and cohort the SQL provides, for each metric:

    count, sum of log x, sum of (log x)^2, p50 and p95 (of x; logs are taken here)

``log_signal`` turns them into one daily value and its within-day sampling variance:

- ``"mean"``: the mean of log x (log of the geometric mean), variance s^2 / n;
- ``"p50"`` / ``"p95"``: log of the day's quantile, with the large-sample variance of a
  sample quantile, q(1 - q) / (n phi(z_q)^2) * s^2, using a normal density on the log scale.

The reference is the random-effects model of reference.py (so day-to-day wobble beyond the
sampling variance is estimated, not assumed away, and any misfit of the quantile variance
formula is absorbed into tau^2), and today's value is judged against a normal predictive

    value ~ N(centre, v_today + kappa tau^2 + Var(centre)).

Increases page (``side="upper"``); a monitor may choose two-sided. The same functions band
any daily mean with a known within-day variance (the Brier score, calibration.py).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from app.stats._arrays import FloatArray
from app.stats.bands import MAX_SCORE, Side
from app.stats.lazy import scipy_stats as stats
from app.stats.reference import (
    DEFAULT_DESIGN_TAIL,
    DEFAULT_MAX_TRIM_FRACTION,
    DEFAULT_MIN_DAYS,
    DEFAULT_TRIM_Z,
    Reference,
    pool_reference,
    robust_random_effects,
)

LogStatistic = Literal["mean", "p50", "p95"]
# Below these many values a day's value is not judged (normal approximation; a p95 needs
# about five values above it).
MIN_COUNT: dict[str, int] = {"mean": 30, "p50": 30, "p95": 100}
_QUANTILE = {"p50": 0.5, "p95": 0.95}


def log_moments(
    count: npt.ArrayLike, sum_log: npt.ArrayLike, sum_log_sq: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """(mean, sample variance) of log values from the day's sums; NaN where count < 2."""
    n = np.asarray(count, dtype=np.float64)
    s1 = np.asarray(sum_log, dtype=np.float64)
    s2 = np.asarray(sum_log_sq, dtype=np.float64)
    safe = np.where(n > 1, n, 2.0)
    mean = s1 / safe
    var = np.maximum(s2 - safe * mean**2, 0.0) / (safe - 1.0)
    return (
        np.asarray(np.where(n > 1, mean, np.nan), dtype=np.float64),
        np.asarray(np.where(n > 1, var, np.nan), dtype=np.float64),
    )


def log_signal(
    statistic: LogStatistic,
    count: npt.ArrayLike,
    mean_log: npt.ArrayLike,
    var_log: npt.ArrayLike,
    quantile: npt.ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray]:
    """(daily value on the log scale, its within-day sampling variance); NaN when not judged.

    ``quantile`` is the day's p50 or p95 of x itself (> 0; take 1 + tokens for tokens).
    Invariant: the variance is positive and finite wherever the value is finite.
    """
    n = np.asarray(count, dtype=np.float64)
    var = np.asarray(var_log, dtype=np.float64)
    enough = n >= MIN_COUNT[statistic]
    safe_n = np.where(enough, n, 1.0)
    # A floor so a day of identical values does not claim zero sampling error.
    spread = np.maximum(np.where(np.isfinite(var), var, 0.0), 1e-6)
    if statistic == "mean":
        value = np.asarray(mean_log, dtype=np.float64)
        within = spread / safe_n
    else:
        if quantile is None:
            raise ValueError(f"{statistic} needs the day's quantile")
        q = _QUANTILE[statistic]
        raw = np.asarray(quantile, dtype=np.float64)
        value = np.log(np.where(raw > 0, raw, np.nan))
        density = stats.norm.pdf(stats.norm.ppf(q))
        within = q * (1.0 - q) / density**2 * spread / safe_n
    ok = enough & np.isfinite(value)
    return (
        np.asarray(np.where(ok, value, np.nan), dtype=np.float64),
        np.asarray(np.where(ok, within, np.nan), dtype=np.float64),
    )


# Normal quantiles of the log-normal fit used for the daily p50 / p95 of latency and tokens.
LOGNORMAL_Z: dict[str, float] = {"p50": 0.0, "p95": 1.6448536269514722}
"""Standard normal quantiles of each percentile (p95: scipy's norm.ppf(0.95), written out so
importing this module does not load scipy; tests/stats check the literal)."""


def lognormal_quantile(
    statistic: str, mean_log: npt.ArrayLike, var_log: npt.ArrayLike
) -> FloatArray:
    """log of the ``statistic`` ("p50" or "p95") quantile of the log-normal with these log
    moments: mean + z_q sd. For display (no minimum count)."""
    z = LOGNORMAL_Z[statistic]
    sd = np.sqrt(np.maximum(np.asarray(var_log, dtype=np.float64), 0.0))
    return np.asarray(np.asarray(mean_log, dtype=np.float64) + z * sd, dtype=np.float64)


def lognormal_quantile_signal(
    statistic: str, count: npt.ArrayLike, mean_log: npt.ArrayLike, var_log: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """(log quantile of the fitted log-normal, its sampling variance); NaN when not judged.

    The day's p50 / p95 from its log moments (count, mean and variance of log x), which the
    rollup can regroup exactly across cohorts, unlike order statistics. Value m + z s with
    z = Phi^-1(q); for a normal sample m and s are independent, Var(m) = s^2 / n and
    Var(s) ~ s^2 / (2 (n - 1)), so Var = s^2 / n + z^2 s^2 / (2 (n - 1)) (delta method).
    A tail that fattens shows as a larger s, so the fitted p95 rises with it. Below
    MIN_COUNT[statistic] values the day is not judged.
    """
    n = np.asarray(count, dtype=np.float64)
    var = np.asarray(var_log, dtype=np.float64)
    z = LOGNORMAL_Z[statistic]
    enough = n >= MIN_COUNT[statistic]
    safe_n = np.where(enough, n, 2.0)
    spread = np.maximum(np.where(np.isfinite(var), var, 0.0), 1e-6)
    value = lognormal_quantile(statistic, mean_log, spread)
    within = spread / safe_n + z * z * spread / (2.0 * (safe_n - 1.0))
    ok = enough & np.isfinite(value)
    return (
        np.asarray(np.where(ok, value, np.nan), dtype=np.float64),
        np.asarray(np.where(ok, within, np.nan), dtype=np.float64),
    )


def estimate_mean_reference(
    values: npt.ArrayLike,
    within_var: npt.ArrayLike,
    *,
    trim_z: float = DEFAULT_TRIM_Z,
    max_trim_fraction: float = DEFAULT_MAX_TRIM_FRACTION,
    min_days: int = DEFAULT_MIN_DAYS,
    groups: npt.ArrayLike | None = None,
) -> Reference:
    """Reference for a daily mean-type signal from (rows x days) values and their variances.

    NaN values are unobserved days. Robust screening then DerSimonian-Laird (reference.py).
    With ``groups`` (an integer per row; negative: alone), tau^2 is partially pooled across
    the rows of a group on the absolute scale (reference.pool_reference; pooling.py).
    """
    y = np.atleast_2d(np.asarray(values, dtype=np.float64))
    v = np.atleast_2d(np.asarray(within_var, dtype=np.float64))
    observed = np.isfinite(y) & np.isfinite(v) & (v > 0)
    ref, kept = robust_random_effects(
        y, v, observed, trim_z=trim_z, max_trim_fraction=max_trim_fraction, min_days=min_days
    )
    if groups is None:
        return ref
    return pool_reference(y, v, kept, ref, np.ones(y.shape[0]), groups)


def mean_predictive_sd(
    within_var: npt.ArrayLike,
    reference: Reference,
    design_tail: float | None = DEFAULT_DESIGN_TAIL,
) -> FloatArray:
    """SD of today's value around the reference centre: sqrt(v_today + kappa tau^2 + Var)."""
    v = np.asarray(within_var, dtype=np.float64)
    return np.asarray(np.sqrt(v + reference.predictive_var(design_tail)), dtype=np.float64)


def mean_normal_score(
    value: npt.ArrayLike,
    within_var: npt.ArrayLike,
    reference: Reference,
    design_tail: float | None = None,
) -> FloatArray:
    """(value - centre) / predictive SD, clipped to +-MAX_SCORE; NaN when not judged.

    Uses the variance factor df/(df - 2) on tau^2 by default (see bands.rate_normal_score).
    """
    y = np.asarray(value, dtype=np.float64)
    z = (y - reference.center) / mean_predictive_sd(within_var, reference, design_tail)
    ok = np.isfinite(z) & reference.valid
    return np.asarray(np.where(ok, np.clip(z, -MAX_SCORE, MAX_SCORE), np.nan), dtype=np.float64)


def mean_predictive_pvalue(
    value: npt.ArrayLike,
    within_var: npt.ArrayLike,
    reference: Reference,
    side: Side = "upper",
    design_tail: float = DEFAULT_DESIGN_TAIL,
) -> FloatArray:
    """Normal predictive p-value of today's value; NaN when not judged."""
    y = np.asarray(value, dtype=np.float64)
    z = (y - reference.center) / mean_predictive_sd(within_var, reference, design_tail)
    if side == "upper":
        p = stats.norm.sf(z)
    elif side == "lower":
        p = stats.norm.cdf(z)
    elif side == "two-sided":
        p = np.minimum(1.0, 2.0 * stats.norm.sf(np.abs(z)))
    else:
        raise ValueError("side must be upper, lower or two-sided")
    ok = np.isfinite(z) & reference.valid
    return np.asarray(np.where(ok, p, np.nan), dtype=np.float64)


def mean_predictive_band(
    within_var: npt.ArrayLike,
    reference: Reference,
    alpha: npt.ArrayLike,
    side: Side = "upper",
    design_tail: float = DEFAULT_DESIGN_TAIL,
) -> tuple[FloatArray, FloatArray]:
    """(low, high) on the value's scale; outside iff the p-value is below alpha.

    One-sided bands are open on the other side (-inf or +inf); alpha = 0 gives (-inf, inf).
    Exponentiate the log-scale edges to draw them in milliseconds or tokens.
    """
    sd = mean_predictive_sd(within_var, reference, design_tail)
    level = np.asarray(alpha, dtype=np.float64)
    tail = level / 2.0 if side == "two-sided" else level
    with np.errstate(divide="ignore"):
        z = np.where(level > 0, stats.norm.isf(np.maximum(tail, 1e-300)), np.inf)
    high = reference.center + z * sd if side != "lower" else np.full_like(sd, np.inf)
    low = reference.center - z * sd if side != "upper" else np.full_like(sd, -np.inf)
    return np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
