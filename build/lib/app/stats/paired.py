"""Paired comparison of a candidate run with the champion's run over the same rows.

Both runs score the same rows, so every statistic here works on per-row
differences (or on the 2x2 table of pass/fail agreement) rather than on two
independent samples: pairing removes the between-row variance that dominates LLM
evaluations. Everything is vectorised across cohorts because a gate asks the same
questions of ~50 cohorts x 8 evaluators and must answer in well under a second.
The methods and their defaults are argued in docs/statistics.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

from app.stats._arrays import (
    BoolArray,
    FloatArray,
    IntArray,
    as_bool_vector,
    as_float_vector,
    as_membership,
)
from app.stats.policy import GatePolicy

# Above this many rows the expanded-percentile bootstrap and the Student-t interval
# agree to within the bootstrap's own Monte-Carlo error, so the analytic one is used.
DEFAULT_MAX_BOOTSTRAP_N = 200

Status = Literal["pending", "unguarded", "regressed", "non_inferior", "inconclusive"]


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value.

    Only the b + c discordant rows carry evidence about a change in pass rate;
    under no change each is equally likely to go either way, so the test is
    binomtest(min(b, c), b + c, 0.5). No discordant rows means no evidence: 1.0.
    """
    if b < 0 or c < 0:
        raise ValueError("discordant counts must be non-negative")
    return float(_mcnemar_pvalues(np.array([b]), np.array([c]))[0])


def _mcnemar_pvalues(b: IntArray, c: IntArray) -> FloatArray:
    """Vectorised exact McNemar: doubling the smaller tail is exact because p = 1/2 is symmetric."""
    tail = stats.binom.cdf(np.minimum(b, c), b + c, 0.5)
    return np.asarray(np.minimum(1.0, 2.0 * tail), dtype=np.float64)


def wilson_interval(
    successes: npt.ArrayLike, n: npt.ArrayLike, confidence: float = 0.95
) -> tuple[FloatArray, FloatArray]:
    """Wilson score interval for a binomial proportion, vectorised.

    Unlike the Wald interval it never collapses to zero width at 0/n or n/n,
    which matters for the small, near-perfect cohorts a gate sees. n == 0 gives
    the uninformative (0, 1).
    """
    x = np.asarray(successes, dtype=np.float64)
    total = np.asarray(n, dtype=np.float64)
    if np.any(x < 0) or np.any(x > total):
        raise ValueError("successes must lie between 0 and n")
    z = _two_sided_z(confidence)
    safe_n = np.where(total > 0, total, 1.0)
    rate = x / safe_n
    shrink = 1.0 + z * z / safe_n
    centre = (rate + z * z / (2.0 * safe_n)) / shrink
    half = z * np.sqrt(rate * (1.0 - rate) / safe_n + z * z / (4.0 * safe_n * safe_n)) / shrink
    low = np.where((total > 0) & (x > 0), np.clip(centre - half, 0.0, 1.0), 0.0)
    high = np.where((total > 0) & (x < total), np.clip(centre + half, 0.0, 1.0), 1.0)
    return low, high


def paired_pass_interval(
    both_pass: npt.ArrayLike,
    b: npt.ArrayLike,
    c: npt.ArrayLike,
    both_fail: npt.ArrayLike,
    confidence: float = 0.95,
) -> tuple[FloatArray, FloatArray]:
    """Newcombe (1998) method 10 interval for candidate minus baseline pass rate on paired rows.

    Square-and-add of the two Wilson intervals, corrected for the correlation the
    pairing induces (continuity-corrected phi, so identical runs never get a
    zero-width interval). Closed form, hence vectorised, with near-nominal
    coverage where the Wald and exact conditional intervals fail (Newcombe 1998).
    b = baseline-only passes, c = candidate-only passes.
    """
    both = np.asarray(both_pass, dtype=np.float64)
    lost = np.asarray(b, dtype=np.float64)
    won = np.asarray(c, dtype=np.float64)
    neither = np.asarray(both_fail, dtype=np.float64)
    n = both + lost + won + neither
    safe_n = np.where(n > 0, n, 1.0)
    candidate, baseline = (both + won) / safe_n, (both + lost) / safe_n
    cand_low, cand_high = wilson_interval(both + won, n, confidence)
    base_low, base_high = wilson_interval(both + lost, n, confidence)
    phi = _newcombe_phi(both, lost, won, neither)
    delta = candidate - baseline
    low = delta - _square_and_add(candidate - cand_low, base_high - baseline, phi)
    high = delta + _square_and_add(baseline - base_low, cand_high - candidate, phi)
    return (
        np.where(n > 0, np.clip(low, -1.0, 1.0), -1.0),
        np.where(n > 0, np.clip(high, -1.0, 1.0), 1.0),
    )


