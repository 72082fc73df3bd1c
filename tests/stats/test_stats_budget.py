"""app.stats.budget: weighted Tarone allocation and the joint band + CUSUM budget."""

from __future__ import annotations

import numpy as np
import pytest

from app.stats.budget import allocate, hypothesis_weights, tarone_weighted
from app.stats.cusum import cusum_threshold


def tarone_1990(p_min: list[float], alpha: float) -> list[float]:
    """Tarone (1990): the smallest K with M(K) = #{p_min <= alpha/K} <= K; those M(K)
    hypotheses are tested at alpha/K."""
    p = np.asarray(p_min)
    for k in range(1, len(p) + 1):
        tested = p <= alpha / k
        if tested.sum() <= k:
            return list(np.where(tested, alpha / k, 0.0))
    return [0.0] * len(p)


@pytest.mark.parametrize(
    "p_min",
    [
        [0.0, 0.0, 0.0, 0.0],
        [1e-9, 0.004, 0.3, 0.0],
        [0.002, 0.002, 0.002, 0.002, 0.0],
        [0.5, 0.9, 1.0],
        [1e-4, 2.4e-3, 3.4e-3, 0.01, 1.0, 0.0],
    ],
)
def test_unweighted_dominates_tarone(p_min: list[float]) -> None:
    # Same idea, never a smaller level: the set is the largest prefix in p_min order whose
    # members all fit alpha / size, and the whole alpha is spent on it.
    ours = np.asarray(tarone_weighted(p_min, np.ones(len(p_min)), 0.01))
    theirs = np.asarray(tarone_1990(p_min, 0.01))
    assert np.all(ours >= theirs)
    assert ours.sum() == pytest.approx(0.01) or ours.sum() == 0.0
    assert set(np.flatnonzero(theirs)) <= set(np.flatnonzero(ours))


def test_where_tarone_tests_nothing_the_prefix_still_tests_two() -> None:
    assert tarone_1990([0.004, 0.004, 0.0045], 0.01) == [0.0, 0.0, 0.0]
    levels = tarone_weighted([0.004, 0.004, 0.0045], [1, 1, 1], 0.01)
    np.testing.assert_allclose(levels, [0.005, 0.005, 0])


def test_too_small_to_matter_is_left_out_and_frees_its_share() -> None:
    # Three cohorts can reach 1e-9; a 3-request cohort's best p-value is 0.004.
    levels = tarone_weighted([1e-9, 1e-9, 1e-9, 0.004], [1, 1, 1, 1], 0.01)
    np.testing.assert_allclose(levels, [0.01 / 3] * 3 + [0.0])


def test_weighted_shares_follow_the_weights_and_spend_the_budget() -> None:
    w = np.array([4.0, 2.0, 1.0, 1.0])
    levels = tarone_weighted(np.zeros(4), w, 0.002)
    np.testing.assert_allclose(levels, 0.002 * w / w.sum())
    # A light hypothesis that cannot reach its (small) share is excluded; the heavy one
    # with the same p_min fits its larger share.
    levels = tarone_weighted([3e-4, 3e-4, 0.0], [8.0, 1.0, 1.0], 0.002)
    assert levels[1] == 0.0 and levels[0] == pytest.approx(0.002 * 8 / 9)
    assert levels.sum() == pytest.approx(0.002)


def test_every_tested_item_can_reach_its_level_on_random_cases() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        m = rng.integers(1, 30)
        p = np.where(rng.random(m) < 0.3, 10 ** rng.uniform(-8, 0, m), 0.0)
        w = rng.uniform(0.1, 5, m)
        levels = tarone_weighted(p, w, 0.01)
        tested = levels > 0
        assert levels.sum() <= 0.01 * (1 + 1e-12)
        assert np.all(p[tested] <= levels[tested] * (1 + 1e-12))
        if tested.any():  # the next excluded item would not have fitted
            ratio = p / w
            assert np.all(ratio[~tested] >= ratio[tested].max())


def test_weights_favour_the_population_and_high_risk() -> None:
    w = hypothesis_weights([True, False, False], [False, True, False], [1.0, 1.0, 0.5])
    np.testing.assert_allclose(w, [4.0, 2.0, 0.5])
    grid = hypothesis_weights([[True], [False]], [[False], [True]], [1.0, 0.5])
    np.testing.assert_allclose(grid, [[4.0, 2.0], [2.0, 1.0]])


def test_allocate_shares_between_band_and_cusum() -> None:
    w = np.array([4.0, 2.0, 1.0, 1.0])
    alloc = allocate(w, band_p_min=[0, 0, 0, 0.5], has_data=[True, True, True, False], alpha=0.002)
    # Item 3 has no data: both its rules are out; the rest split 0.002 by weight, half each.
    total = 0.5 * 7 + 0.5 * 7
    np.testing.assert_allclose(
        alloc.band_alpha, [0.002 * 2 / total, 0.002 / total, 0.001 / total, 0]
    )
    np.testing.assert_allclose(alloc.cusum_alpha, alloc.band_alpha)
    assert alloc.band_alpha.sum() + alloc.cusum_alpha.sum() == pytest.approx(0.002)
    np.testing.assert_allclose(alloc.cusum_h[:3], cusum_threshold(1 / alloc.cusum_alpha[:3]))
    assert np.isinf(alloc.cusum_h[3])


def test_a_band_that_cannot_reach_significance_keeps_its_cusum() -> None:
    alloc = allocate(np.ones(3), band_p_min=[0.0, 0.0, 0.3], has_data=[True] * 3, alpha=0.002)
    assert alloc.band_alpha[2] == 0.0 and alloc.cusum_alpha[2] > 0
    assert list(alloc.band_tested) == [True, True, False]
    two = allocate(np.ones(1), [0.0], [True], 0.002, cusum_sides=2)
    assert two.cusum_h[0] == pytest.approx(float(cusum_threshold(2 / 0.001)))
