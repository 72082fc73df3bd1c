"""app.stats.retry: pooling runs, spending alpha over attempts, sticky blocks."""

from __future__ import annotations

import numpy as np
import pytest

from app.stats.retry import attempt_alpha, pool_runs, sticky_verdict


def test_pooling_is_the_per_row_mean_over_every_repeat() -> None:
    sums = np.array([[1, 0, 2, 0], [3, 1, 0, 0]])
    repeats = np.array([[1, 1, 3, 0], [3, 2, 1, 0]])
    means, k = pool_runs(sums, repeats)
    np.testing.assert_allclose(means[:3], [1.0, 1 / 3, 0.5])
    assert np.isnan(means[3])
    np.testing.assert_array_equal(k, [4, 3, 4, 0])


def test_pooling_refuses_impossible_counts() -> None:
    with pytest.raises(ValueError):
        pool_runs([[2]], [[1]])
    with pytest.raises(ValueError):
        pool_runs([[1, 1]], [[1]])


def test_alpha_halves_with_every_attempt_and_sums_to_twice_alpha() -> None:
    assert attempt_alpha(0.05, 1) == 0.05
    assert attempt_alpha(0.05, 3) == pytest.approx(0.0125)
    assert sum(attempt_alpha(0.05, a) for a in range(1, 60)) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        attempt_alpha(0.05, 0)


@pytest.mark.parametrize(
    ("verdict", "blocked", "expected"),
    [
        ("pass", True, "pass"),
        ("inconclusive", True, "block"),
        ("block", True, "block"),
        ("inconclusive", False, "inconclusive"),
        ("pass", False, "pass"),
    ],
)
def test_a_block_is_lifted_only_by_a_pass(verdict: str, blocked: bool, expected: str) -> None:
    assert sticky_verdict(verdict, blocked) == expected  # type: ignore[arg-type]
