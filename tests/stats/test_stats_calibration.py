"""app.stats.calibration: hand-computed decompositions, the identities, and SQL aggregation."""

from __future__ import annotations

import dataclasses
import sqlite3

import numpy as np
import pytest

from app.stats.calibration import (
    BinStatistics,
    bin_statistics,
    brier_decomposition,
    brier_score,
    calibration_summary,
    equal_mass_bins,
    expected_calibration_error,
    reliability_diagram,
)

# Ten forecast values, ten rows each; observed frequencies chosen so every bin
# misses by exactly 0.05. By hand: base rate 0.49, uncertainty 0.49 * 0.51 = 0.2499,
# reliability 0.05^2 = 0.0025, resolution sum((o_k - 0.49)^2) / 10 = 0.1049,
# Brier 0.0025 - 0.1049 + 0.2499 = 0.1475, ECE 0.05.
FORECASTS = np.repeat(np.arange(0.05, 1.0, 0.1), 10)
HITS_PER_BIN = [0, 1, 2, 3, 5, 5, 6, 8, 9, 10]
OUTCOMES = np.concatenate([np.arange(10) < hits for hits in HITS_PER_BIN])


def random_forecasts(seed: int, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probs = np.round(rng.beta(2, 3, n), 2)  # rounded, so many rows tie
    labels = rng.random(n) < np.clip(probs + 0.1, 0, 1)
    return probs, labels


def test_hand_computed_decomposition() -> None:
    summary = calibration_summary(FORECASTS, OUTCOMES)
    d = summary.decomposition
    assert d.uncertainty == pytest.approx(0.2499, abs=1e-12)
    assert d.reliability == pytest.approx(0.0025, abs=1e-12)
    assert d.resolution == pytest.approx(0.1049, abs=1e-12)
    assert d.brier == pytest.approx(0.1475, abs=1e-12)
    assert d.brier == pytest.approx(brier_score(FORECASTS, OUTCOMES), abs=1e-12)
    assert d.within_bin_variance == pytest.approx(0.0, abs=1e-12)
    assert d.within_bin_covariance == pytest.approx(0.0, abs=1e-12)
    assert summary.ece == pytest.approx(0.05, abs=1e-12)


def test_murphy_identity_is_exact_when_forecasts_are_constant_within_bins() -> None:
    d = calibration_summary(FORECASTS, OUTCOMES).decomposition
    assert d.brier == pytest.approx(d.reliability - d.resolution + d.uncertainty, abs=1e-12)


@pytest.mark.parametrize("n_bins", [1, 5, 10, 37])
def test_extended_identity_holds_for_any_binning(n_bins: int) -> None:
    probs, labels = random_forecasts(n_bins)
    stats = bin_statistics(probs, labels, equal_mass_bins(probs, n_bins), n_bins)
    d = brier_decomposition(stats)
    assert d.brier == pytest.approx(brier_score(probs, labels), abs=1e-12)
    rebuilt = (
        d.reliability
        - d.resolution
        + d.uncertainty
        + d.within_bin_variance
        - d.within_bin_covariance
    )
    assert d.brier == pytest.approx(rebuilt, abs=1e-12)
    if n_bins >= 5:  # Murphy's three terms alone are approximate once bins are narrow
        assert d.brier == pytest.approx(d.reliability - d.resolution + d.uncertainty, abs=0.01)


def test_climatology_has_no_reliability_or_resolution() -> None:
    labels = np.arange(200) < 50
    d = calibration_summary(np.full(200, 0.25), labels).decomposition
    assert d.reliability == pytest.approx(0.0, abs=1e-15)
    assert d.resolution == pytest.approx(0.0, abs=1e-15)
    assert d.brier == pytest.approx(d.uncertainty) == pytest.approx(0.1875)


def test_perfect_forecast_resolves_all_uncertainty() -> None:
    labels = np.arange(100) % 3 == 0
    d = calibration_summary(labels.astype(float), labels).decomposition
    assert d.brier == 0.0 and d.reliability == 0.0
    assert d.resolution == pytest.approx(d.uncertainty)


def test_reliability_diagram_points() -> None:
    diagram = calibration_summary(FORECASTS, OUTCOMES).diagram
    assert [b.count for b in diagram] == [10] * 10
    assert [b.mean_prob for b in diagram] == pytest.approx(np.arange(0.05, 1.0, 0.1))
    assert [b.observed_freq for b in diagram] == pytest.approx(np.array(HITS_PER_BIN) / 10)


def test_equal_mass_bins_hold_a_tenth_each_without_ties() -> None:
    probs = np.random.default_rng(0).random(23)
    bins = equal_mass_bins(probs, 10)
    assert sorted(np.bincount(bins, minlength=10).tolist()) == [2] * 7 + [3] * 3
    assert np.all(np.diff(bins[np.argsort(probs)]) >= 0)


def test_equal_mass_bins_never_split_ties() -> None:
    probs = np.array([0.9] * 60 + [0.5] * 30 + [0.1] * 10)
    bins = equal_mass_bins(probs, 10)
    assert bins.tolist() == [4] * 60 + [1] * 30 + [0] * 10
    shuffled = np.random.default_rng(1).permutation(100)
    np.testing.assert_array_equal(equal_mass_bins(probs[shuffled], 10), bins[shuffled])


def test_sql_group_by_feeds_the_same_numbers() -> None:
    probs, labels = random_forecasts(3)
    connection = sqlite3.connect(":memory:")
    connection.execute("CREATE TABLE scored (id INTEGER PRIMARY KEY, p REAL, y INTEGER)")
    connection.executemany(
        "INSERT INTO scored VALUES (?, ?, ?)",
        [(i, float(p), int(y)) for i, (p, y) in enumerate(zip(probs, labels, strict=True))],
    )
    rows = connection.execute(
        "SELECT bin, COUNT(*), SUM(p), SUM(y), SUM(p * p), SUM(p * y) FROM ("
        " SELECT p, y, 10 * (RANK() OVER (ORDER BY p) - 1) / COUNT(*) OVER () AS bin"
        " FROM scored"
        ") GROUP BY bin ORDER BY bin"
    ).fetchall()
    from_rows = bin_statistics(probs, labels, equal_mass_bins(probs), 10)
    assert [r[0] for r in rows] == np.flatnonzero(from_rows.count).tolist()
    sums = np.zeros((10, 5))
    sums[[r[0] for r in rows]] = np.array(rows, dtype=float)[:, 1:]
    from_sql = BinStatistics.from_sums(*sums.T)
    for field in ("count", "sum_prob", "sum_label", "sum_prob_sq", "sum_prob_label"):
        np.testing.assert_allclose(getattr(from_sql, field), getattr(from_rows, field), rtol=1e-12)
    assert expected_calibration_error(from_sql) == pytest.approx(
        calibration_summary(probs, labels).ece, abs=1e-12
    )
    assert dataclasses.astuple(brier_decomposition(from_sql)) == pytest.approx(
        dataclasses.astuple(brier_decomposition(from_rows)), abs=1e-12
    )


def test_empty_bins_are_skipped() -> None:
    stats = BinStatistics.from_sums([0, 2], [0, 1.0], [0, 1], [0, 0.5], [0, 0.5])
    assert len(reliability_diagram(stats)) == 1
    assert brier_decomposition(stats).brier == pytest.approx(0.25)


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        brier_score([0.2, 1.2], [0, 1])
    with pytest.raises(ValueError):
        brier_score([0.2, 0.4], [0, 2])
    with pytest.raises(ValueError):
        BinStatistics.from_sums([0], [0], [0], [0], [0])
    with pytest.raises(ValueError):
        bin_statistics([0.2, 0.4], [0, 1], [0, 3], 2)
