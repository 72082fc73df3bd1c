"""Calibration of an evaluator's or a model's probabilities against 0/1 outcomes.

Everything is computed from five per-bin sums (count, sum of p, sum of y, sum of
p^2, sum of p*y), so the drift job can let the database aggregate (SQLite >= 3.25
and PostgreSQL alike):

    SELECT bin, COUNT(*), SUM(p), SUM(y), SUM(p * p), SUM(p * y)
    FROM (SELECT p, y, 10 * (RANK() OVER (ORDER BY p) - 1) / COUNT(*) OVER () AS bin
          FROM scored) AS ranked
    GROUP BY bin

``equal_mass_bins`` computes the same bin for every row, so Python and SQL agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.stats._arrays import FloatArray, IntArray, as_bool_vector, as_float_vector
from app.stats.lazy import scipy_stats
from app.stats.reference import DEFAULT_MIN_DAYS, Reference, robust_random_effects

# Ten equal-mass bins: every bin holds a tenth of the data, so no bin's observed
# frequency rests on a handful of rows (equal-width bins leave the tails nearly
# empty when probabilities crowd near 0 or 1).
DEFAULT_BINS = 10


@dataclass(frozen=True)
class BinStatistics:
    """Per-bin sufficient statistics; arrays of length n_bins."""

    count: FloatArray
    sum_prob: FloatArray
    sum_label: FloatArray
    sum_prob_sq: FloatArray
    sum_prob_label: FloatArray

    @classmethod
    def from_sums(
        cls,
        count: npt.ArrayLike,
        sum_prob: npt.ArrayLike,
        sum_label: npt.ArrayLike,
        sum_prob_sq: npt.ArrayLike,
        sum_prob_label: npt.ArrayLike,
    ) -> BinStatistics:
        """Build from GROUP BY output; empty bins may be omitted or given count 0."""
        columns = [
            np.asarray(v, dtype=np.float64)
            for v in (count, sum_prob, sum_label, sum_prob_sq, sum_prob_label)
        ]
        if len({c.shape for c in columns}) != 1 or columns[0].ndim != 1:
            raise ValueError("bin sums must be 1-D arrays of equal length")
        if columns[0].sum() <= 0:
            raise ValueError("calibration needs at least one row")
        return cls(*columns)

    @property
    def total(self) -> float:
        return float(self.count.sum())


@dataclass(frozen=True)
class BrierDecomposition:
    """Murphy's (1973) decomposition with Stephenson et al.'s (2008) two within-bin terms.

    brier = reliability - resolution + uncertainty + within_bin_variance
    - within_bin_covariance holds exactly; the last two vanish when the
    probabilities are constant within each bin, leaving Murphy's identity.
    """

    brier: float
    reliability: float
    resolution: float
    uncertainty: float
    within_bin_variance: float
    within_bin_covariance: float


@dataclass(frozen=True)
class ReliabilityBin:
    """One point of a reliability diagram."""

    mean_prob: float
    observed_freq: float
    count: int


@dataclass(frozen=True)
class CalibrationSummary:
    decomposition: BrierDecomposition
    ece: float
    diagram: list[ReliabilityBin]


def brier_score(probs: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Mean squared distance between the probability and the 0/1 outcome."""
    p, y = _checked(probs, labels)
    return float(np.mean((p - y) ** 2))


def equal_mass_bins(probs: npt.ArrayLike, n_bins: int = DEFAULT_BINS) -> IntArray:
    """Bin index per row: floor(n_bins * (rows with a smaller probability) / rows).

    Quantile bins that never split tied probabilities: splitting a tie would let
    row order alone manufacture resolution and calibration error, and LLM
    confidences are heavily tied. Without ties every bin holds N/n_bins rows, +-1;
    a value shared by many rows gets one bin to itself and leaves others empty.
    """
    p = as_float_vector(probs, "probs")
    if n_bins < 1:
        raise ValueError("n_bins must be positive")
    smaller = np.searchsorted(np.sort(p), p, side="left")
    return (n_bins * smaller) // max(p.size, 1)


def bin_statistics(
    probs: npt.ArrayLike, labels: npt.ArrayLike, bins: npt.ArrayLike, n_bins: int
) -> BinStatistics:
    """The five sums per bin that every calibration statistic here is computed from."""
    p, y = _checked(probs, labels)
    index = np.asarray(bins, dtype=np.int64)
    if index.shape != p.shape or np.any((index < 0) | (index >= n_bins)):
        raise ValueError("bins must give an index in [0, n_bins) for every row")

    def per_bin(values: FloatArray | None) -> FloatArray:
        return np.bincount(index, weights=values, minlength=n_bins).astype(np.float64)

    return BinStatistics.from_sums(
        per_bin(None), per_bin(p), per_bin(y), per_bin(p * p), per_bin(p * y)
    )