def _newcombe_phi(
    both: FloatArray, lost: FloatArray, won: FloatArray, neither: FloatArray
) -> FloatArray:
    """Newcombe's continuity-corrected correlation between the paired pass indicators."""
    n = both + lost + won + neither
    cross = both * neither - lost * won
    margins = (both + won) * (lost + neither) * (both + lost) * (won + neither)
    corrected = np.where(cross > n / 2.0, cross - n / 2.0, np.minimum(cross, 0.0))
    return np.where(margins > 0, corrected / np.sqrt(np.where(margins > 0, margins, 1.0)), 0.0)


def _square_and_add(first: FloatArray, second: FloatArray, phi: FloatArray) -> FloatArray:
    return np.sqrt(np.maximum(first**2 + second**2 - 2.0 * phi * first * second, 0.0))


@dataclass(frozen=True)
class MeanDifference:
    """Per-cohort paired mean difference; every array is aligned with the membership rows.

    ``bootstrapped`` marks the cohorts whose interval and p-value came from the
    expanded-percentile bootstrap; the others used the Student-t interval.
    """

    n: IntArray
    mean: FloatArray
    sd: FloatArray
    ci_low: FloatArray
    ci_high: FloatArray
    p_value: FloatArray
    bootstrapped: BoolArray


def paired_bootstrap_mean_diff(
    diffs: npt.ArrayLike,
    membership: npt.ArrayLike,
    n_resamples: int = 2000,
    seed: int = 0,
    confidence: float = 0.95,
    max_bootstrap_n: int = DEFAULT_MAX_BOOTSTRAP_N,
) -> MeanDifference:
    """Mean of d = candidate - baseline per cohort, with interval and two-sided p-value.

    One call covers every cohort of one evaluator (``membership`` is cohorts x
    rows). Cohorts of 2..max_bootstrap_n rows get Hesterberg's expanded-percentile
    bootstrap, whose p-value is the inversion of that same interval; larger ones
    get the Student-t interval and paired t-test, which the bootstrap converges to.
    All cohorts resample from one shared uniform matrix (common random numbers).
    Rows with identical scores contribute d = 0. Cohorts with fewer than two rows
    have no interval (NaN) and p = 1. Seeded, so verdicts are reproducible.
    """
    d = as_float_vector(diffs, "diffs")
    cohorts = as_membership(membership, d.size)
    alpha = 1.0 - confidence
    n, mean, sd = _cohort_moments(d, cohorts)
    ci_low, ci_high, p_value = _student_t(n, mean, sd, alpha)
    small = np.flatnonzero((n >= 2) & (n <= max_bootstrap_n))
    if small.size:
        rng = np.random.default_rng(seed)
        uniforms = rng.random((int(n[small].max()), n_resamples))
        levels = _expanded_alpha(alpha, n[small])
        tails = np.empty(small.size)
        for j, k in enumerate(small):
            means = _resample_means(d[cohorts[k]], uniforms)
            ci_low[k], ci_high[k] = np.quantile(means, [levels[j] / 2.0, 1.0 - levels[j] / 2.0])
            tails[j] = min(np.count_nonzero(means <= 0.0), np.count_nonzero(means >= 0.0))
        percentile_p = np.minimum(1.0, 2.0 * (tails + 1.0) / (n_resamples + 1.0))
        p_value[small] = _unexpanded_alpha(percentile_p, n[small])
    bootstrapped = np.zeros(n.size, dtype=np.bool_)
    bootstrapped[small] = True
    return MeanDifference(n, mean, sd, ci_low, ci_high, p_value, bootstrapped)


