"""Whether two arms of live traffic serve the same mix of a cohort dimension's values.

Random routing draws each request's arm independently of its cohort, so the candidate's
traces and the champion's are two samples of one mix; a canary routed to a segment breaks
that, and its whole-population comparison then confounds the candidate with the segment
(docs/statistics.md §12.9). `homogeneity_g_test` is the likelihood-ratio (G) test of
homogeneity of a 2 x V table of counts: the arms' traces per value of one dimension. The
counts must be independent observations: a trace's calls share its cohort (and, routed per
trace, its arm), so counted per call G grows with the calls a trace makes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.stats.lazy import scipy_stats

MIN_EXPECTED = 5.0
"""Values expected fewer times than this in an arm (under one shared mix) are pooled into one
category, and that pool is left out if it is still that sparse: the chi-square reference of
G is only trusted on cells this full."""


@dataclass(frozen=True)
class GTest:
    statistic: float
    df: int
    p_value: float


def homogeneity_g_test(
    candidate: npt.ArrayLike, champion: npt.ArrayLike, min_expected: float = MIN_EXPECTED
) -> GTest | None:
    """G = 2 Σ O log(O/E) of the 2 x V table (arm x value) against the expected counts of a
    shared mix, and its chi-square p-value on V - 1 degrees of freedom. Sparse values are
    pooled (see MIN_EXPECTED). None when fewer than two categories are left to compare, or
    an arm has no event: nothing can differ then."""
    table = np.vstack([np.asarray(candidate, np.float64), np.asarray(champion, np.float64)])
    arms = table.sum(axis=1)
    if table.ndim != 2 or (arms <= 0).any():
        return None
    expected = np.outer(arms, table.sum(axis=0)) / arms.sum()
    sparse = expected.min(axis=0) < min_expected
    columns = [table[:, ~sparse]]
    if sparse.any():
        pooled = table[:, sparse].sum(axis=1, keepdims=True)
        pooled_expected = arms[:, None] * pooled.sum() / arms.sum()
        if pooled_expected.min() >= min_expected:
            columns.append(pooled)
    table = np.hstack(columns)
    if table.shape[1] < 2:
        return None
    arms = table.sum(axis=1)
    expected = np.outer(arms, table.sum(axis=0)) / arms.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(table > 0, table * np.log(table / expected), 0.0)
    statistic = float(max(2.0 * terms.sum(), 0.0))
    df = table.shape[1] - 1
    return GTest(statistic, df, float(scipy_stats.chi2.sf(statistic, df)))
