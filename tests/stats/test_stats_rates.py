"""app.stats.rates against scipy's exact binomial test and the binomial distribution itself."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from app.stats.rates import rate_band, rate_outside_band, rate_pvalue


def test_a_dozen_requests_with_two_events_is_not_flagged() -> None:
    # baseline 5%, 2 of 12 = 16.7%: P(X >= 2) = 0.118, two-sided p = 0.237.
    assert not rate_outside_band(2, 12, 0.05)
    low, high = rate_band(0.05, 12)
    assert float(low) <= 2 / 12 <= float(high)


def test_twenty_thousand_requests_at_six_percent_is_flagged() -> None:
    assert rate_outside_band(1200, 20_000, 0.05)
    assert float(rate_band(0.05, 20_000)[1]) < 0.06


@pytest.mark.parametrize(
    ("x", "n", "p0"), [(2, 12, 0.05), (0, 50, 0.05), (9, 40, 0.1), (1200, 20000, 0.05), (7, 7, 0.9)]
)
def test_p_value_doubles_scipys_one_sided_exact_tests(x: int, n: int, p0: float) -> None:
    less = stats.binomtest(x, n, p0, alternative="less").pvalue
    greater = stats.binomtest(x, n, p0, alternative="greater").pvalue
    assert float(rate_pvalue(x, n, p0)) == pytest.approx(min(1.0, 2 * min(less, greater)))


@pytest.mark.parametrize(("n", "p0"), [(12, 0.05), (97, 0.3), (1000, 0.01), (250, 0.5)])
@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_band_and_test_agree_on_every_possible_count(n: int, p0: float, alpha: float) -> None:
    counts = np.arange(n + 1)
    low, high = rate_band(p0, n, 1 - alpha)
    outside = (counts / n < low) | (counts / n > high)
    np.testing.assert_array_equal(rate_outside_band(counts, n, p0, alpha), outside)


@pytest.mark.parametrize(("n", "p0"), [(12, 0.05), (97, 0.3), (5000, 0.02)])
def test_band_holds_at_least_its_confidence_of_the_binomial_mass(n: int, p0: float) -> None:
    low, high = rate_band(p0, n, 0.99)
    counts = np.arange(n + 1)
    inside = (counts >= np.rint(float(low) * n)) & (counts <= np.rint(float(high) * n))
    assert stats.binom.pmf(counts[inside], n, p0).sum() >= 0.99


def test_vectorised_over_cohorts_and_days() -> None:
    successes = np.array([2, 1200, 0, 3])
    volumes = np.array([12, 20_000, 0, 3])
    baselines = np.array([0.05, 0.05, 0.05, 0.0])
    flagged = rate_outside_band(successes, volumes, baselines)
    assert flagged.tolist() == [False, True, False, True]
    low, high = rate_band(baselines, volumes)
    assert (float(low[2]), float(high[2])) == (0.0, 1.0)


def test_rejects_impossible_input() -> None:
    with pytest.raises(ValueError):
        rate_pvalue(5, 4, 0.1)
    with pytest.raises(ValueError):
        rate_band(1.2, 10)
    with pytest.raises(ValueError):
        rate_band(0.1, -1)
