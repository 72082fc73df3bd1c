"""app.stats.planning: sample sizes against Nam's formula computed independently, flip rates."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import optimize, stats

from app.stats.planning import (
    flip_rate,
    prior_difference,
    required_rows,
    required_rows_prior,
)


def restricted_variance_reference(p_b: float, p_c: float, mu0: float) -> float:
    """Limit of Tango's constrained variance for true cells (p_b, p_c): maximise the expected
    log-likelihood subject to the null, by direct search."""
    p_0 = 1.0 - p_b - p_c

    def negative(x: float) -> float:
        cells = [(p_b, x), (p_c, x + mu0), (p_0, 1.0 - 2.0 * x - mu0)]
        return -sum(w * math.log(q) for w, q in cells if w > 0)

    found = optimize.minimize_scalar(
        negative,
        bounds=(max(0.0, -mu0) + 1e-12, (1 - mu0) / 2 - 1e-12),
        method="bounded",
        options={"xatol": 1e-12},
    )
    x = float(found.x)
    return 2 * x + mu0 - mu0 * mu0


def nam_rows(p_b: float, p_c: float, mu0: float, z_a: float, z_b: float) -> int:
    truth = p_c - p_b
    sigma_1 = math.sqrt(p_b + p_c - truth * truth)
    sigma_0 = math.sqrt(restricted_variance_reference(p_b, p_c, mu0))
    return math.ceil(((z_a * sigma_0 + z_b * sigma_1) / (truth - mu0)) ** 2)


class TestRequiredRows:
    @pytest.mark.parametrize(
        ("psi", "margin", "guarded", "share"),
        [
            (0.2, 0.02, 1, 1.0),
            (0.25, 0.02, 2, 0.9),
            (0.1, 0.05, 8, 0.2),
            (0.3, 0.1, 3, 0.5),
        ],
    )
    def test_pass_fail_pairs_follow_nams_formula(
        self, psi: float, margin: float, guarded: int, share: float
    ) -> None:
        req = required_rows(
            [-1.0, 0.0, 1.0],
            [psi / 2, 1 - psi, psi / 2],
            margin,
            alpha=0.05,
            power=0.8,
            block_power=0.9,
            guarded_comparisons=guarded,
            block_share=share,
        )
        z_pass = stats.norm.isf(0.025)
        expected_pass = nam_rows(psi / 2, psi / 2, -margin, z_pass, stats.norm.isf(0.2 / guarded))
        assert req.pass_rows == pytest.approx(expected_pass, abs=1)
        drop = 2 * margin  # a failure mode of 2m on top of the flips
        p_b, p_c = (1 - drop) * psi / 2 + drop, (1 - drop) * psi / 2
        expected_block = nam_rows(
            p_b, p_c, -margin, stats.norm.isf(0.05 * share), stats.norm.ppf(0.9)
        )
        assert req.block_rows == pytest.approx(expected_block, abs=1)
        assert req.rows == max(req.pass_rows, req.block_rows)

    def test_the_connor_rule_of_thumb_for_non_inferiority(self) -> None:
        # About 7.85 psi / m^2 pairs at 80% power and one-sided 2.5% (the figure).
        req = required_rows([-1.0, 0.0, 1.0], [0.1, 0.8, 0.1], 0.02)
        assert req.pass_rows == pytest.approx(7.85 * 0.2 / 0.02**2, rel=0.03)

    def test_no_discordance_still_needs_the_rule_of_three_rows(self) -> None:
        req = required_rows([0.0], [1.0], 0.02)
        # z^2 (1 - m) / m: the score-test twin of the exact (1 - m)^n <= alpha / 2.
        assert req.pass_rows == math.ceil(stats.norm.isf(0.025) ** 2 * 0.98 / 0.02)

    def test_more_comparisons_more_flips_fewer_repeats_need_more_rows(self) -> None:
        base = required_rows_prior(0.2, 0.02, guarded_comparisons=2).rows
        assert required_rows_prior(0.2, 0.02, guarded_comparisons=8).rows > base
        assert required_rows_prior(0.3, 0.02, guarded_comparisons=2).rows > base
        three = required_rows_prior(
            0.2, 0.02, baseline_repeats=3, candidate_repeats=3, guarded_comparisons=2
        )
        assert three.rows < base
        assert required_rows_prior(0.2, 0.02, guarded_comparisons=2, block_share=0.5).rows > base

    def test_symmetrising_ignores_the_observed_mean(self) -> None:
        shifted = required_rows([-1.0, 0.0, 1.0], [0.15, 0.8, 0.05], 0.05)
        centred = required_rows([-1.0, 0.0, 1.0], [0.1, 0.8, 0.1], 0.05)
        assert shifted == centred

    def test_refuses_bad_input(self) -> None:
        with pytest.raises(ValueError):
            required_rows([0.0], [1.0], 0.0)
        with pytest.raises(ValueError):
            required_rows([0.0, 1.0], [1.0], 0.02)
        with pytest.raises(ValueError):
            required_rows_prior(0.6, 0.02)


class TestPriorDifference:
    @pytest.mark.parametrize(("flip", "k0", "k1"), [(0.2, 1, 1), (0.25, 3, 3), (0.1, 2, 5)])
    def test_variance_is_flip_rate_times_the_mean_inverse_repeats(
        self, flip: float, k0: int, k1: int
    ) -> None:
        values, mass = prior_difference(flip, k0, k1)
        assert mass.sum() == pytest.approx(1.0)
        assert mass @ values == pytest.approx(0.0, abs=1e-12)
        assert mass @ values**2 == pytest.approx(flip * (1 / k0 + 1 / k1) / 2)

    def test_one_repeat_is_the_trinomial(self) -> None:
        values, mass = prior_difference(0.2)
        np.testing.assert_allclose(values, [-1, 0, 1])
        np.testing.assert_allclose(mass, [0.1, 0.8, 0.1])
        assert required_rows_prior(0.2, 0.02) == required_rows([-1, 0, 1], [0.1, 0.8, 0.1], 0.02)


class TestFlipRate:
    def test_known_rows(self) -> None:
        # k = 2: a row with one pass disagrees in both ordered pairs; 0 or 2 passes never.
        got = flip_rate([1, 0, 2, 1], 2)
        assert got.estimate == pytest.approx(0.5)
        assert got.rows == 4
        assert got.standard_error == pytest.approx(np.std([1, 0, 0, 1], ddof=1) / 2)

    def test_matches_counting_disagreeing_pairs(self) -> None:
        rng = np.random.default_rng(3)
        k = np.array([3, 4, 5, 3, 6])
        x = np.array([rng.integers(0, kk + 1) for kk in k])
        shares = []
        for passes, repeats in zip(x, k, strict=True):
            calls = [1] * int(passes) + [0] * int(repeats - passes)
            pairs = list(itertools.permutations(range(repeats), 2))
            shares.append(sum(calls[i] != calls[j] for i, j in pairs) / len(pairs))
        assert flip_rate(x, k).estimate == pytest.approx(np.mean(shares))

    def test_unbiased_for_two_pi_one_minus_pi(self) -> None:
        pi = np.array([0.1, 0.5, 0.9, 0.3])
        k = 4
        expected = np.mean(2 * pi * (1 - pi))
        exact = 0.0
        for p in pi:
            xs = np.arange(k + 1)
            per_count = [flip_rate([int(x)], k).estimate for x in xs]
            exact += float(stats.binom.pmf(xs, k, p) @ np.array(per_count, dtype=float))
        assert exact / pi.size == pytest.approx(expected)

    def test_single_repeats_say_nothing(self) -> None:
        got = flip_rate([1, 0, 1], 1)
        assert (got.estimate, got.standard_error, got.rows) == (None, None, 0)
