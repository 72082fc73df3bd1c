"""Partial pooling of the day-to-day wobble across the cohorts of one signal (empirical Bayes).

Each row's between-day variance tau^2 is estimated by DerSimonian-Laird from its own K
reference days (reference.py), with a relative SD of about sqrt(2/(K - 1)) (1 + v/tau^2):
27% at K = 28 when tau^2 dominates, 50% and more where the within-day variance v is as large
(a 2,000/day cohort at a 5% rate). Rows of one signal in one dimension (the routes of a model,
say) usually wobble alike on a comparable scale, so their estimates are combined, as far as
they agree, by a second random-effects model one level up (Morris 1983; Raudenbush & Bryk
2002, ch. 3):

    theta_hat_i = theta_i + e_i,    e_i ~ (0, sigma_i^2)    (row i's own estimate)
    theta_i     = theta_0 + b_i,    b_i ~ (0, omega^2)      (cohorts differ in wobble)

on the relative scale theta = tau^2 / scale (rates: scale = p^2, so theta is the squared
coefficient of variation of the day's rate; log-scale and mean signals: scale = 1).

- theta_hat_i is the untruncated DerSimonian-Laird moment (Q - (K - 1)) / c: unbiased, and it
  may be negative, so rows with no visible wobble enter the pool without a log of zero.
- sigma_i^2 = 2 (u_i + theta_0)^2 / (K_i - 1), the variance of that moment when the days are
  normal (u_i = (K_i - 1)/c_i: the row's typical within-day variance, relative). It is taken
  at the pooled theta_0, the value under "the cohorts agree", so a row's weight does not
  depend on its own noise (weights from the own estimate bias a pooled variance down).
- theta_0 and omega^2 are DerSimonian-Laird moments again, one level up (cohorts are the
  "studies"), two passes so sigma_i^2 is taken at the final theta_0.
- Each row gets the best linear predictor theta_0 + lambda_i (theta_hat_i - theta_0),
  lambda_i = omega^2 / (omega^2 + sigma_i^2), floored at 0: a precise row that disagrees with
  the pool keeps (almost) its own value, an imprecise one (few days, a small cohort) takes the
  pool's, and when the cohorts agree (omega^2 = 0) every row takes theta_0.

Rows are pooled only in groups of at least ``MIN_POOL_COHORTS`` valid rows: omega^2 from two
or three cohorts has one or two degrees of freedom, is 0 half of the time, and would pool
cohorts that differ. Other rows keep their own estimate. See docs/statistics.md section 8.1.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from app.stats._arrays import BoolArray, FloatArray

MIN_POOL_COHORTS = 5
_PASSES = 2


def between_var_moments(
    y: FloatArray, v: FloatArray, kept: BoolArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per row: the untruncated DerSimonian-Laird moment (Q - (K - 1)) / c, the typical
    within-day variance (K - 1) / c, and K - 1 (NaN where K < 2 or c = 0)."""
    days = kept.sum(axis=1).astype(np.float64)
    w = np.where(kept, 1.0 / v, 0.0)
    s1 = w.sum(axis=1)
    safe_s1 = np.where(s1 > 0, s1, 1.0)
    mu = np.where(kept, w * y, 0.0).sum(axis=1) / safe_s1
    q = np.where(kept, w * (y - mu[:, None]) ** 2, 0.0).sum(axis=1)
    c = s1 - (w**2).sum(axis=1) / safe_s1
    ok = (days >= 2) & (c > 0)
    safe_c = np.where(ok, c, 1.0)
    df = days - 1.0
    return (
        np.where(ok, (q - df) / safe_c, np.nan),
        np.where(ok, df / safe_c, np.nan),
        np.where(ok, df, np.nan),
    )


