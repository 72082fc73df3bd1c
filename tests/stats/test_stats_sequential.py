"""app.stats.sequential against independent computations: the mixture integral by quadrature,
its crossing point by root-finding, the betting capital as an explicit product over a
shuffled sequence, and scipy's exact binomial interval where a closed-form bound exists.
The time-uniform coverage itself is simulated in bench/canary.py, not here."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from app.stats.sequential import (
    BET_FRACTIONS,
    betting_lower,
    betting_upper,
    mixture_rho,
    normal_mixture_boundary,
    normal_mixture_log_value,
    paired_difference_bounds,
    rate_bounds,
    rate_difference_lower,
    rate_difference_upper,
)


@pytest.mark.parametrize(
    ("s", "v", "rho"),
    [(50.0, 100.0, 744.0), (300.0, 2e4, 744.0), (-5.0, 10.0, 3.0), (0.0, 1.0, 1.0)],
)
def test_the_mixture_martingale_is_the_half_normal_mixture_integral(
    s: float, v: float, rho: float
) -> None:
    def integrand(lam: float) -> float:
        prior = 2.0 * math.sqrt(rho / (2.0 * math.pi)) * math.exp(-rho * lam * lam / 2.0)
        return math.exp(lam * s - lam * lam * v / 2.0) * prior

    value, _error = integrate.quad(integrand, 0.0, np.inf)
    assert float(normal_mixture_log_value(s, v, rho)) == pytest.approx(math.log(value), rel=1e-9)


@pytest.mark.parametrize("alpha", [0.5, 0.05, 0.0045, 1e-4])
@pytest.mark.parametrize("v", [1.0, 50.0, 1e3, 1e5, 1e7])
def test_the_boundary_is_where_the_mixture_reaches_one_over_alpha(alpha: float, v: float) -> None:
    rho = float(mixture_rho(alpha))
    closed_form = math.sqrt(2 * (v + rho) * math.log(math.sqrt((v + rho) / rho) / (2 * alpha) + 1))
    exact = optimize.brentq(
        lambda s: float(normal_mixture_log_value(s, v, rho)) - math.log(1.0 / alpha),
        0.0,
        closed_form,
        xtol=1e-12,
    )
    boundary = float(normal_mixture_boundary(v, alpha, rho))
    assert boundary == pytest.approx(exact, rel=1e-10)
    # The bisection keeps the side that has reached 1/alpha.
    assert float(normal_mixture_log_value(boundary, v, rho)) >= math.log(1.0 / alpha)


def test_mixture_rho_is_the_stated_formula() -> None:
    log_term = 2.0 * math.log(1 / 0.01)
    assert float(mixture_rho(0.01, 5000.0)) == pytest.approx(
        5000.0 / (log_term + math.log1p(log_term))
    )
    with pytest.raises(ValueError):
        mixture_rho(0.0)
    with pytest.raises(ValueError):
        mixture_rho(0.05, 0.0)


@pytest.mark.parametrize(
    ("x_a", "n_a", "x_b", "n_b", "alpha"),
    [(200, 2000, 900, 18000, 0.05 / 11), (1188, 19800, 2, 200, 0.0083), (30, 200, 5, 19800, 0.01)],
)
def test_rate_difference_lower_by_hand(
    x_a: int, n_a: int, x_b: int, n_b: int, alpha: float
) -> None:
    """§12.3's formula, each arm's variance floored at the pooled rate's."""
    pooled = (x_a + x_b + 0.5) / (n_a + n_b + 1)
    v_a, v_b = (
        max(p * (1 - p), pooled * (1 - pooled))
        for p in ((x_a + 0.5) / (n_a + 1), (x_b + 0.5) / (n_b + 1))
    )
    se = math.sqrt(v_a / n_a + v_b / n_b)
    log_term = 2 * math.log(1 / alpha)
    rho = 10_000 / (log_term + math.log1p(log_term))
    n = n_a + n_b
    boundary = optimize.brentq(
        lambda s: float(normal_mixture_log_value(s, n, rho)) - math.log(1 / alpha), 0.0, 10 * n
    )
    expected = x_a / n_a - x_b / n_b - se * boundary / math.sqrt(n)
    assert float(rate_difference_lower(x_a, n_a, x_b, n_b, alpha)) == pytest.approx(expected)


def test_a_small_champion_arm_with_few_events_does_not_roll_back() -> None:
    """The candidate at 99% of traffic: 6.0% (1,188 of 19,800) against the champion's 2 of
    200. Both could well be 5% apart by the margin (1 point); the champion arm's own variance,
    at 2.5/201, made the bound 0.022, over the margin."""
    assert float(rate_difference_lower(1188, 19800, 2, 200, 0.0083)) < 0.01


def _false_rollbacks(share: float, rate: float, runs: int) -> int:
    """Runs of 20,000 calls, the candidate on `share` of them at `rate` + the 1-point margin
    against the champion's `rate`, looked at 96 times: how many ever cross the margin."""
    rng = np.random.default_rng(8)
    looks = np.linspace(20_000 / 96, 20_000, 96).astype(int) - 1
    crossed = 0
    for _ in range(runs):
        candidate = rng.random(20_000) < share
        event = rng.random(20_000) < np.where(candidate, rate + 0.01, rate)
        n_c = np.cumsum(candidate)[looks]
        x_c = np.cumsum(candidate & event)[looks]
        x_b = np.cumsum(~candidate & event)[looks]
        lower = rate_difference_lower(x_c, n_c, x_b, looks + 1 - n_c, 0.0083)
        crossed += bool(np.any(lower > 0.01))
    return crossed


