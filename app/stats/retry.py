"""Re-gating the same checkpoint on the same dataset version without a retry loophole.

If every gate were a fresh, independent look, re-running a blocked checkpoint until
the dice fall its way would eventually let a real drop through. The rule here:

1. **Pool.** Every gate of a checkpoint on a dataset version compares per-row means
   over *all* its runs on that version (each run adds repeats), so earlier runs,
   including the one that blocked, keep counting.
2. **Spend.** Attempt L (1 for the first gate of the checkpoint on the version)
   tests at alpha_L = alpha / 2^(L-1). Whatever the dependence between attempts, the
   chance that a checkpoint that should not pass ever passes is at most
   sum_L alpha_L / 2 = alpha (Bonferroni over looks), and the chance of a wrong block
   over all attempts at most sum_L alpha_L = 2 alpha.
3. **Stick.** After a block, a later gate lifts it only by passing. An inconclusive
   re-gate leaves the checkpoint blocked.

Only looks that can promote spend: a gate that never promotes (the service's exploratory
gates, decided under a request's what-if policy) shops for nothing, so it is decided at the
next attempt's budget and leaves it to the next real look.

Argued in docs/statistics.md; bench/decisions.py measures how often a real 15-point
drop still gets through.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from app.stats._arrays import FloatArray, IntArray

GateVerdict = Literal["block", "pass", "inconclusive"]


def pool_runs(sums: npt.ArrayLike, repeats: npt.ArrayLike) -> tuple[FloatArray, IntArray]:
    """Per-row means over all runs: (sum over runs of the per-row totals) / (total repeats).

    ``sums`` (runs x rows) holds each run's per-row total (passes, or summed
    normalised scores) and ``repeats`` (runs x rows) its repeat count; a row a run did
    not score has repeats 0. Rows no run scored get mean NaN and repeats 0: drop them
    before gating.
    """
    totals = np.atleast_2d(np.asarray(sums, dtype=np.float64))
    counts = np.atleast_2d(np.asarray(repeats, dtype=np.int64))
    if totals.shape != counts.shape:
        raise ValueError("sums and repeats must have the same (runs x rows) shape")
    if np.any(counts < 0) or np.any(totals < 0) or np.any(totals > counts):
        raise ValueError("need 0 <= sums <= repeats")
    k = counts.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = totals.sum(axis=0) / k
    return np.where(k > 0, means, np.nan), k.astype(np.int64)


def attempt_alpha(alpha: float, attempt: int) -> float:
    """The error budget of attempt L: alpha / 2^(L - 1); all attempts together spend <= 2 alpha."""
    if attempt < 1:
        raise ValueError("attempts are numbered from 1")
    return alpha / 2.0 ** (attempt - 1)


def sticky_verdict(verdict: GateVerdict, previously_blocked: bool) -> GateVerdict:
    """After a block on this dataset version only a pass (on pooled runs) lifts it."""
    if previously_blocked and verdict != "pass":
        return "block"
    return verdict
