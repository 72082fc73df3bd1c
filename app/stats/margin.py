"""One-sided tests of a paired change against a margin, valid at every cohort size.

A gate asks three one-sided questions of the change Delta = E[candidate - baseline]
in a cohort (per-row values in [0, 1]: a pass, a pass fraction over repeats, or a
normalised score):

* ``lower`` tail, H0: Delta >= mu0 against Delta < mu0. At mu0 = -margin a
  rejection shows a drop beyond the margin (block); at mu0 = 0 it shows a drop.
* ``upper`` tail, H0: Delta <= mu0 against Delta > mu0. At mu0 = -margin a
  rejection shows non-inferiority (pass).

The statistic is the score statistic Z = sqrt(n) (dbar - mu0) / sqrt(v0), where v0
is the variance of a per-row difference under the distribution that maximises the
likelihood subject to the null mean mu0 *and* to the known range [-1, 1] of a
difference (Tango 1998 for pass/fail pairs; the same constrained maximum for per-row
means, computed as an empirical likelihood whose support includes the range's
ends). Because the constrained fit may put mass on a difference nobody observed, a
cohort with no discordant rows still has v0 > 0: three identical rows prove nothing.

P-values:

* pass/fail pairs (one repeat per side) with at most ``exact_max_n`` rows: exact
  unconditional (Hsueh, Liu & Chen 2001): the supremum over the nuisance
  discordance psi of P(Z as or more extreme) at the least favourable null point,
  summed over every possible table, with Berger & Boos's (1994) restriction of psi to
  a confidence interval. Valid at every n by construction; the tests enumerate tables.
* larger pass/fail cohorts and per-row means (repeats, scores): the normal tail of
  Z after Hall's (1992) skewness correction. docs/statistics.md gives the exact size
  of this score test where it replaces the exact one, and the simulated size for
  per-row means.
* a drop at all (mu0 = 0) on pass/fail pairs: the one-sided exact conditional
  McNemar (sign) test, which is exact because Delta = 0 fixes the split 1/2.
* a floor (candidate level against a constant) on pass/fail rows: the exact
  binomial test; on per-row means, the same constrained score test on [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import numpy.typing as npt

from app.stats._arrays import FloatArray
from app.stats.lazy import scipy_optimize as optimize
from app.stats.lazy import scipy_special as special
from app.stats.lazy import scipy_stats as stats

Tail = Literal["lower", "upper"]

# Pass/fail cohorts up to this size get the exact unconditional p-value; above it the
# score test's normal tail is used (its exact size there is in docs/statistics.md).
DEFAULT_EXACT_MAX_N = 400
# Berger-Boos: the nuisance supremum is taken over a 1 - gamma interval for psi, plus gamma.
DEFAULT_GAMMA = 0.001
_BISECTION_STEPS = 64
_BOUND_STEPS = 26


# --- the constrained maximum-likelihood variance ---------------------------------------


def tango_restricted(
    b: npt.ArrayLike, c: npt.ArrayLike, n: npt.ArrayLike, mu0: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Constrained MLE (p_b, p_c) of the two discordant cells given p_c - p_b = mu0.

    b rows lost (baseline passed, candidate failed), c rows won, n rows in all.
    Maximising b log p_b + c log p_c + (n-b-c) log(1 - p_b - p_c) with p_c = p_b + mu0
    gives the larger root of -2n x^2 + B x + C = 0 for x = p_b, with
    B = b(1 - 3 mu0) + c(1 - mu0) - 2(n - b - c) mu0 and C = b mu0 (1 - mu0) (Tango 1998).
    """
    lost = np.asarray(b, dtype=np.float64)
    won = np.asarray(c, dtype=np.float64)
    total = np.asarray(n, dtype=np.float64)
    delta = np.asarray(mu0, dtype=np.float64)
    both = total - lost - won
    big_b = lost * (1.0 - 3.0 * delta) + won * (1.0 - delta) - 2.0 * both * delta
    big_c = lost * delta * (1.0 - delta)
    safe_n = np.where(total > 0, total, 1.0)
    root = (big_b + np.sqrt(np.maximum(big_b * big_b + 8.0 * safe_n * big_c, 0.0))) / (4.0 * safe_n)
    p_b = np.clip(root, np.maximum(0.0, -delta), (1.0 - delta) / 2.0)
    return p_b, p_b + delta