def _cohort_moments(d: FloatArray, cohorts: BoolArray) -> tuple[IntArray, FloatArray, FloatArray]:
    """Count, mean and sample SD per cohort from two matrix products (no per-cohort loop)."""
    weights = cohorts.astype(np.float64)
    n = cohorts.sum(axis=1).astype(np.int64)
    totals = weights @ np.column_stack([d, d * d])
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = totals[:, 0] / n
        variance = (totals[:, 1] - n * mean * mean) / (n - 1)
    sd = np.where(n >= 2, np.sqrt(np.maximum(variance, 0.0)), np.nan)
    return n, mean, sd


def _student_t(
    n: IntArray, mean: FloatArray, sd: FloatArray, alpha: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Paired-t interval and p-value; a zero-SD cohort gets [mean, mean] and p in {0, 1}."""
    defined = n >= 2
    dof = np.where(defined, n - 1, 1)
    se = np.where(defined, sd / np.sqrt(np.maximum(n, 1)), np.nan)
    half = stats.t.isf(alpha / 2.0, dof) * se
    with np.errstate(invalid="ignore", divide="ignore"):
        t_stat = np.abs(mean) / se
    p_value = np.where(se > 0, 2.0 * stats.t.sf(t_stat, dof), np.where(mean == 0, 1.0, 0.0))
    return (
        np.where(defined, mean - half, np.nan),
        np.where(defined, mean + half, np.nan),
        np.where(defined, p_value, 1.0),
    )


def _resample_means(cohort_diffs: FloatArray, uniforms: FloatArray) -> FloatArray:
    """Bootstrap means from a (draw x resample) uniform matrix shared by all cohorts.

    floor(u * n) turns the shared draws into resampling indices for any cohort
    size, so the generator runs once per call, not once per cohort. A cohort of n
    rows reads the first n draws, which the generator emits first whatever the
    matrix height: its resamples depend only on the seed and its own rows.
    """
    n = cohort_diffs.size
    rows = (uniforms[:n] * n).astype(np.intp)
    return np.asarray(cohort_diffs[rows].mean(axis=0), dtype=np.float64)


def _expanded_alpha(alpha: float, n: IntArray) -> FloatArray:
    """Hesterberg's (2015) percentile level for the expanded percentile interval.

    The plain percentile interval is too narrow for small n (it uses the plug-in
    variance and normal quantiles). Taking the percentiles at the level whose
    normal quantile is sqrt(n/(n-1)) * t_{n-1, 1-alpha/2} fixes the width while
    keeping the bootstrap's skewness.
    """
    z = np.sqrt(n / (n - 1.0)) * stats.t.isf(alpha / 2.0, n - 1)
    return np.asarray(2.0 * stats.norm.sf(z), dtype=np.float64)


def _unexpanded_alpha(expanded: FloatArray, n: IntArray) -> FloatArray:
    """Inverse of ``_expanded_alpha``: turns the percentile p-value into the nominal one.

    The percentile p-value is the smallest expanded level whose interval excludes
    0 (with the (count + 1) / (B + 1) Monte-Carlo correction), so the result is
    the smallest alpha whose expanded interval excludes 0: interval and p agree.
    """
    t_quantile = stats.norm.isf(expanded / 2.0) * np.sqrt((n - 1.0) / n)
    return np.asarray(np.minimum(1.0, 2.0 * stats.t.sf(t_quantile, n - 1)), dtype=np.float64)


def adjust_pvalues(p: npt.ArrayLike, method: Literal["holm", "bh"] = "holm") -> FloatArray:
    """Multiplicity-adjusted p-values over one gate's guarded cohorts x evaluators.

    "holm" (Holm 1979) controls the chance of any false "regressed" verdict, the
    error that wrongly blocks a release; "bh" (Benjamini-Hochberg 1995) controls
    the expected share of false ones among the flagged cohorts.
    """
    raw = as_float_vector(p, "p")
    if np.any((raw < 0.0) | (raw > 1.0)):
        raise ValueError("p-values must lie in [0, 1]")
    order = np.argsort(raw, kind="stable")
    ranked = raw[order]
    m = raw.size
    rank = np.arange(1, m + 1)
    if method == "holm":
        stepped = np.maximum.accumulate(ranked * (m - rank + 1))
    elif method == "bh":
        stepped = np.minimum.accumulate((ranked * m / rank)[::-1])[::-1]
    else:
        raise ValueError(f"unknown correction {method!r}")
    adjusted = np.empty(m, dtype=np.float64)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def required_pairs(
    min_effect: float,
    *,
    discordance_rate: npt.ArrayLike | None = None,
    sd: npt.ArrayLike | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
) -> IntArray:
    """Paired rows needed for a two-sided level-alpha test to detect ``min_effect`` with ``power``.

    Give ``discordance_rate`` (share of rows whose pass/fail differs) for McNemar,
    using Connor's (1987) approximation
        n = (z_{1-a/2} sqrt(psi) + z_{power} sqrt(psi - delta^2))^2 / delta^2,
    where psi is raised to delta when smaller (a change of delta needs at least
    that much discordance). Give ``sd`` (of the per-row differences) for mean
    scores, using the paired normal approximation n = ((z_{1-a/2} + z_{power}) sd / delta)^2.
    """
    if (discordance_rate is None) == (sd is None):
        raise ValueError("give exactly one of discordance_rate and sd")
    if min_effect <= 0.0:
        raise ValueError("min_effect must be positive")
    z_alpha, z_power = _two_sided_z(1.0 - alpha), float(stats.norm.ppf(power))
    if sd is not None:
        spread = np.asarray(sd, dtype=np.float64)
        rows = ((z_alpha + z_power) * spread / min_effect) ** 2
    else:
        psi = np.clip(np.asarray(discordance_rate, dtype=np.float64), min_effect, 1.0)
        root = z_alpha * np.sqrt(psi) + z_power * np.sqrt(psi - min_effect**2)
        rows = (root / min_effect) ** 2
    return np.ceil(rows - 1e-9).astype(np.int64)


def _two_sided_z(confidence: float) -> float:
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must lie strictly between 0 and 1")
    return float(stats.norm.isf((1.0 - confidence) / 2.0))


@dataclass(frozen=True)
class CohortMeta:
    """What the gate knows about a cohort besides its rows.

    Unguarded cohorts are reported but neither adjusted nor decided. A high-risk
    cohort also blocks on per-cohort evidence of a drop beyond the margin, without
    waiting for multiplicity-adjusted significance. ``floor`` (the lowest
    acceptable candidate value of the guarded metric) overrides the policy's.
    """

    name: str
    guarded: bool = True
    high_risk: bool = False
    floor: float | None = None


@dataclass(frozen=True)
class CohortComparison:
    """One cohort of one evaluator, candidate versus champion; ``dataclasses.asdict`` gives JSON.

    Undefined statistics (no rows, or one row for the score interval) are None,
    never NaN, so the record survives strict JSON encoders.
    """

    cohort_index: int
    cohort_name: str
    guarded: bool
    high_risk: bool
    n: int
    baseline_mean: float | None
    candidate_mean: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float
    baseline_pass_rate: float | None
    candidate_pass_rate: float | None
    pass_delta: float | None
    pass_ci_low: float
    pass_ci_high: float
    pass_p_value: float
    discordant_b: int
    discordant_c: int
    p_adjusted: float | None
    underpowered: bool
    required_n: int | None
    floor: float | None
    status: Status
    reason: str


def compare_cohorts(
    baseline_scores: npt.ArrayLike,
    candidate_scores: npt.ArrayLike,
    baseline_passed: npt.ArrayLike,
    candidate_passed: npt.ArrayLike,
    membership: npt.ArrayLike,
    cohort_meta: Sequence[CohortMeta],
    policy: GatePolicy,
) -> list[CohortComparison]:
    """Compare the two runs of one evaluator in every cohort at once.

    Returns records with status "pending" (or "unguarded"); the verdicts need
    p-values adjusted across all evaluators of the gate, which is
    ``app.stats.noninferiority.apply_gate``'s job.
    """
    baseline = as_float_vector(baseline_scores, "baseline_scores")
    candidate = as_float_vector(candidate_scores, "candidate_scores", baseline.size)
    base_pass = as_bool_vector(baseline_passed, "baseline_passed", baseline.size)
    cand_pass = as_bool_vector(candidate_passed, "candidate_passed", baseline.size)
    cohorts = as_membership(membership, baseline.size)
    if len(cohort_meta) != cohorts.shape[0]:
        raise ValueError("cohort_meta needs one entry per membership row")
    scores = paired_bootstrap_mean_diff(
        candidate - baseline,
        cohorts,
        n_resamples=policy.n_resamples,
        seed=policy.seed,
        confidence=policy.confidence,
    )
    weights = cohorts.astype(np.float64)
    n = scores.n
    safe_n = np.maximum(n, 1)
    means = weights @ np.column_stack([baseline, candidate]) / safe_n[:, None]
    table = np.column_stack([base_pass & cand_pass, base_pass & ~cand_pass, ~base_pass & cand_pass])
    both, lost, won = np.rint(weights @ table).astype(np.int64).T
    pass_low, pass_high = paired_pass_interval(
        both, lost, won, n - both - lost - won, policy.confidence
    )
    pass_p = _mcnemar_pvalues(lost, won)
    required = _required_rows(policy, n, scores.sd, (lost + won) / safe_n)
    records = []
    for k, meta in enumerate(cohort_meta):
        empty, needed = n[k] == 0, required[k]
        records.append(
            CohortComparison(
                cohort_index=k,
                cohort_name=meta.name,
                guarded=meta.guarded,
                high_risk=meta.high_risk,
                n=int(n[k]),
                baseline_mean=None if empty else float(means[k, 0]),
                candidate_mean=None if empty else float(means[k, 1]),
                delta=_optional(scores.mean[k]),
                ci_low=_optional(scores.ci_low[k]),
                ci_high=_optional(scores.ci_high[k]),
                p_value=float(scores.p_value[k]),
                baseline_pass_rate=None if empty else float((both[k] + lost[k]) / n[k]),
                candidate_pass_rate=None if empty else float((both[k] + won[k]) / n[k]),
                pass_delta=None if empty else float((won[k] - lost[k]) / n[k]),
                pass_ci_low=float(pass_low[k]),
                pass_ci_high=float(pass_high[k]),
                pass_p_value=float(pass_p[k]),
                discordant_b=int(lost[k]),
                discordant_c=int(won[k]),
                p_adjusted=None,
                underpowered=needed is not None and int(n[k]) < needed,
                required_n=needed,
                floor=policy.floor if meta.floor is None else meta.floor,
                status="pending" if meta.guarded else "unguarded",
                reason="",
            )
        )
    return records


def _required_rows(
    policy: GatePolicy, n: IntArray, sd: FloatArray, discordance: FloatArray
) -> list[int | None]:
    """Rows needed for the policy's metric, never fewer than the policy's minimum_rows.

    None when the nuisance parameter cannot be estimated: no rows for the pass
    rate, fewer than two rows (no SD) for the mean score.
    """
    if policy.metric == "pass_rate":
        defined = n >= 1
        needed = required_pairs(
            policy.effect, discordance_rate=discordance, alpha=policy.alpha, power=policy.power
        )
    else:
        defined = n >= 2
        needed = required_pairs(
            policy.effect, sd=np.nan_to_num(sd), alpha=policy.alpha, power=policy.power
        )
    return [
        max(int(rows), policy.minimum_rows) if ok else None
        for rows, ok in zip(needed, defined, strict=True)
    ]


def _optional(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
