"""A frozen reference from a set of known-good days: centre, day-to-day spread, and how sure.

Every drift signal is a daily estimate y_t with a within-day sampling variance v_t (binomial
for a rate, s^2/n for a mean, ...). Real traffic moves more than v_t from day to day, so the
reference is a random-effects model (DerSimonian & Laird 1986):

    y_t = mu + u_t + e_t,   u_t ~ (0, tau^2) between days,   e_t ~ (0, v_t) within the day.

``robust_random_effects`` estimates mu, tau^2 and Var(mu_hat) from the reference days after
screening out a few odd days (incidents that slipped into the window): a median-based
estimate of tau^2, which a minority of wild days cannot inflate, decides which days lie more
than ``trim_z`` predictive SDs from the median; the DerSimonian-Laird moment estimates are
then computed on the remaining days. All functions are vectorised over rows (one row per
cohort x signal) and columns (days); a day without data is marked unobserved.

``variance_inflation`` turns the uncertainty of tau^2 (estimated from only K days) into a
factor on tau^2 so that, when between-day variation dominates, the predictive tail matches a
Student t with K - 1 degrees of freedom. See docs/statistics.md section 8.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.stats._arrays import BoolArray, FloatArray, IntArray
from app.stats.lazy import scipy_stats as stats
from app.stats.pooling import between_var_moments, pooled_between_var

# Median of chi-square(1): E-median of z^2 for a normal z; the robust tau^2 solves for it.
_CHI2_1_MEDIAN = 0.454936423119572  # stats.chi2.ppf(0.5, 1), a constant: scipy loads lazily
DEFAULT_TRIM_Z = 4.0
DEFAULT_MAX_TRIM_FRACTION = 0.25
DEFAULT_MIN_DAYS = 5
# The predictive variance is inflated so its tail matches Student t at this one-sided level,
# the order of a single hypothesis' share of the daily error budget.
DEFAULT_DESIGN_TAIL = 1e-4


@dataclass(frozen=True)
class Reference:
    """Per row (cohort x signal): the frozen reference of one daily signal.

    Invariants: ``between_var >= 0``; ``center_var > 0`` where ``valid``; ``days_used +
    days_excluded`` = observed days; ``valid`` iff ``days_used >= min_days``. Rows that are
    not valid carry NaN centre and variances and must not be judged.
    """

    center: FloatArray
    between_var: FloatArray
    center_var: FloatArray
    days_used: IntArray
    days_excluded: IntArray
    valid: BoolArray

    @property
    def df(self) -> IntArray:
        """Degrees of freedom of the between-day variance estimate (days used - 1, >= 1)."""
        return np.maximum(self.days_used - 1, 1)

    def predictive_var(self, design_tail: float | None = DEFAULT_DESIGN_TAIL) -> FloatArray:
        """Variance of a new day's true value around ``center``: kappa * tau^2 + Var(center).

        kappa = variance_inflation(df, design_tail) for a band judged at a far tail;
        design_tail=None gives the variance factor of Student t, df / (df - 2), for
        standardized residuals that are summed (the CUSUM), whose variance, not their far
        tail, must be right. Excludes today's own within-day sampling variance.
        """
        kappa = (
            score_inflation(self.df)
            if design_tail is None
            else variance_inflation(self.df, design_tail)
        )
        return np.asarray(kappa * self.between_var + self.center_var, dtype=np.float64)


def variance_inflation(df: npt.ArrayLike, design_tail: float = DEFAULT_DESIGN_TAIL) -> FloatArray:
    """(t_df quantile / normal quantile)^2 at the one-sided ``design_tail``; >= 1, -> 1 as df grows.

    With tau^2 estimated from df + 1 days, (y - mu) / sqrt(tau_hat^2) is roughly t_df, not
    normal; multiplying tau_hat^2 by this factor makes the normal (or beta-binomial) tail at
    ``design_tail`` equal to the t tail there.
    """
    if not 0.0 < design_tail < 0.5:
        raise ValueError("design_tail must lie in (0, 0.5)")
    nu = np.maximum(np.asarray(df, dtype=np.float64), 1.0)
    ratio = stats.t.isf(design_tail, nu) / stats.norm.isf(design_tail)
    return np.asarray(ratio**2, dtype=np.float64)


def score_inflation(df: npt.ArrayLike) -> FloatArray:
    """df / (df - 2), the variance of Student t_df (for df > 2; the tail factor at 1e-4 below).

    E[tau^2 / tau_hat^2] for a chi-square-distributed estimate on df degrees of freedom is
    df / (df - 2): the factor that keeps a residual standardized by tau_hat at unit variance
    on average over references.
    """
    nu = np.asarray(df, dtype=np.float64)
    ratio = nu / np.maximum(nu - 2.0, 1e-9)
    return np.asarray(
        np.where(nu > 2.0, ratio, variance_inflation(np.maximum(nu, 1.0))), dtype=np.float64
    )


def robust_random_effects(
    y: npt.ArrayLike,
    v: npt.ArrayLike,
    observed: npt.ArrayLike,
    *,
    trim_z: float = DEFAULT_TRIM_Z,
    max_trim_fraction: float = DEFAULT_MAX_TRIM_FRACTION,
    min_days: int = DEFAULT_MIN_DAYS,
    screen_on: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
) -> tuple[Reference, BoolArray]:
    """Random-effects reference per row from (rows x days) estimates and within-day variances.

    Returns the reference and the (rows x days) mask of days kept. At most
    ``floor(max_trim_fraction * observed days)`` days are excluded per row (the most extreme
    ones), so a contaminated window cannot eat its own evidence.

    ``screen_on`` = (estimates, variances) of the same days on another scale, for a
    statistic whose daily values are skewed where they are fitted: the screen's normal tail
    is judged there, the fit stays on ``y``. A day unobserved on either scale is unobserved.
    """
    yy, vv, obs = _matrix(y, v, observed)
    sy, sv = (yy, vv) if screen_on is None else screen_on
    sy, sv, obs = _matrix(sy, sv, obs)
    kept = screen_days(sy, sv, obs, trim_z=trim_z, max_trim_fraction=max_trim_fraction)
    return dersimonian_laird(yy, vv, kept, min_days=min_days, observed=obs), kept


def screen_days(
    y: FloatArray,
    v: FloatArray,
    observed: BoolArray,
    *,
    trim_z: float = DEFAULT_TRIM_Z,
    max_trim_fraction: float = DEFAULT_MAX_TRIM_FRACTION,
) -> BoolArray:
    """Days to keep: observed and within ``trim_z`` robust predictive SDs of the row median."""
    center = _masked_median(y, observed)
    resid = np.where(observed, y - center[:, None], 0.0)
    tau2 = robust_between_var(resid, v, observed)
    z = np.where(observed, np.abs(resid) / np.sqrt(v + tau2[:, None]), 0.0)
    pvalue = 2.0 * stats.norm.sf(z)
    return trim_days(pvalue, observed, trim_pvalue(trim_z), max_trim_fraction)


def trim_pvalue(trim_z: float = DEFAULT_TRIM_Z) -> float:
    """The two-sided tail of a normal beyond trim_z: a day rarer than this is screened out."""
    if trim_z <= 0:
        raise ValueError("trim_z must be positive")
    return float(2.0 * stats.norm.sf(trim_z))


def trim_days(
    pvalue: FloatArray,
    observed: BoolArray,
    threshold: float,
    max_trim_fraction: float = DEFAULT_MAX_TRIM_FRACTION,
) -> BoolArray:
    """Observed days minus those with a screening p-value below ``threshold``, at most
    floor(max_trim_fraction * observed days) per row (the most extreme are dropped first)."""
    if not 0.0 <= max_trim_fraction < 1.0:
        raise ValueError("max_trim_fraction must lie in [0, 1)")
    flagged = observed & (pvalue < threshold)
    allowed = np.floor(max_trim_fraction * observed.sum(axis=1)).astype(np.int64)
    order = np.argsort(np.where(flagged, pvalue, np.inf), axis=1, kind="stable")
    rank = np.empty_like(order)
    positions = np.broadcast_to(np.arange(pvalue.shape[1]), pvalue.shape)
    np.put_along_axis(rank, order, positions, axis=1)
    dropped = flagged & (rank < allowed[:, None])
    return np.asarray(observed & ~dropped, dtype=np.bool_)


def robust_between_var(resid: FloatArray, v: FloatArray, observed: BoolArray) -> FloatArray:
    """tau^2 >= 0 solving median_t[resid_t^2 / (v_t + tau^2)] = median of chi-square(1).

    The median of the standardized squares ignores up to half the days, so a few incident
    days cannot inflate the spread used to recognise them. 0 when the equation already holds
    at tau^2 = 0 (no extra variation visible). Vectorised bisection, 60 halvings.
    """
    r2 = np.where(observed, resid**2, np.nan)

    def stat(tau2: FloatArray) -> FloatArray:
        ratio = r2 / (v + tau2[:, None])
        return np.asarray(_nanmedian_rows(ratio), dtype=np.float64)

    rows = resid.shape[0]
    lo = np.zeros(rows)
    hi = np.nanmax(np.where(observed, r2, 0.0), axis=1) / _CHI2_1_MEDIAN + 1e-300
    need = stat(lo) > _CHI2_1_MEDIAN
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        above = stat(mid) > _CHI2_1_MEDIAN
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    return np.asarray(np.where(need, 0.5 * (lo + hi), 0.0), dtype=np.float64)


def dersimonian_laird(
    y: FloatArray,
    v: FloatArray,
    kept: BoolArray,
    *,
    min_days: int = DEFAULT_MIN_DAYS,
    observed: BoolArray | None = None,
) -> Reference:
    """DerSimonian-Laird moment estimates on the kept days of each row.

    tau^2 = max(0, (Q - (K - 1)) / (S1 - S2 / S1)) with fixed-effect weights w = 1/v;
    centre = sum(w* y) / sum(w*) and Var(centre) = 1 / sum(w*) with w* = 1/(v + tau^2).
    """
    if min_days < 2:
        raise ValueError("min_days must be at least 2")
    days = kept.sum(axis=1)
    valid = days >= min_days
    moment, _within, _df = between_var_moments(y, v, kept)
    tau2 = np.where(np.isfinite(moment), np.maximum(moment, 0.0), 0.0)  # one day: 0
    w_star = np.where(kept, 1.0 / (v + tau2[:, None]), 0.0)
    s_star = w_star.sum(axis=1)
    safe = np.where(s_star > 0, s_star, 1.0)
    center = np.where(kept, w_star * y, 0.0).sum(axis=1) / safe
    seen = kept if observed is None else observed
    nan = np.full(y.shape[0], np.nan)
    return Reference(
        center=np.where(valid, center, nan),
        between_var=np.where(valid, tau2, nan),
        center_var=np.where(valid, 1.0 / safe, nan),
        days_used=days.astype(np.int64),
        days_excluded=(seen.sum(axis=1) - days).astype(np.int64),
        valid=np.asarray(valid, dtype=np.bool_),
    )


def pool_reference(
    y: npt.ArrayLike,
    v: npt.ArrayLike,
    kept: npt.ArrayLike,
    reference: Reference,
    scale: npt.ArrayLike,
    groups: npt.ArrayLike,
) -> Reference:
    """``reference`` with each row's tau^2 partially pooled across its group (pooling.py) and
    the centre and its variance re-weighted with it (w* = 1/(v_t + tau^2)) on the same kept
    days; days used and excluded, and validity, are the row's own."""
    kk = np.atleast_2d(np.asarray(kept, dtype=np.bool_))
    yy = np.where(kk, np.atleast_2d(np.asarray(y, dtype=np.float64)), 0.0)
    vv = np.where(kk, np.atleast_2d(np.asarray(v, dtype=np.float64)), 1.0)
    own = np.where(reference.valid, reference.between_var, np.nan)
    tau2 = pooled_between_var(yy, vv, kk, own, scale, groups)
    w_star = np.where(kk, 1.0 / (vv + np.where(reference.valid, tau2, 0.0)[:, None]), 0.0)
    s_star = w_star.sum(axis=1)
    safe = np.where(s_star > 0, s_star, 1.0)
    center = (w_star * yy).sum(axis=1) / safe
    return Reference(
        center=np.where(reference.valid, center, np.nan),
        between_var=np.where(reference.valid, tau2, np.nan),
        center_var=np.where(reference.valid, 1.0 / safe, np.nan),
        days_used=reference.days_used,
        days_excluded=reference.days_excluded,
        valid=reference.valid,
    )


def _matrix(
    y: npt.ArrayLike, v: npt.ArrayLike, observed: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, BoolArray]:
    yy = np.atleast_2d(np.asarray(y, dtype=np.float64))
    vv = np.atleast_2d(np.asarray(v, dtype=np.float64))
    obs = np.atleast_2d(np.asarray(observed, dtype=np.bool_))
    if not yy.shape == vv.shape == obs.shape or yy.ndim != 2:
        raise ValueError("y, v and observed must be (rows x days) arrays of one shape")
    obs = obs & np.isfinite(yy) & np.isfinite(vv) & (vv > 0)
    return np.where(obs, yy, 0.0), np.where(obs, vv, 1.0), obs


def _masked_median(y: FloatArray, mask: BoolArray) -> FloatArray:
    return np.asarray(_nanmedian_rows(np.where(mask, y, np.nan)), dtype=np.float64)


def _nanmedian_rows(a: FloatArray) -> FloatArray:
    out = np.full(a.shape[0], np.nan)
    has = np.any(np.isfinite(a), axis=1)
    if np.any(has):
        out[has] = np.nanmedian(a[has], axis=1)
    return np.where(np.isfinite(out), out, 0.0)