def pooled_between_var(
    y: npt.ArrayLike,
    v: npt.ArrayLike,
    kept: npt.ArrayLike,
    own: npt.ArrayLike,
    scale: npt.ArrayLike,
    groups: npt.ArrayLike,
    *,
    min_cohorts: int = MIN_POOL_COHORTS,
) -> FloatArray:
    """tau^2 per row, shrunk toward its group's pooled value as far as the group agrees.

    ``y``, ``v``, ``kept``: the (rows x days) values, within-day variances and kept days the
    row's own estimate ``own`` (tau^2 >= 0, NaN where the row has no reference) came from;
    ``scale``: the row's scale (> 0; p^2 for a rate); ``groups``: an integer per row, rows
    sharing one are pooled (negative: never pooled). Rows outside a group of at least
    ``min_cohorts`` rows with a reference keep ``own``.
    """
    yy = np.atleast_2d(np.asarray(y, dtype=np.float64))
    vv = np.atleast_2d(np.asarray(v, dtype=np.float64))
    kk = np.atleast_2d(np.asarray(kept, dtype=np.bool_))
    tau2 = np.asarray(own, dtype=np.float64).reshape(-1).copy()
    sc = np.asarray(scale, dtype=np.float64).reshape(-1)
    gg = np.asarray(groups, dtype=np.int64).reshape(-1)
    if not (yy.shape == vv.shape == kk.shape and yy.shape[0] == tau2.size == sc.size == gg.size):
        raise ValueError("y, v, kept (rows x days) and own, scale, groups (rows) must agree")
    raw, within, df = between_var_moments(yy, np.where(kk, vv, 1.0), kk)
    usable = (
        (gg >= 0) & np.isfinite(tau2) & np.isfinite(raw) & np.isfinite(sc) & (sc > 0) & (df >= 1)
    )
    if not np.any(usable):
        return tau2
    labels, index = np.unique(gg[usable], return_inverse=True)
    size = np.bincount(index, minlength=labels.size)
    pooled = size[index] >= min_cohorts
    if not np.any(pooled):
        return tau2
    rows = np.flatnonzero(usable)[pooled]
    labels, index = np.unique(gg[rows], return_inverse=True)
    safe_scale = sc[rows]
    theta_hat = raw[rows] / safe_scale
    u = within[rows] / safe_scale
    nu = df[rows]
    theta0, omega2, sigma2 = _second_level(theta_hat, u, nu, index, labels.size)
    lam = omega2[index] / (omega2[index] + sigma2)
    lam = np.where(np.isfinite(lam), lam, 0.0)
    shrunk = theta0[index] + lam * (theta_hat - theta0[index])
    tau2[rows] = np.maximum(shrunk, 0.0) * safe_scale
    return np.asarray(tau2, dtype=np.float64)


def _second_level(
    theta_hat: FloatArray, u: FloatArray, nu: FloatArray, index: npt.NDArray[np.intp], groups: int
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(theta_0, omega^2) per group and sigma_i^2 per row: DerSimonian-Laird over the cohorts
    of each group, sigma_i^2 re-evaluated at the group's theta_0 (``_PASSES`` passes)."""
    count = np.bincount(index, minlength=groups).astype(np.float64)
    theta0 = np.bincount(index, np.maximum(theta_hat, 0.0), minlength=groups) / count
    omega2 = np.zeros(groups)
    sigma2 = np.ones_like(theta_hat)
    for _ in range(_PASSES):
        sigma2 = 2.0 * (u + np.maximum(theta0[index], 0.0)) ** 2 / nu
        sigma2 = np.maximum(sigma2, np.finfo(np.float64).tiny)
        w = 1.0 / sigma2
        s1 = np.bincount(index, w, minlength=groups)
        s2 = np.bincount(index, w**2, minlength=groups)
        fixed = np.bincount(index, w * theta_hat, minlength=groups) / s1
        q = np.bincount(index, w * (theta_hat - fixed[index]) ** 2, minlength=groups)
        c = s1 - s2 / s1
        omega2 = np.maximum(0.0, (q - (count - 1.0)) / np.where(c > 0, c, np.inf))
        w_star = 1.0 / (sigma2 + omega2[index])
        theta0 = np.bincount(index, w_star * theta_hat, minlength=groups) / np.bincount(
            index, w_star, minlength=groups
        )
    return theta0, omega2, sigma2
