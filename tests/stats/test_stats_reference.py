"""app.stats.reference: DerSimonian-Laird against statsmodels, robust screening, t inflation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.meta_analysis import combine_effects

from app.stats import reference
from app.stats.reference import (
    dersimonian_laird,
    robust_between_var,
    robust_random_effects,
    variance_inflation,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dersimonian_laird_matches_statsmodels(seed: int) -> None:
    rng = np.random.default_rng(seed)
    v = rng.uniform(0.005, 0.05, 12)
    y = rng.normal(0.2, 0.3, 12) + rng.normal(0, np.sqrt(v))
    ref = dersimonian_laird(y[None], v[None], np.ones((1, 12), bool))
    expected = combine_effects(y, v, method_re="chi2")
    assert expected.tau2 > 0  # statsmodels does not truncate a negative moment estimate
    assert ref.between_var[0] == pytest.approx(expected.tau2, rel=1e-10)
    assert ref.center[0] == pytest.approx(expected.mean_effect_re, rel=1e-10)
    assert ref.center_var[0] == pytest.approx(expected.var_eff_w_re, rel=1e-10)


def test_negative_moment_estimate_is_truncated_to_zero() -> None:
    y = np.array([[0.10, 0.11, 0.09, 0.10, 0.105]])
    v = np.full_like(y, 0.01)
    ref = dersimonian_laird(y, v, np.ones_like(y, bool))
    assert ref.between_var[0] == 0.0
    assert ref.center[0] == pytest.approx(y.mean())
    assert ref.center_var[0] == pytest.approx(0.01 / 5)


def test_rows_are_independent_and_unobserved_days_ignored() -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(0, 1, (2, 10))
    v = np.full((2, 10), 0.5)
    kept = np.ones((2, 10), bool)
    kept[1, 7:] = False
    both = dersimonian_laird(y, v, kept)
    alone = dersimonian_laird(y[1:, :7], v[1:, :7], np.ones((1, 7), bool))
    assert both.center[1] == pytest.approx(alone.center[0])
    assert both.between_var[1] == pytest.approx(alone.between_var[0])
    assert list(both.days_used) == [10, 7]


def test_too_few_days_is_not_valid() -> None:
    ref = dersimonian_laird(np.ones((1, 4)), np.ones((1, 4)), np.ones((1, 4), bool), min_days=5)
    assert not ref.valid[0] and np.isnan(ref.center[0])


def test_robust_between_var_ignores_a_minority_of_wild_days() -> None:
    rng = np.random.default_rng(4)
    v = np.full(40, 1.0)
    resid = rng.normal(0, np.sqrt(v + 1.0))  # tau^2 = 1
    clean = robust_between_var(resid[None], v[None], np.ones((1, 40), bool))[0]
    resid[:4] = 50.0
    dirty = robust_between_var(resid[None], v[None], np.ones((1, 40), bool))[0]
    assert 0.2 < clean < 3.0
    assert dirty < 2.0 * clean + 1.0  # four days at 35 SDs barely move it


def test_robust_between_var_is_zero_without_extra_variation() -> None:
    resid = np.array([[0.1, -0.1, 0.2, -0.2, 0.0, 0.05]])
    assert robust_between_var(resid, np.ones_like(resid), np.ones_like(resid, bool))[0] == 0.0


def test_screening_drops_incident_days_but_at_most_the_allowed_share() -> None:
    rng = np.random.default_rng(5)
    y = rng.normal(10.0, 1.0, (1, 28))
    y[0, [3, 9]] = 30.0
    ref, kept = robust_random_effects(y, np.full_like(y, 0.5), np.ones_like(y, bool))
    assert not kept[0, 3] and not kept[0, 9] and kept.sum() == 26
    assert ref.days_excluded[0] == 2
    assert ref.center[0] == pytest.approx(10.0, abs=0.6)
    y[0, :10] = 30.0  # 10 of 28 odd: only floor(0.25 * 28) = 7 may go
    _, kept = robust_random_effects(y, np.full_like(y, 0.5), np.ones_like(y, bool))
    assert (~kept).sum() == 7


def test_variance_inflation_is_the_t_over_normal_quantile_ratio() -> None:
    kappa = variance_inflation([5, 27, 10_000], 1e-4)
    expected = (stats.t.isf(1e-4, [5, 27, 10_000]) / stats.norm.isf(1e-4)) ** 2
    np.testing.assert_allclose(kappa, expected)
    assert kappa[0] > kappa[1] > kappa[2] > 1.0
    assert kappa[2] == pytest.approx(1.0, abs=1e-2)


def test_the_chi2_median_constant_is_scipys() -> None:
    """Written as a literal so importing the module does not load scipy."""
    assert pytest.approx(float(stats.chi2.ppf(0.5, 1)), rel=1e-14) == reference._CHI2_1_MEDIAN
