"""How many rows a guarded cohort needs, and how noisy an evaluator is between repeats.

A gate can only pass when *every* guarded comparison (cohort x evaluator) shows
non-inferiority, and it should block a real drop of twice the margin. So the rows a
cohort needs are the larger of two sample sizes for the score test of
``app.stats.margin`` (Nam 1997's formula for score tests, with the constrained
variance under the null and the plain variance under the alternative):

    n = ((z_a * sigma_0 + z_b * sigma_1) / |mu_1 - mu_0|)^2

* pass: truth Delta = 0 (an unchanged candidate), null mu_0 = -margin, one-sided
  level alpha/2, power 1 - (1 - power) / G for G guarded comparisons, so that by the
  union bound all G pass together with probability >= power;
* block: truth Delta = -(margin + effect) (twice the margin by default), null
  mu_0 = -margin, level alpha * share, where share is the comparison's part of the
  block family's budget (its weight at the first step of weighted Holm; 1/B for B
  equally weighted tests), power ``block_power``.

The distribution of a per-row difference under each truth comes from what was seen
(the cohort's differences, symmetrised about 0) or, before any run, from a prior
flip rate. The formulas are argued in docs/statistics.md; bench/decisions.py checks
that the rows they ask for deliver the promised pass and block rates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.stats._arrays import FloatArray
from app.stats.lazy import scipy_stats as stats
from app.stats.margin import restricted_variance


@dataclass(frozen=True)
class Requirement:
    """The rows needed to decide at the margin, and which of the two questions needs them."""

    rows: int
    pass_rows: int
    block_rows: int


def required_rows(
    support: npt.ArrayLike,
    weights: npt.ArrayLike,
    margin: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    block_power: float = 0.9,
    effect: float | None = None,
    guarded_comparisons: int = 1,
    block_share: float = 1.0,
) -> Requirement:
    """Rows needed by one guarded comparison, given the spread of a per-row difference.

    ``support``/``weights`` describe the per-row differences when nothing changed
    (any mean is removed by symmetrising). ``effect`` (default: the margin) is how
    far beyond the margin a drop must be to be blocked with ``block_power``.
    """
    if not 0.0 < margin < 1.0:
        raise ValueError("margin must lie strictly between 0 and 1")
    if guarded_comparisons < 1 or not 0.0 < block_share <= 1.0:
        raise ValueError("need guarded_comparisons >= 1 and 0 < block_share <= 1")
    values = np.asarray(support, dtype=np.float64)
    mass = np.asarray(weights, dtype=np.float64)
    if values.shape != mass.shape or values.ndim != 1 or mass.sum() <= 0 or np.any(mass < 0):
        raise ValueError("support and weights must be matching 1-D arrays with positive mass")
    drop = margin + (margin if effect is None else effect)
    if drop >= 1.0:
        raise ValueError("margin + effect must stay below 1")
    sym_values = np.concatenate([values, -values])
    sym_mass = np.concatenate([mass, mass]) / (2.0 * mass.sum())
    z_pass = float(stats.norm.isf(alpha / 2.0))
    z_pass_power = float(stats.norm.isf((1.0 - power) / guarded_comparisons))
    pass_rows = _rows(sym_values, sym_mass, 0.0, -margin, z_pass, z_pass_power)
    drop_values = np.append(sym_values, -1.0)
    drop_mass = np.append(sym_mass * (1.0 - drop), drop)
    z_block = float(stats.norm.isf(alpha * block_share))
    z_block_power = float(stats.norm.ppf(block_power))
    block_rows = _rows(drop_values, drop_mass, -drop, -margin, z_block, z_block_power)
    return Requirement(max(pass_rows, block_rows), pass_rows, block_rows)


def _rows(
    values: FloatArray, mass: FloatArray, truth: float, null: float, z_a: float, z_b: float
) -> int:
    """Nam's (1997) score-test sample size for one one-sided comparison."""
    sigma_1 = math.sqrt(max(float(mass @ (values - truth) ** 2), 0.0))
    sigma_0 = math.sqrt(float(restricted_variance(values, mass[None, :], np.array([null]))[0]))
    n = ((z_a * sigma_0 + z_b * sigma_1) / abs(truth - null)) ** 2
    return max(2, math.ceil(n - 1e-9))


