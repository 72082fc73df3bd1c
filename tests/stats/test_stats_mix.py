"""The G test of homogeneity behind a canary's `mix_differs` (app/stats/mix.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import chi2_contingency

from app.stats.mix import homogeneity_g_test


def test_matches_scipys_log_likelihood_ratio_on_a_full_table() -> None:
    candidate, champion = [120, 60, 20], [400, 420, 180]
    test = homogeneity_g_test(candidate, champion)
    assert test is not None
    statistic, p_value, df, _expected = chi2_contingency(
        [candidate, champion], correction=False, lambda_="log-likelihood"
    )
    assert test.df == df == 2
    assert test.statistic == pytest.approx(statistic)
    assert test.p_value == pytest.approx(p_value)


def test_sparse_values_are_pooled_and_a_lone_category_compares_nothing() -> None:
    # Two rare values (expected under 5 in the candidate's arm) pool into one category.
    test = homogeneity_g_test([50, 50, 3, 4], [500, 500, 30, 40])
    assert test is not None and test.df == 2
    # The pool is still too sparse: left out, leaving the two full values.
    assert homogeneity_g_test([50, 50, 1], [500, 500, 3]).df == 1  # type: ignore[union-attr]
    assert homogeneity_g_test([100], [300]) is None
    assert homogeneity_g_test([0, 0], [300, 200]) is None


def test_a_segment_routed_arm_is_flagged_and_random_routing_is_not() -> None:
    routed = homogeneity_g_test([300, 0], [1000, 1000])
    assert routed is not None and routed.p_value < 1e-12
    rng = np.random.default_rng(7)
    mix = np.array([0.5, 0.3, 0.15, 0.05])
    smallest = min(
        homogeneity_g_test(rng.multinomial(300, mix), rng.multinomial(3000, mix)).p_value  # type: ignore[union-attr]
        for _ in range(2000)
    )
    assert smallest > 1e-6