def brier_decomposition(stats: BinStatistics) -> BrierDecomposition:
    """Brier score and its components from the per-bin sums alone (y^2 = y for 0/1 outcomes)."""
    total = stats.total
    filled = stats.count > 0
    count = stats.count[filled]
    mean_prob = stats.sum_prob[filled] / count
    frequency = stats.sum_label[filled] / count
    base_rate = stats.sum_label.sum() / total
    squared_error = (
        stats.sum_prob_sq.sum() - 2.0 * stats.sum_prob_label.sum() + stats.sum_label.sum()
    )
    spread = stats.sum_prob_sq[filled] - count * mean_prob**2
    co_spread = stats.sum_prob_label[filled] - count * mean_prob * frequency
    return BrierDecomposition(
        brier=float(squared_error / total),
        reliability=float(np.sum(count * (mean_prob - frequency) ** 2) / total),
        resolution=float(np.sum(count * (frequency - base_rate) ** 2) / total),
        uncertainty=float(base_rate * (1.0 - base_rate)),
        within_bin_variance=float(np.sum(spread) / total),
        within_bin_covariance=float(2.0 * np.sum(co_spread) / total),
    )


def expected_calibration_error(stats: BinStatistics) -> float:
    """ECE = sum over bins of (bin share) * |mean probability - observed frequency|."""
    return float(np.sum(np.abs(stats.sum_prob - stats.sum_label)) / stats.total)


def reliability_diagram(stats: BinStatistics) -> list[ReliabilityBin]:
    """Mean probability against observed frequency per non-empty bin."""
    return [
        ReliabilityBin(float(sp / c), float(sl / c), round(c))
        for c, sp, sl in zip(stats.count, stats.sum_prob, stats.sum_label, strict=True)
        if c > 0
    ]


def calibration_summary(
    probs: npt.ArrayLike, labels: npt.ArrayLike, n_bins: int = DEFAULT_BINS
) -> CalibrationSummary:
    """Brier decomposition, ECE and reliability diagram over the same equal-mass bins."""
    stats = bin_statistics(probs, labels, equal_mass_bins(probs, n_bins), n_bins)
    return CalibrationSummary(
        brier_decomposition(stats), expected_calibration_error(stats), reliability_diagram(stats)
    )