def tango_z(b: npt.ArrayLike, c: npt.ArrayLike, n: npt.ArrayLike, mu0: npt.ArrayLike) -> FloatArray:
    """Tango's score statistic for H0: p_c - p_b = mu0 (positive when the candidate does better)."""
    lost = np.asarray(b, dtype=np.float64)
    won = np.asarray(c, dtype=np.float64)
    total = np.asarray(n, dtype=np.float64)
    delta = np.asarray(mu0, dtype=np.float64)
    p_b, p_c = tango_restricted(lost, won, total, delta)
    variance = p_b + p_c - delta * delta
    return _standardise(won - lost - total * delta, total * variance)


def _standardise(numerator: FloatArray, variance_sum: FloatArray) -> FloatArray:
    """numerator / sqrt(variance_sum); 0 when both vanish, +-inf when only the variance does."""
    with np.errstate(divide="ignore", invalid="ignore"):
        z = numerator / np.sqrt(np.maximum(variance_sum, 0.0))
    degenerate = ~(variance_sum > 1e-300)
    infinite = np.where(numerator > 0.0, np.inf, np.where(numerator < 0.0, -np.inf, 0.0))
    return np.asarray(np.where(degenerate, infinite, z), dtype=np.float64)


def restricted_variance(
    support: npt.ArrayLike,
    counts: npt.ArrayLike,
    mu0: npt.ArrayLike,
    lo: float = -1.0,
    hi: float = 1.0,
) -> FloatArray:
    """Variance about mu0 of the most likely distribution on [lo, hi] with mean mu0.

    See ``restricted_moments``, which also gives the third central moment.
    """
    return restricted_moments(support, counts, mu0, lo, hi)[0]


@dataclass(frozen=True)
class _Entries:
    """A (cohorts x values) count matrix as its present entries: graded scores make nearly
    every row's value distinct, and dense passes over cohorts x values would cost
    cohorts x rows each. Built once per test (or bound), reused by every step."""

    cohorts: int
    row: npt.NDArray[np.intp]
    value: FloatArray
    count: FloatArray
    n: FloatArray
    mean: FloatArray
    trinomial: bool  # every value in {-1, 0, 1}: Tango's closed form applies


def _sums(row: npt.NDArray[np.intp], weights: npt.ArrayLike, cohorts: int) -> FloatArray:
    """Per cohort, the sum of `weights` over its entries."""
    return np.asarray(np.bincount(row, weights=weights, minlength=cohorts), dtype=np.float64)


def _entries(support: npt.ArrayLike, counts: npt.ArrayLike) -> _Entries:
    values = np.asarray(support, dtype=np.float64)
    weights = np.atleast_2d(np.asarray(counts, dtype=np.float64))
    cohorts = weights.shape[0]
    row, col = np.nonzero(weights > 0)
    count = weights[row, col]
    value = values[col]
    n = _sums(row, count, cohorts)
    total = _sums(row, count * value, cohorts)
    mean = total / np.where(n > 0, n, 1.0)
    trinomial = bool(np.all(np.isin(values, (-1.0, 0.0, 1.0))))
    return _Entries(cohorts, row, value, count, n, mean, trinomial)


