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