def _checked(probs: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    p = as_float_vector(probs, "probs")
    if np.any((p < 0.0) | (p > 1.0)):
        raise ValueError("probs must lie in [0, 1]")
    y = as_bool_vector(labels, "labels", p.size).astype(np.float64)
    return p, y


# --- Debiased calibration error and drift bands (docs/statistics.md section 9) -------------
#
# The plug-in ECE above is biased upward: even a perfectly calibrated model's bins differ
# from their mean probability by sampling noise, so a 100-row day of a calibrated model
# reads ECE ~ 0.1. The functions below take the per-bin sums as arrays of shape
# (..., n_bins) so the daily job can judge every cohort at once.

# Below this many labelled rows a day's calibration is not judged.
MIN_CALIBRATION_ROWS = 50


def bin_noise_variance(
    count: npt.ArrayLike,
    sum_prob: npt.ArrayLike,
    sum_label: npt.ArrayLike,
    sum_prob_sq: npt.ArrayLike,
) -> FloatArray:
    """Per bin, an estimate of Var(ybar_k - pbar_k) given the probabilities (0 for empty bins).

    V_k = (ybar(1 - ybar) - s_p^2) / (n_k - 1), with s_p^2 = sum p^2 / n_k - pbar^2 the
    within-bin spread of p. Exactly unbiased when the true event probability of each row is
    its p plus a constant per bin (in particular when calibrated): E[ybar(1 - ybar)] =
    qbar(1 - qbar)(n - 1)/n + s_q^2/n and Var(ybar) = (qbar(1 - qbar) - s_q^2)/n. A bin of
    one row uses the calibrated-null variance p(1 - p).
    """
    n = np.asarray(count, dtype=np.float64)
    safe = np.where(n > 0, n, 1.0)
    pbar = np.asarray(sum_prob, dtype=np.float64) / safe
    ybar = np.asarray(sum_label, dtype=np.float64) / safe
    spread = np.maximum(np.asarray(sum_prob_sq, dtype=np.float64) / safe - pbar**2, 0.0)
    model_free = (ybar * (1.0 - ybar) - spread) / np.where(n > 1, n - 1.0, 1.0)
    single = pbar * (1.0 - pbar)
    return np.asarray(np.where(n > 1, model_free, np.where(n > 0, single, 0.0)), dtype=np.float64)


def debiased_squared_calibration_error(
    count: npt.ArrayLike,
    sum_prob: npt.ArrayLike,
    sum_label: npt.ArrayLike,
    sum_prob_sq: npt.ArrayLike,
) -> FloatArray:
    """sum_k (n_k / N) [(ybar_k - pbar_k)^2 - V_k] over the last axis (bins).

    Unbiased for sum_k (n_k/N) b_k^2, b_k the bin's true miscalibration (in the setting of
    bin_noise_variance); it is the plug-in reliability term (REL) minus its noise, as in
    Broecker (2012) and Kumar et al. (2019). It can be negative; 0 in expectation when
    calibrated. NaN where the day has no rows.
    """
    n = np.asarray(count, dtype=np.float64)
    total = n.sum(axis=-1)
    safe = np.where(n > 0, n, 1.0)
    gap = (np.asarray(sum_label, dtype=np.float64) - np.asarray(sum_prob, dtype=np.float64)) / safe
    noise = bin_noise_variance(count, sum_prob, sum_label, sum_prob_sq)
    value = np.sum(np.where(n > 0, n * (gap**2 - noise), 0.0), axis=-1) / np.where(
        total > 0, total, 1.0
    )
    return np.asarray(np.where(total > 0, value, np.nan), dtype=np.float64)


def debiased_ece(
    count: npt.ArrayLike,
    sum_prob: npt.ArrayLike,
    sum_label: npt.ArrayLike,
    sum_prob_sq: npt.ArrayLike,
) -> FloatArray:
    """Root of the debiased squared calibration error, floored at 0: an RMS calibration error
    on the probability scale for display. Not exactly unbiased (a root and a floor), but a
    calibrated 100-row day reads ~0.04 rather than the plug-in ECE's ~0.1."""
    squared = debiased_squared_calibration_error(count, sum_prob, sum_label, sum_prob_sq)
    return np.asarray(np.sqrt(np.maximum(squared, 0.0)), dtype=np.float64)


def calibration_day_signal(
    count: npt.ArrayLike,
    sum_prob: npt.ArrayLike,
    sum_label: npt.ArrayLike,
    sum_prob_sq: npt.ArrayLike,
    theta: npt.ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray]:
    """(debiased squared calibration error, its approximate sampling variance) per day;
    NaN below MIN_CALIBRATION_ROWS.

    Var ~ sum w_k^2 (2 V_k^2 + 4 b_k^2 V_k), with b_k^2 = ``theta`` (a common squared
    error, broadcast against the days) when given, else the day's own max(0, gap^2 - V_k).
    Weighting days by a variance computed from their own value favours days that happened to
    look well calibrated; estimate_ece_reference therefore passes a common theta.
    """
    n = np.asarray(count, dtype=np.float64)
    total = n.sum(axis=-1)
    safe = np.where(n > 0, n, 1.0)
    gap = (np.asarray(sum_label, dtype=np.float64) - np.asarray(sum_prob, dtype=np.float64)) / safe
    noise = np.maximum(bin_noise_variance(count, sum_prob, sum_label, sum_prob_sq), 1e-12)
    weight = n / np.where(total > 0, total, 1.0)[..., None]
    if theta is None:
        bias2 = np.maximum(gap**2 - noise, 0.0)
    else:
        bias2 = np.maximum(np.asarray(theta, dtype=np.float64), 0.0)[..., None]
    var = np.sum(np.where(n > 0, weight**2 * (2 * noise**2 + 4 * bias2 * noise), 0.0), axis=-1)
    value = debiased_squared_calibration_error(count, sum_prob, sum_label, sum_prob_sq)
    ok = total >= MIN_CALIBRATION_ROWS
    return (
        np.asarray(np.where(ok, value, np.nan), dtype=np.float64),
        np.asarray(np.where(ok, np.maximum(var, 1e-16), np.nan), dtype=np.float64),
    )


def estimate_ece_reference(
    count: npt.ArrayLike,
    sum_prob: npt.ArrayLike,
    sum_label: npt.ArrayLike,
    sum_prob_sq: npt.ArrayLike,
    *,
    min_days: int = DEFAULT_MIN_DAYS,
) -> Reference:
    """Reference squared calibration error per row from (rows x days x bins) sums.

    Two passes: theta_0 = the row's row-weighted mean of the days' debiased values; then
    every day's variance at theta_0, robust screening on the root (RMS) scale and
    DerSimonian-Laird on the raw values (reference.robust_random_effects). ``center`` is
    theta (may be slightly negative for a calibrated model; ece_predictive_pvalue floors it
    at 0) and ``predictive_var()`` is the extra variance ece_predictive_pvalue takes.

    Screened on the root scale: a miscalibration that wobbles from day to day enters the
    statistic squared, so the raw daily values are right-skewed and the 4-SD screen, fitted
    to their median, dropped ordinary high days of most healthy windows (biasing theta and
    tau^2 low and the monitoring scores' right tail heavy). Their roots, sqrt(max(value, 0)),
    move with the miscalibration itself and are near-normal. Their delta-method variance,
    var / (4 (theta_0 + sqrt(var))), is taken at the common theta_0 like ``var`` (at a day's
    own value a high day's root would look surer and be dropped: small cohorts' windows lost
    days again); the sqrt(var) keeps it finite near 0. The screen is the only automatic
    protection of a champion's first window, which has no alert days to leave out: an
    unmarked incident day kept there inflates tau^2 several-fold for the reference's life
    (docs/statistics.md section 9.2).
    """
    value, _ = calibration_day_signal(count, sum_prob, sum_label, sum_prob_sq)
    rows = np.asarray(count, dtype=np.float64).sum(axis=-1)
    seen = np.isfinite(value)
    weight = np.where(seen, rows, 0.0)
    theta0 = np.where(seen, value, 0.0).sum(-1) / np.maximum(weight.sum(-1), 1.0)
    theta0 = np.broadcast_to(np.maximum(theta0, 0.0)[..., None], value.shape)
    value, var = calibration_day_signal(count, sum_prob, sum_label, sum_prob_sq, theta0)
    observed = np.isfinite(value) & np.isfinite(var)
    root = np.sqrt(np.maximum(value, 0.0))
    root_var = var / (4.0 * (theta0 + np.sqrt(var)))
    reference, _ = robust_random_effects(
        value, var, observed, min_days=min_days, screen_on=(root, root_var)
    )
    return reference


def ece_predictive_pvalue(
    count: npt.ArrayLike,
    sum_prob: npt.ArrayLike,
    sum_label: npt.ArrayLike,
    sum_prob_sq: npt.ArrayLike,
    reference_value: npt.ArrayLike,
    reference_extra_var: npt.ArrayLike,
    side: str = "upper",
) -> FloatArray:
    """P-value of today's calibration error against the reference's (scaled chi-square).

    Statistic: the plug-in REL X = sum w_k gap_k^2. Given today's probabilities and a true
    squared calibration error theta (the reference's, floored at 0) spread evenly over the
    bins, X has mean theta + sum w_k V0_k and variance sum w_k^2 (2 V0_k^2 + 4 theta V0_k)
    + extra, with V0_k = (sum p - sum p^2)_k / n_k^2 the calibrated-null noise (it uses p
    only, so it is fixed before the labels are seen) and ``reference_extra_var`` = kappa
    tau^2 + Var(theta_hat) from the reference (Reference.predictive_var). X is matched to
    g chi2(h) by its two moments (Satterthwaite 1946): a skewed null, as X is at small N,
    where a normal band would page on noise. With theta = 0 and no extra variance this is a
    test of calibration itself (the calibrated null; Hosmer-Lemeshow-like). NaN below
    MIN_CALIBRATION_ROWS.
    """
    n = np.asarray(count, dtype=np.float64)
    total = n.sum(axis=-1)
    safe = np.where(n > 0, n, 1.0)
    sp = np.asarray(sum_prob, dtype=np.float64)
    gap = (np.asarray(sum_label, dtype=np.float64) - sp) / safe
    null = np.maximum(sp - np.asarray(sum_prob_sq, dtype=np.float64), 0.0) / safe**2
    weight = n / np.where(total > 0, total, 1.0)[..., None]
    theta = np.maximum(np.nan_to_num(np.asarray(reference_value, dtype=np.float64)), 0.0)
    stat = np.sum(np.where(n > 0, weight * gap**2, 0.0), axis=-1)
    mean = theta + np.sum(weight * null, axis=-1)
    var = np.sum(weight**2 * (2 * null**2 + 4 * theta[..., None] * null), axis=-1) + np.asarray(
        reference_extra_var, dtype=np.float64
    )
    ok = (total >= MIN_CALIBRATION_ROWS) & (mean > 0) & (var > 0) & np.isfinite(var)
    safe_var = np.where(ok, var, 1.0)
    safe_mean = np.where(ok, mean, 1.0)
    scale, df = safe_var / (2 * safe_mean), 2 * safe_mean**2 / safe_var
    upper = scipy_stats.chi2.sf(stat / scale, df)
    if side == "upper":
        p = upper
    elif side == "lower":
        p = scipy_stats.chi2.cdf(stat / scale, df)
    elif side == "two-sided":
        p = np.minimum(1.0, 2 * np.minimum(upper, scipy_stats.chi2.cdf(stat / scale, df)))
    else:
        raise ValueError("side must be upper, lower or two-sided")
    return np.asarray(np.where(ok, p, np.nan), dtype=np.float64)


def brier_day_signal(
    count: npt.ArrayLike,
    sum_prob: npt.ArrayLike,
    sum_label: npt.ArrayLike,
    sum_prob_sq: npt.ArrayLike,
    sum_prob_label: npt.ArrayLike,
    sum_sq_error_sq: npt.ArrayLike | None = None,
) -> tuple[FloatArray, FloatArray]:
    """(Brier score, its sampling variance) per day from the sums over the last axis (bins).

    Var = (sum (p - y)^4 / N - BS^2) / (N - 1), the sample variance of the rows' squared
    errors over N. ``sum_sq_error_sq`` = SUM(POWER(p - y, 4)) (one value per day) makes it
    exact; the drift job stores only the five per-bin sums, so without it the sum is
    estimated per bin from them (_fourth_power_sum): no assumption of calibration, which a
    day being judged for drift cannot be granted (the calibrated-null bound sum p(1 - p) / N^2
    used before read 0 for 0/1 probabilities and half the truth for an overconfident model,
    and four times it for a calibrated one). NaN below MIN_CALIBRATION_ROWS. Band it with
    continuous.estimate_mean_reference and friends.
    """
    n = np.asarray(count, dtype=np.float64).sum(axis=-1)
    sy = np.asarray(sum_label, dtype=np.float64).sum(axis=-1)
    spp = np.asarray(sum_prob_sq, dtype=np.float64).sum(axis=-1)
    spy = np.asarray(sum_prob_label, dtype=np.float64).sum(axis=-1)
    safe = np.where(n > 1, n, 2.0)
    brier = (spp - 2 * spy + sy) / safe
    if sum_sq_error_sq is None:
        fourth = _fourth_power_sum(count, sum_prob, sum_label, sum_prob_label)
    else:
        fourth = np.asarray(sum_sq_error_sq, dtype=np.float64)
    var = np.maximum(fourth / safe - brier**2, 0.0) / (safe - 1.0)
    ok = n >= MIN_CALIBRATION_ROWS
    var = np.maximum(var, 1e-12)
    return (
        np.asarray(np.where(ok, brier, np.nan), dtype=np.float64),
        np.asarray(np.where(ok, var, np.nan), dtype=np.float64),
    )


def _fourth_power_sum(
    count: npt.ArrayLike,
    sum_prob: npt.ArrayLike,
    sum_label: npt.ArrayLike,
    sum_prob_label: npt.ArrayLike,
) -> FloatArray:
    """SUM((p - y)^4) over the last axis (bins), estimated from the per-bin sums.

    (p - y)^4 is (1 - p)^4 for a row labelled 1 and p^4 for one labelled 0; each bin's
    labelled-1 rows are given their mean probability (sum p*y / sum y) and its labelled-0
    rows theirs. Exact when the probability is constant within a bin (0/1 probabilities,
    heavily tied confidences); otherwise low by the within-bin spread of p, which equal-mass
    bins keep small (2-4% of the Brier variance in simulation)."""
    n = np.asarray(count, dtype=np.float64)
    sp = np.asarray(sum_prob, dtype=np.float64)
    sy = np.asarray(sum_label, dtype=np.float64)
    spy = np.asarray(sum_prob_label, dtype=np.float64)
    negatives = n - sy
    p_positive = spy / np.where(sy > 0, sy, 1.0)
    p_negative = (sp - spy) / np.where(negatives > 0, negatives, 1.0)
    per_bin = sy * (1.0 - p_positive) ** 4 + negatives * p_negative**4
    return np.asarray(np.sum(per_bin, axis=-1), dtype=np.float64)