def restricted_moments(
    support: npt.ArrayLike,
    counts: npt.ArrayLike,
    mu0: npt.ArrayLike,
    lo: float = -1.0,
    hi: float = 1.0,
) -> tuple[FloatArray, FloatArray]:
    """Second and third moments about mu0 of the most likely distribution on [lo, hi] with mean mu0.

    ``support`` (U,) are the distinct observed values, ``counts`` (cohorts x U) how
    often each occurs in each cohort, ``mu0`` (cohorts,) the null means. The maximiser
    puts weight n_j / (n (1 + lam (s_j - mu0))) on each observed value (empirical
    likelihood, Owen 2001). Unlike plain empirical likelihood it may also put mass on
    an unobserved end of [lo, hi] (the Lagrangian weight stays non-negative over the
    whole range only for lam in [-1/(hi - mu0), 1/(mu0 - lo)]; when the root lies
    beyond, lam sits at that end and the remaining mass goes to the end lo or hi).
    For values in {-1, 0, 1} this is exactly Tango's constrained trinomial MLE.
    """
    entries = _entries(support, counts)
    null = np.broadcast_to(np.asarray(mu0, dtype=np.float64), (entries.cohorts,)).copy()
    return _moments(entries, null, lo, hi)


def _moments(
    entries: _Entries, null: FloatArray, lo: float, hi: float
) -> tuple[FloatArray, FloatArray]:
    if np.any(null <= lo) or np.any(null >= hi):
        raise ValueError("mu0 must lie strictly inside (lo, hi)")
    if lo == -1.0 and hi == 1.0 and entries.trinomial:
        return _trinomial_moments(entries, null)
    cohorts, row, count, n = entries.cohorts, entries.row, entries.count, entries.n
    dev = entries.value - null[row]
    lam_max = 1.0 / (null - lo)
    lam_min = -1.0 / (hi - null)
    at_lo = entries.value <= lo + 1e-12
    at_hi = entries.value >= hi - 1e-12
    has_lo = _sums(row, at_lo, cohorts) > 0
    has_hi = _sums(row, at_hi, cohorts) > 0

    def score(lam: FloatArray, skip: npt.NDArray[np.bool_]) -> FloatArray:
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(skip, 0.0, count * dev / (1.0 + lam[row] * dev))
        return _sums(row, terms, cohorts)

    clamp_lo = ~has_lo & (score(lam_max, at_lo) >= 0.0)
    clamp_hi = ~has_hi & ~clamp_lo & (score(lam_min, at_hi) <= 0.0)
    active = (n > 0) & ~clamp_lo & ~clamp_hi
    lam = _root(row, count, dev, lam_min, lam_max, active)
    lam = np.where(clamp_lo, lam_max, np.where(clamp_hi, lam_min, lam))
    safe_n = np.where(n > 0, n, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = count / (safe_n[row] * (1.0 + lam[row] * dev))
    rest = np.clip(1.0 - _sums(row, w, cohorts), 0.0, 1.0)
    end = np.where(clamp_lo, lo, hi)
    clamped = clamp_lo | clamp_hi
    extra = np.where(clamped, rest * (end - null) ** 2, 0.0)
    variance = _sums(row, w * dev * dev, cohorts) + extra
    third = _sums(row, w * dev**3, cohorts) + np.where(clamped, rest * (end - null) ** 3, 0.0)
    return (
        np.asarray(np.where(n > 0, variance, np.nan), dtype=np.float64),
        np.asarray(np.where(n > 0, third, np.nan), dtype=np.float64),
    )


def _root(
    row: npt.NDArray[np.intp],
    count: FloatArray,
    dev: FloatArray,
    low: FloatArray,
    high: FloatArray,
    active: npt.NDArray[np.bool_],
) -> FloatArray:
    """Per `active` cohort, the lam in (low, high) where sum_j n_j d_j / (1 + lam d_j) = 0.

    The sum falls strictly in lam, so an active cohort's root (one that is not clamped at
    an end) is bracketed and unique: Newton steps, falling back to bisection whenever a
    step would leave the bracket, which shrinks every step. Stops when every active
    cohort's step is below 1e-13 (or after _BISECTION_STEPS steps, where bisection alone
    would have reached the same precision). Other cohorts' values are meaningless.
    """
    cohorts = low.size
    low, high = low.copy(), high.copy()
    lam = (low + high) / 2.0
    for _ in range(_BISECTION_STEPS):
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = dev / (1.0 + lam[row] * dev)
        value = _sums(row, count * ratio, cohorts)
        slope = -_sums(row, count * ratio * ratio, cohorts)
        low = np.where(value > 0.0, lam, low)
        high = np.where(value > 0.0, high, lam)
        with np.errstate(divide="ignore", invalid="ignore"):
            newton = lam - value / slope
        inside = np.isfinite(newton) & (newton > low) & (newton < high)
        step = np.where(inside, newton, (low + high) / 2.0)
        done = ~active | (np.abs(step - lam) <= 1e-13)
        lam = step
        if done.all():
            break
    return np.asarray(lam, dtype=np.float64)


def _trinomial_moments(entries: _Entries, null: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Closed form of ``restricted_moments`` for differences in {-1, 0, 1} (Tango's MLE)."""
    cohorts, row, count = entries.cohorts, entries.row, entries.count
    lost = _sums(row, count * (entries.value == -1.0), cohorts)
    won = _sums(row, count * (entries.value == 1.0), cohorts)
    n = entries.n
    p_b, p_c = tango_restricted(lost, won, n, null)
    p_0 = 1.0 - p_b - p_c
    variance = p_b * (1.0 + null) ** 2 + p_c * (1.0 - null) ** 2 + p_0 * null**2
    third = -p_b * (1.0 + null) ** 3 + p_c * (1.0 - null) ** 3 - p_0 * null**3
    return (
        np.asarray(np.where(n > 0, variance, np.nan), dtype=np.float64),
        np.asarray(np.where(n > 0, third, np.nan), dtype=np.float64),
    )


def score_z(
    support: npt.ArrayLike,
    counts: npt.ArrayLike,
    mu0: npt.ArrayLike,
    lo: float = -1.0,
    hi: float = 1.0,
) -> FloatArray:
    """sqrt(n) (mean - mu0) / sqrt(restricted variance) per cohort (``restricted_variance``)."""
    entries = _entries(support, counts)
    null = np.broadcast_to(np.asarray(mu0, dtype=np.float64), (entries.cohorts,)).copy()
    variance = _moments(entries, null, lo, hi)[0]
    return _standardise(entries.n * (entries.mean - null), entries.n * np.nan_to_num(variance))


def score_test(
    support: npt.ArrayLike,
    counts: npt.ArrayLike,
    mu0: npt.ArrayLike,
    tail: Tail,
    lo: float = -1.0,
    hi: float = 1.0,
) -> tuple[FloatArray, FloatArray]:
    """Skewness-corrected score test per cohort: (Z, one-sided p-value).

    The sum of n differences has, under the constrained fit, skewness
    kappa = m3 / (v0^(3/2) sqrt(n)). The p-value is the normal tail of Hall's (1992)
    monotone transform h(Z) = Z - kappa (Z^2 - 1) / 6 + kappa^2 Z^3 / 108, the
    Edgeworth correction that Laud (2017) applies to score intervals for one-sided
    coverage. Without it a rare, one-sided failure pattern makes the plain score test
    reject too often in the tail that the skew points to.
    """
    entries = _entries(support, counts)
    null = np.broadcast_to(np.asarray(mu0, dtype=np.float64), (entries.cohorts,)).copy()
    return _score_test(entries, null, tail, lo, hi)


def _score_test(
    entries: _Entries, null: FloatArray, tail: Tail, lo: float, hi: float
) -> tuple[FloatArray, FloatArray]:
    n = entries.n
    safe_n = np.where(n > 0, n, 1.0)
    variance, third = _moments(entries, null, lo, hi)
    variance, third = np.nan_to_num(variance), np.nan_to_num(third)
    z = _standardise(n * (entries.mean - null), n * variance)
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = np.where(variance > 1e-300, third / (variance**1.5 * np.sqrt(safe_n)), 0.0)
    finite = np.isfinite(z)
    zf = np.where(finite, z, 0.0)
    corrected = np.where(
        finite, zf - kappa * (zf * zf - 1.0) / 6.0 + kappa * kappa * zf**3 / 108.0, z
    )
    # Where the observed mean sits on the null's side, the data cannot reject it: a large
    # kappa (rows tightly clustered, the fit's mass pushed to an end of the range) shifts
    # h(0) = kappa/6 far enough to flip the sign, so the p-value there is never below the
    # uncorrected one (at least 1/2).
    contradicted = (z <= 0.0) if tail == "upper" else (z >= 0.0)
    p = np.where(
        contradicted & finite,
        np.maximum(normal_tail(corrected, tail), normal_tail(zf, tail)),
        normal_tail(corrected, tail),
    )
    return z, np.asarray(np.where(n > 0, p, 1.0), dtype=np.float64)


def normal_tail(z: npt.ArrayLike, tail: Tail) -> FloatArray:
    """P(Z <= z) for the lower tail, P(Z >= z) for the upper one, under N(0, 1)."""
    values = np.asarray(z, dtype=np.float64)
    return np.asarray(stats.norm.cdf(values) if tail == "lower" else stats.norm.sf(values))


# --- exact unconditional p-value for pass/fail pairs ------------------------------------


def exact_pvalue(
    n: int, b: int, c: int, mu0: float, tail: Tail, gamma: float = DEFAULT_GAMMA
) -> float:
    """Exact unconditional p-value of Tango's statistic for H0 on the side given by ``tail``.

    The supremum over the null of P(Z as or more extreme than observed), summing over
    every table of n rows. For each psi (the share of discordant rows) the least
    favourable null point is the boundary p_c - p_b = mu0 (or, where psi < |mu0|, all
    discordant rows going the null's way: ``_Region.probability``), so the supremum
    is over psi alone. Berger & Boos (1994): it is taken over a (1 - gamma)
    Clopper-Pearson interval for psi from the observed b + c (whose distribution,
    Bin(n, psi), does not involve Delta), and gamma is added; this is valid at every n
    and spares the p-value the psi the data rule out. gamma = 0 takes the supremum
    over every psi. Within a discordant total k the rejection region is a run of c
    (checked; a general sum is used otherwise), so P = sum_k Bin(k; n, psi)
    Bin-cdf(c*(k); k, theta) with theta = (psi + Delta) / (2 psi). The supremum is
    taken on a grid even in arcsin(sqrt(psi)), refined around its largest point.
    """
    if n <= 0:
        return 1.0
    if not (b >= 0 and c >= 0 and b + c <= n):
        raise ValueError("need 0 <= b, c and b + c <= n")
    if not 0.0 <= gamma < 0.5:
        raise ValueError("gamma must lie in [0, 0.5)")
    return _exact_pvalue(int(n), int(b), int(c), round(float(mu0), 12), tail, float(gamma))


@lru_cache(maxsize=65536)
def _exact_pvalue(n: int, b: int, c: int, mu0: float, tail: Tail, gamma: float) -> float:
    region = _rejection_region(n, b, c, mu0, tail)
    # Null points exist for psi >= max(0, mu0) (lower tail) or max(0, -mu0) (upper).
    low, high = max(0.0, mu0 if tail == "lower" else -mu0), 1.0
    if gamma > 0.0:
        k = b + c
        ci_low = float(stats.beta.ppf(gamma / 2.0, k, n - k + 1)) if k > 0 else 0.0
        ci_high = float(stats.beta.isf(gamma / 2.0, k + 1, n - k)) if k < n else 1.0
        low, high = max(low, ci_low), min(high, ci_high)
        if low > high:  # the data rule out every null point
            return min(1.0, gamma)
    grid = (
        np.sin(np.linspace(math.asin(math.sqrt(low)), math.asin(math.sqrt(high)), _grid_size(n)))
        ** 2
    )
    probability = region.probability(grid)
    best = float(probability.max())
    i = int(np.argmax(probability))
    left, right = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    if right > left:
        found = optimize.minimize_scalar(
            lambda psi: -float(region.probability(np.array([psi]))[0]),
            bounds=(left, right),
            method="bounded",
            options={"xatol": (right - left) * 1e-4},
        )
        best = max(best, -float(found.fun))
    return min(1.0, best + gamma)


def _grid_size(n: int) -> int:
    return int(np.clip(15.0 * math.sqrt(n), 60, 400))


@dataclass(frozen=True)
class _Region:
    """Tables (k discordant, c won) at least as extreme as the observed one, for one n."""

    n: int
    mu0: float
    tail: Tail
    cutoff: npt.NDArray[np.int64] | None  # per k: last c (lower tail) or first c (upper tail)
    mask: npt.NDArray[np.bool_] | None  # general case: (k, c) membership

    def probability(self, psi: FloatArray) -> FloatArray:
        """P(region) at the least favourable null point for each discordance psi.

        The chance of a lower-tail region falls as Delta rises (and an upper-tail one
        rises with it), so for a given psi the worst null point is the smallest Delta
        allowed, max(mu0, -psi) (largest, min(mu0, psi), for the upper tail): the
        boundary Delta = mu0 when psi >= |mu0|, else all discordant rows going one
        way. The enumeration tests check the monotonicity this relies on.
        """
        n, k = self.n, np.arange(self.n + 1)
        psi = np.clip(psi, 0.0, 1.0)
        lower = self.tail == "lower"
        delta = np.maximum(self.mu0, -psi) if lower else np.minimum(self.mu0, psi)
        with np.errstate(divide="ignore", invalid="ignore"):
            theta = np.where(psi > 0, np.clip((psi + delta) / (2.0 * psi), 0.0, 1.0), 0.5)
        totals = _binomial_pmf(k, n, psi)
        if self.cutoff is not None:
            # Only the (psi, k) cells with non-negligible Bin(k; n, psi) mass are evaluated.
            rows, ks = np.nonzero(totals > 1e-17)
            cut = self.cutoff[ks]
            th = theta[rows]
            inner = np.zeros(ks.size)
            if self.tail == "lower":
                some = (cut >= 0) & (cut < ks)
                inner[some] = special.bdtr(cut[some], ks[some], th[some])
                inner[cut >= ks] = 1.0
            else:
                some = (cut > 0) & (cut <= ks)
                inner[some] = special.bdtrc(cut[some] - 1, ks[some], th[some])
                inner[cut <= 0] = 1.0
            out = np.zeros(psi.size)
            np.add.at(out, rows, totals[rows, ks] * inner)
            return out
        assert self.mask is not None
        out = np.empty(psi.size)
        cs = np.arange(n + 1)
        for g in range(psi.size):
            within = stats.binom.pmf(cs[None, :], k[:, None], theta[g])
            out[g] = float((totals[g] * (within * self.mask).sum(axis=1)).sum())
        return out


def _binomial_pmf(k: npt.NDArray[np.int64], n: int, psi: FloatArray) -> FloatArray:
    """Bin(k; n, psi) for every psi (rows) and k (columns), from log-gamma terms."""
    log_choose = special.gammaln(n + 1.0) - special.gammaln(k + 1.0) - special.gammaln(n - k + 1.0)
    p = psi[:, None]
    log_pmf = (
        log_choose[None, :] + special.xlogy(k[None, :], p) + special.xlog1py(n - k[None, :], -p)
    )
    return np.asarray(np.exp(log_pmf), dtype=np.float64)


def _rejection_region(n: int, b: int, c: int, mu0: float, tail: Tail) -> _Region:
    k = np.arange(n + 1)[:, None]
    won = np.arange(n + 1)[None, :]
    valid = won <= k
    z = tango_z(np.where(valid, k - won, 0), np.where(valid, won, 0), n, mu0)
    observed = float(tango_z(b, c, n, mu0))
    slack = 1e-9 * max(1.0, abs(observed)) if np.isfinite(observed) else 0.0
    extreme = (z <= observed + slack) if tail == "lower" else (z >= observed - slack)
    extreme &= valid
    count = extreme.sum(axis=1)
    if tail == "lower":
        cutoff = count - 1  # a run 0..c*(k) when the region is a prefix
        expected = won <= cutoff[:, None]
    else:
        cutoff = k[:, 0] + 1 - count  # a run c_*(k)..k when the region is a suffix
        expected = (won >= cutoff[:, None]) & valid
    if np.array_equal(extreme, expected):
        return _Region(n, mu0, tail, cutoff.astype(np.int64), None)
    return _Region(n, mu0, tail, None, extreme)


def mcnemar_one_sided(b: npt.ArrayLike, c: npt.ArrayLike) -> FloatArray:
    """Exact conditional McNemar p-value for H0: no drop, against a drop (few rows won, c).

    Given b + c discordant rows, c ~ Bin(b + c, 1/2) when Delta = 0, so P(C <= c)
    is exact; with no discordant rows it is 1.
    """
    lost = np.asarray(b, dtype=np.int64)
    won = np.asarray(c, dtype=np.int64)
    return np.asarray(stats.binom.cdf(won, lost + won, 0.5), dtype=np.float64)


# --- one-sample levels (floors) --------------------------------------------------------


def binomial_floor_pvalues(
    successes: npt.ArrayLike, n: npt.ArrayLike, floor: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Exact binomial p-values for a pass rate against a floor f.

    Returns (broken, met): ``broken`` tests H0: rate >= f (small when the rate is shown
    below the floor), ``met`` tests H0: rate <= f (small when it is shown above it).
    """
    x = np.asarray(successes, dtype=np.int64)
    total = np.asarray(n, dtype=np.int64)
    f = np.asarray(floor, dtype=np.float64)
    broken = np.where(total > 0, stats.binom.cdf(x, total, f), 1.0)
    met = np.where(total > 0, stats.binom.sf(x - 1, total, f), 1.0)
    return np.asarray(broken, dtype=np.float64), np.asarray(met, dtype=np.float64)


# --- bounds by inverting the tests -------------------------------------------------------


def score_bound(
    support: npt.ArrayLike,
    counts: npt.ArrayLike,
    level: float,
    side: Literal["upper", "lower"],
    lo: float = -1.0,
    hi: float = 1.0,
) -> FloatArray:
    """One-sided confidence bound for the mean by inverting ``score_test``, per cohort.

    ``upper``: the mu0 at which the lower-tail test's p-value crosses 1 - level (above
    it, "mean >= mu0" is rejected), so the change lies below it with confidence
    ``level``; ``lower`` mirrors it with the upper-tail test.
    """
    entries = _entries(support, counts)
    alpha = 1.0 - level
    low = np.full(entries.cohorts, lo + 1e-9)
    high = np.full(entries.cohorts, hi - 1e-9)
    tail: Tail = "lower" if side == "upper" else "upper"
    for _ in range(_BOUND_STEPS):
        middle = (low + high) / 2.0
        rejected = _score_test(entries, middle, tail, lo, hi)[1] <= alpha
        if side == "upper":  # rejection at mu0 means the bound lies below mu0
            high = np.where(rejected, middle, high)
            low = np.where(rejected, low, middle)
        else:  # rejection at mu0 means the bound lies above mu0
            low = np.where(rejected, middle, low)
            high = np.where(rejected, high, middle)
    bound = (low + high) / 2.0
    n = entries.n
    return np.asarray(np.where(n > 0, bound, hi if side == "upper" else lo), dtype=np.float64)


def exact_bound(n: int, b: int, c: int, level: float, side: Literal["upper", "lower"]) -> float:
    """One-sided bound for p_c - p_b inverting the exact unconditional test (bisection).

    The p-value is not guaranteed monotone in mu0, so this is the crossing bisection
    finds; the verdicts use the p-values at the margin, not the bound.
    """
    if n <= 0:
        return 1.0 if side == "upper" else -1.0
    alpha = 1.0 - level
    tail: Tail = "lower" if side == "upper" else "upper"
    low, high = -1.0 + 1e-6, 1.0 - 1e-6
    for _ in range(30):
        middle = (low + high) / 2.0
        rejected = exact_pvalue(n, b, c, middle, tail) <= alpha
        if side == "upper":
            high, low = (middle, low) if rejected else (high, middle)
        else:
            low, high = (middle, high) if rejected else (low, middle)
    return (low + high) / 2.0