@pytest.mark.parametrize("share", [0.01, 0.5, 0.99])
def test_false_rollbacks_at_the_margin_stay_near_alpha_whichever_arm_is_small(
    share: float,
) -> None:
    """At alpha 0.0083, 300 runs expect about 2.5 crossings at most; the plug-in variance of
    a small champion arm gave 19 of 300 at a 99% candidate share."""
    assert _false_rollbacks(share, 0.05, runs=300) <= 6


def test_rate_difference_bounds_say_nothing_while_an_arm_is_empty() -> None:
    assert float(rate_difference_lower(0, 0, 5, 100, 0.01)) == -1.0
    assert float(rate_difference_upper(5, 100, 0, 0, 0.01)) == 1.0
    lower = rate_difference_lower([0, 10, 10], [0, 100, 100], [1, 0, 1], [10, 0, 10], 0.01)
    assert lower[0] == -1.0 and lower[1] == -1.0 and -1.0 < lower[2] < 0.1


def test_more_traffic_at_the_same_rates_narrows_both_sides() -> None:
    sizes = np.array([100, 1_000, 10_000, 100_000])
    lower = rate_difference_lower(sizes // 10, sizes, sizes * 9 // 20, sizes * 9, 0.005)
    upper = rate_difference_upper(sizes // 10, sizes, sizes * 9 // 20, sizes * 9, 0.025)
    assert np.all(np.diff(lower) > 0) and np.all(np.diff(upper) < 0)
    assert np.all(lower < 0.05) and np.all(upper > 0.05)


def _capital_by_product(sequence: list[float], m: float) -> float:
    """The mixture capital as its definition reads: a product over observations per bet."""
    totals = []
    for c in BET_FRACTIONS:
        capital = 1.0
        for y in sequence:
            capital *= 1.0 + (c / m) * (y - m)
        totals.append(capital)
    return math.log(sum(totals) / len(totals))


@pytest.mark.parametrize(
    ("counts", "support"),
    [([90, 10], [0.0, 1.0]), ([5, 185, 10], [0.0, 0.5, 1.0]), ([0, 3], [0.0, 1.0])],
)
def test_the_lower_bound_is_where_the_bets_stop_rejecting(
    counts: list[int], support: list[float]
) -> None:
    alpha = 0.01
    lower = float(betting_lower(counts, support, alpha))
    # The bound comes from counts alone: the product over the observations in any order.
    sequence = [y for y, n in zip(support, counts, strict=True) for _ in range(n)]
    random.Random(7).shuffle(sequence)
    assert 0.0 < lower < float(np.dot(counts, support) / sum(counts))
    assert _capital_by_product(sequence, lower - 1e-7) >= math.log(1 / alpha)
    assert _capital_by_product(sequence, lower + 1e-7) < math.log(1 / alpha)


def test_upper_bound_is_the_reflected_lower_bound_and_pairs_are_symmetric() -> None:
    counts = np.array([[30, 140, 30], [10, 80, 110]])
    support = np.array([0.0, 0.5, 1.0])
    upper = betting_upper(counts, support, 0.02)
    np.testing.assert_allclose(upper, 1.0 - betting_lower(counts[:, ::-1], support, 0.02))
    low, high = paired_difference_bounds(55, 5, 1000, 0.01, 0.01)
    mirror_low, mirror_high = paired_difference_bounds(5, 55, 1000, 0.01, 0.01)
    assert float(low) == pytest.approx(-float(mirror_high), abs=1e-9)
    assert float(high) == pytest.approx(-float(mirror_low), abs=1e-9)
    assert float(low) < 0.05 < float(high)


@pytest.mark.parametrize("n", [10, 100, 1000, 20_000])
def test_a_clean_rate_is_never_claimed_below_the_exact_fixed_sample_bound(n: int) -> None:
    """0 events of n: no test martingale can beat the likelihood ratio (1 - m)^-n, so the
    time-uniform upper bound is at least the exact fixed-n one, 1 - alpha^(1/n)."""
    alpha = 0.05
    clopper_pearson = stats.binomtest(0, n).proportion_ci(1 - alpha, method="exact").high
    # scipy's interval is two-sided; the one-sided exact bound at alpha is 1 - alpha^(1/n).
    one_sided = 1 - alpha ** (1 / n)
    assert one_sided <= clopper_pearson
    upper = float(rate_bounds(0, n, alpha, alpha)[1])
    assert one_sided <= upper < 12 * one_sided


def test_smaller_alpha_widens_and_bad_input_is_refused() -> None:
    wide = rate_bounds(30, 300, 0.001, 0.001)
    narrow = rate_bounds(30, 300, 0.1, 0.1)
    assert wide[0] < narrow[0] < 0.1 < narrow[1] < wide[1]
    for bad in (lambda: rate_bounds(5, 3, 0.1, 0.1), lambda: betting_lower([1, 2], [0, 1, 2], 0.1)):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(ValueError):
        paired_difference_bounds(6, 5, 10, 0.1, 0.1)
    with pytest.raises(ValueError):
        rate_difference_lower(1, 10, 1, 10, 0.7)