def prior_difference(
    flip_rate: float, baseline_repeats: int = 1, candidate_repeats: int = 1
) -> tuple[FloatArray, FloatArray]:
    """Distribution of a per-row mean difference for an unchanged candidate, from a flip rate.

    ``flip_rate`` is the chance that two runs of the same model disagree on a row
    (at most 1/2). Rows are taken to be of two kinds, as real golden sets are: a
    share 2 * flip_rate that are a coin toss (pass probability 1/2) and the rest that
    always give the same verdict. This U-shaped extreme gives the flip rate with the
    fewest flipping rows, and the variance of the difference is exactly
    flip_rate * (1/k_baseline + 1/k_candidate) / 2 whatever the mix.
    """
    if not 0.0 <= flip_rate <= 0.5:
        raise ValueError("a flip rate lies between 0 and 1/2")
    if baseline_repeats < 1 or candidate_repeats < 1:
        raise ValueError("repeats must be at least 1")
    k0, k1 = baseline_repeats, candidate_repeats
    p0 = stats.binom.pmf(np.arange(k0 + 1), k0, 0.5)
    p1 = stats.binom.pmf(np.arange(k1 + 1), k1, 0.5)
    diffs = (np.arange(k1 + 1)[:, None] / k1 - np.arange(k0 + 1)[None, :] / k0).ravel()
    probs = (p1[:, None] * p0[None, :]).ravel()
    rounded = np.round(diffs, 12)
    values, index = np.unique(rounded, return_inverse=True)
    mass = np.bincount(index, weights=probs, minlength=values.size) * (2.0 * flip_rate)
    zero = int(np.flatnonzero(values == 0.0)[0])
    mass[zero] += 1.0 - 2.0 * flip_rate
    return np.asarray(values, dtype=np.float64), np.asarray(mass, dtype=np.float64)


def required_rows_prior(
    flip_rate: float,
    margin: float,
    *,
    baseline_repeats: int = 1,
    candidate_repeats: int = 1,
    alpha: float = 0.05,
    power: float = 0.8,
    block_power: float = 0.9,
    effect: float | None = None,
    guarded_comparisons: int = 1,
    block_share: float = 1.0,
) -> Requirement:
    """Rows a guarded cohort needs before any run exists, from a stated prior flip rate."""
    values, mass = prior_difference(flip_rate, baseline_repeats, candidate_repeats)
    return required_rows(
        values,
        mass,
        margin,
        alpha=alpha,
        power=power,
        block_power=block_power,
        effect=effect,
        guarded_comparisons=guarded_comparisons,
        block_share=block_share,
    )


@dataclass(frozen=True)
class FlipRate:
    """How often two repeats of the same row disagree, with its standard error (None if unknown)."""

    estimate: float | None
    standard_error: float | None
    rows: int


def flip_rate(passes: npt.ArrayLike, repeats: npt.ArrayLike) -> FlipRate:
    """Per-evaluator flip rate from k >= 2 repeats per row of one run.

    For a row with x passes in k repeats, 2 x (k - x) / (k (k - 1)) is the share of
    ordered pairs of distinct repeats that disagree: an unbiased estimate of the
    row's chance that two runs disagree, 2 pi (1 - pi). Averaged over the rows with at
    least two repeats; the standard error is the rows' SD over sqrt(rows).
    """
    x = np.asarray(passes, dtype=np.float64)
    k = np.broadcast_to(np.asarray(repeats, dtype=np.float64), x.shape)
    if x.ndim != 1 or np.any(x < 0) or np.any(x > k):
        raise ValueError("passes must be a 1-D array within 0..repeats")
    usable = k >= 2
    rows = int(usable.sum())
    if rows == 0:
        return FlipRate(None, None, 0)
    per_row = 2.0 * x[usable] * (k[usable] - x[usable]) / (k[usable] * (k[usable] - 1.0))
    se = float(per_row.std(ddof=1) / math.sqrt(rows)) if rows >= 2 else None
    return FlipRate(float(per_row.mean()), se, rows)
