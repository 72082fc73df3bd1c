"""Weighted multiplicity adjustments for one gate's guarded family.

The guarded family shares one error budget alpha. Its hypotheses are not equally
hard to reject: the whole population has ten or a hundred times the rows of a
declared high-risk cohort, so it shows a drop that matters with a tiny p-value,
while the small cohort needs nearly all of alpha. Cutting a comparison's share by a
factor c raises its critical value by only about sqrt(2 ln c) standard errors, and
a standard error shrinks as 1/sqrt(n), so the big cohort gives up little in terms of
the drop it can detect. The default splits the budget in proportion to 1/n of each
comparison, no share above ten times another's (``design_weights``); 1/sqrt(n) (which
minimises the summed detectable drop) and equal shares are the alternatives. The weights
depend only on the design (which rows each comparison has), never on outcomes, as weighted
procedures require.

* ``weighted_holm``: Holm's (1979) weighted step-down, the shortcut of closed testing
  with weighted Bonferroni tests. Strong control of the family-wise error under any
  dependence.
* ``weighted_bh``: Benjamini-Hochberg on p_j / w_j with weights averaging 1
  (Genovese, Roeder & Wasserman 2006); false discovery rate under independence or
  positive dependence (PRDS).

With equal weights both reduce to the textbook procedures (statsmodels'
``multipletests`` "holm" and "fdr_bh"), which the tests check.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from app.stats._arrays import FloatArray


def _check(p: npt.ArrayLike, weights: npt.ArrayLike | None) -> tuple[FloatArray, FloatArray]:
    raw = np.asarray(p, dtype=np.float64)
    if raw.ndim != 1 or np.any((raw < 0.0) | (raw > 1.0)) or not np.all(np.isfinite(raw)):
        raise ValueError("p-values must be a 1-D array in [0, 1]")
    w = np.ones(raw.size) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != raw.shape or np.any(w <= 0.0) or not np.all(np.isfinite(w)):
        raise ValueError("weights must be positive, one per p-value")
    return raw, w / w.sum() if raw.size else w


def weighted_holm(p: npt.ArrayLike, weights: npt.ArrayLike | None = None) -> FloatArray:
    """Adjusted p-values of the weighted Holm procedure (reject H_j when adjusted <= alpha).

    Order by p_j / w_j; at step i the hypothesis is tested at alpha w_(i) / (sum of
    the weights not yet rejected). Adjusted: the running maximum of
    p_(i) * remaining_weight_i / w_(i), capped at 1.
    """
    raw, w = _check(p, weights)
    if raw.size == 0:
        return raw
    order = np.lexsort((np.arange(raw.size), raw / w))
    ranked_w = w[order]
    remaining = np.cumsum(ranked_w[::-1])[::-1]
    stepped = np.maximum.accumulate(raw[order] * remaining / ranked_w)
    adjusted = np.empty(raw.size)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def weighted_bh(p: npt.ArrayLike, weights: npt.ArrayLike | None = None) -> FloatArray:
    """Adjusted p-values of weighted Benjamini-Hochberg (weights rescaled to average 1)."""
    raw, w = _check(p, weights)
    m = raw.size
    if m == 0:
        return raw
    q = np.minimum(raw / (w * m), np.inf)
    order = np.lexsort((np.arange(m), q))
    rank = np.arange(1, m + 1)
    stepped = np.minimum.accumulate((q[order] * m / rank)[::-1])[::-1]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


MAX_WEIGHT_RATIO = 10.0


def design_weights(rows: npt.ArrayLike, power: float) -> FloatArray:
    """Budget shares proportional to 1 / rows**power (0: equal, 0.5: 1/sqrt(n), 1: 1/n),
    no share more than ``MAX_WEIGHT_RATIO`` times the smallest (under 1/n: rows counted as
    at least a tenth of the largest comparison's).

    Beyond 10:1 the small comparison gains almost nothing (its critical value moves by
    about sqrt(2 ln c) standard errors for a share change of factor c: 91% -> 98.5% of
    alpha is c = 1.08) while the large one loses a factor of 6 or more: uncapped, a 6-row
    cohort beside 400 rows left the population 1.5% of alpha. The cap depends on the rows
    alone, so the weights stay design, not outcome. A comparison without rows counts as one
    row; its p-value is 1 anyway.
    """
    n = np.asarray(rows, dtype=np.float64)
    if n.size == 0:
        return n
    share = np.maximum(n, 1.0) ** -float(power)
    share = np.minimum(share, MAX_WEIGHT_RATIO * share.min())
    return np.asarray(share / share.sum(), dtype=np.float64)


def family_shares(rows: npt.ArrayLike, power: float, min_rows: int) -> FloatArray:
    """Design shares of a block family whose comparisons need ``min_rows`` rows to reject:
    those with fewer can never reject, so the others share the budget without them (their
    weight would only starve the rest); each of them gets, for planning its rows, the share
    it would take by joining the others."""
    n = np.asarray(rows, dtype=np.float64)
    able = n >= min_rows
    shares = np.zeros(n.size)
    shares[able] = design_weights(n[able], power)
    for i in np.flatnonzero(~able):
        shares[i] = design_weights(np.append(n[able], n[i]), power)[-1]
    return shares
