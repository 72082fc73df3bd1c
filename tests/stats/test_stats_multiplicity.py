"""app.stats.multiplicity against statsmodels and against closed testing done by brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from app.stats.multiplicity import design_weights, family_shares, weighted_bh, weighted_holm


def closed_testing_adjusted(p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Adjusted p of closed testing with weighted Bonferroni local tests, over every subset."""
    m = p.size
    adjusted = np.zeros(m)
    for size in range(1, m + 1):
        for subset in itertools.combinations(range(m), size):
            idx = list(subset)
            local = min(1.0, float(np.min(p[idx] * w[idx].sum() / w[idx])))
            for i in idx:
                adjusted[i] = max(adjusted[i], local)
    return adjusted


@pytest.mark.parametrize("seed", range(6))
def test_equal_weights_are_statsmodels_holm_and_bh(seed: int) -> None:
    p = np.random.default_rng(seed).random(9) ** 3
    np.testing.assert_allclose(weighted_holm(p), multipletests(p, method="holm")[1])
    np.testing.assert_allclose(weighted_bh(p), multipletests(p, method="fdr_bh")[1])


@pytest.mark.parametrize("seed", range(8))
def test_weighted_holm_is_closed_testing_with_weighted_bonferroni(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.random(5) ** 2
    w = rng.random(5) + 0.05
    np.testing.assert_allclose(weighted_holm(p, w), closed_testing_adjusted(p, w / w.sum()))


def test_weighted_bh_is_bh_on_p_over_weight() -> None:
    p = np.array([0.001, 0.02, 0.03, 0.2, 0.04])
    w = np.array([0.5, 1.0, 2.0, 1.0, 0.5])
    scaled = p / (w / w.mean())
    np.testing.assert_allclose(
        weighted_bh(p, w),
        np.minimum(multipletests(np.minimum(scaled, 1.0), method="fdr_bh")[1], 1.0),
    )


def test_a_heavier_weight_rejects_what_an_equal_split_cannot() -> None:
    p = np.array([0.03, 0.5])
    assert weighted_holm(p)[0] > 0.05
    assert weighted_holm(p, [0.9, 0.1])[0] <= 0.05


def test_design_weights() -> None:
    np.testing.assert_allclose(design_weights([100, 1000], 1.0), [10 / 11, 1 / 11])
    # No share beyond ten times the smallest: 6 rows beside 406 take 10/11, not 98.5%.
    np.testing.assert_allclose(design_weights([6, 406], 1.0), [10 / 11, 1 / 11])
    np.testing.assert_allclose(design_weights([6, 10_000], 0.5), [10 / 11, 1 / 11])
    small = 20 / (20 + 6**0.5)  # 1/sqrt(6) against 1/20: a ratio of 8.2, within the cap
    np.testing.assert_allclose(design_weights([6, 400], 0.5), [small, 1 - small])
    np.testing.assert_allclose(design_weights([100, 400], 0.5), [2 / 3, 1 / 3])
    np.testing.assert_allclose(design_weights([7, 9000, 0], 0.0), [1 / 3] * 3)


def test_family_shares_leave_out_comparisons_that_cannot_reject() -> None:
    """Fewer rows than min_rows: no share of the others' budget, and for planning the share
    each would take by joining them."""
    shares = family_shares([400, 3, 100, 0], 1.0, 6)
    np.testing.assert_allclose(shares[[0, 2]], [1 / 5, 4 / 5])
    # Joining, each counts as a tenth of the largest comparison's rows (the 10:1 cap).
    np.testing.assert_allclose(shares[[1, 3]], (1 / 40) / (1 / 400 + 1 / 100 + 1 / 40))
    np.testing.assert_allclose(family_shares([400, 100], 1.0, 6), design_weights([400, 100], 1))


def test_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        weighted_holm([0.1, 1.2])
    with pytest.raises(ValueError):
        weighted_holm([0.1, 0.2], [1.0, 0.0])
