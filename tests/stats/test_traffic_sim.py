"""bench.traffic_sim: the simulator produces the roughness it claims, deterministically."""

from __future__ import annotations

import numpy as np
import pytest

from app.stats.calibration import debiased_squared_calibration_error
from bench.traffic_sim import RATE_SIGNALS, Change, Cohort, TrafficSpec, simulate

REFUSAL = RATE_SIGNALS.index("refusal_rate")
BIG = (Cohort("big", 12_000),)


def test_same_seed_same_traffic_and_cohorts_draw_independently() -> None:
    spec = TrafficSpec((Cohort("a", 500), Cohort("b", 800)), days=10, seed=3)
    one, two = simulate(spec), simulate(spec)
    np.testing.assert_array_equal(one.rate_num, two.rate_num)
    np.testing.assert_array_equal(one.moments["latency"], two.moments["latency"])
    other = simulate(TrafficSpec(spec.cohorts, days=10, seed=4))
    assert not np.array_equal(one.rate_num, other.rate_num)
    # A change on cohort b leaves cohort a's draws untouched.
    changed = simulate(
        TrafficSpec(spec.cohorts, days=10, seed=3, changes=(Change("b", "refusal_rate", 5, 2.0),))
    )
    np.testing.assert_array_equal(changed.rate_num[:, 1], one.rate_num[:, 1])


@pytest.mark.parametrize("wobble", [0.1, 0.2])
def test_day_to_day_wobble_is_the_relative_sd_it_claims(wobble: float) -> None:
    spec = TrafficSpec(BIG, days=300, wobble=wobble, weekday_amplitude=0.0, volume_sd=0.0, seed=1)
    traffic = simulate(spec)
    true = traffic.true_rate[:, 0, REFUSAL]
    assert true.std() / true.mean() == pytest.approx(wobble, rel=0.15)
    x, n = traffic.rate_num[:, 1, REFUSAL], traffic.rate_den[:, 1, REFUSAL]
    rate = x / n
    binomial = np.mean(rate.mean() * (1 - rate.mean()) / n)
    extra = rate.var() - binomial
    assert np.sqrt(extra) / rate.mean() == pytest.approx(wobble, rel=0.2)
    # Far beyond binomial at this volume: the index of dispersion is large.
    assert rate.var() / binomial > 5


def test_a_cohort_with_a_wobble_of_its_own_wobbles_by_it_and_changes_no_other_cohort() -> None:
    same = dict(days=300, wobble=0.1, weekday_amplitude=0.0, volume_sd=0.0, seed=5)
    plain = simulate(TrafficSpec((Cohort("a", 12_000), Cohort("b", 12_000)), **same))
    mixed = simulate(
        TrafficSpec((Cohort("a", 12_000, wobble=0.05), Cohort("b", 12_000, wobble=0.25)), **same)
    )
    for index, wobble in ((0, 0.05), (1, 0.25)):
        true = mixed.true_rate[:, index, REFUSAL]
        assert true.std() / true.mean() == pytest.approx(wobble, rel=0.15)
        location = np.log(mixed.moments["latency"][:, index + 1, 3])
        assert location.std() == pytest.approx(wobble, rel=0.25)
    # The spec's wobble is the default: a cohort without its own draws as before.
    default = simulate(TrafficSpec((Cohort("a", 12_000, wobble=0.05), Cohort("b", 12_000)), **same))
    np.testing.assert_array_equal(default.rate_num[:, 2], plain.rate_num[:, 2])
    np.testing.assert_array_equal(default.true_rate[:, 1], plain.true_rate[:, 1])


def test_without_wobble_counts_are_binomial() -> None:
    spec = TrafficSpec(BIG, days=300, wobble=0.0, weekday_amplitude=0.0, volume_sd=0.0, seed=2)
    traffic = simulate(spec)
    rate = traffic.rate_num[:, 1, REFUSAL] / traffic.rate_den[:, 1, REFUSAL]
    binomial = np.mean(rate.mean() * (1 - rate.mean()) / traffic.rate_den[:, 1, REFUSAL])
    assert rate.var() / binomial == pytest.approx(1.0, abs=0.25)
    assert rate.mean() == pytest.approx(0.05, rel=0.02)


def test_weekday_cycle_in_volume_and_rates() -> None:
    spec = TrafficSpec(BIG, days=140, wobble=0.0, weekday_amplitude=0.1, volume_sd=0.0, seed=3)
    traffic = simulate(spec)
    cycle = np.cos(2 * np.pi * np.arange(140) / 7)
    volume = traffic.volume[:, 1]
    assert np.corrcoef(volume, cycle)[0, 1] > 0.95
    true = traffic.true_rate[:, 0, REFUSAL]
    by_weekday = np.array([true[d::7].mean() for d in range(7)])
    assert (by_weekday.max() - by_weekday.min()) / true.mean() == pytest.approx(0.2, rel=0.25)


def test_step_and_ramp_changes() -> None:
    changes = (
        Change("big", "refusal_rate", 20, 2.0, end=40),
        Change("big", "fallback_rate", 10, 3.0, ramp_days=20),
    )
    spec = TrafficSpec(BIG, 60, wobble=0.0, weekday_amplitude=0.0, changes=changes, seed=4)
    true = simulate(spec).true_rate[:, 0]
    np.testing.assert_allclose(true[:20, REFUSAL], 0.05)
    np.testing.assert_allclose(true[20:40, REFUSAL], 0.10)
    np.testing.assert_allclose(true[40:, REFUSAL], 0.05)
    fallback = true[:, RATE_SIGNALS.index("fallback_rate")]
    np.testing.assert_allclose(fallback[:10], 0.03)
    np.testing.assert_allclose(np.diff(fallback[10:30]), 0.03 * 2 / 20)
    np.testing.assert_allclose(fallback[29:], 0.09)


def test_zero_volume_days_and_the_all_cohort() -> None:
    cohorts = (Cohort("small", 100, zero_day_prob=0.1), Cohort("big", 2000))
    traffic = simulate(TrafficSpec(cohorts, days=300, seed=5))
    zero = traffic.volume[:, 1] == 0
    assert zero.mean() == pytest.approx(0.1, abs=0.05)
    assert np.all(traffic.rate_den[zero, 1] == 0)
    np.testing.assert_array_equal(traffic.rate_num[:, 0], traffic.rate_num[:, 1:].sum(1))
    np.testing.assert_array_equal(traffic.volume[:, 0], traffic.volume[:, 1:].sum(1))
    np.testing.assert_allclose(
        traffic.calibration[:, 0, 0].sum(-1), traffic.calibration[:, 1:, 0].sum((1, 2))
    )
    np.testing.assert_allclose(
        traffic.moments["latency"][:, 0, :3], traffic.moments["latency"][:, 1:, :3].sum(1)
    )


def test_calibration_generator_is_calibrated_when_told_so() -> None:
    def errors(miscalibration: float) -> np.ndarray:
        spec = TrafficSpec(
            (Cohort("c", 2000),), days=100, wobble=0.0, miscalibration=miscalibration, seed=6
        )
        cal = simulate(spec).calibration[:, 1]
        return debiased_squared_calibration_error(*(cal[:, i] for i in range(4)))

    calibrated = errors(0.0)
    assert abs(calibrated.mean()) < 3 * calibrated.std() / np.sqrt(calibrated.size)
    assert errors(0.5).mean() > 2e-3


def test_latency_change_multiplies_the_values() -> None:
    change = (Change("big", "latency", 10, 1.5),)
    spec = TrafficSpec(BIG, 20, wobble=0.0, weekday_amplitude=0.0, changes=change, seed=7)
    m = simulate(spec).moments["latency"][:, 1]
    log_mean = m[:, 1] / m[:, 0]
    assert log_mean[10:].mean() - log_mean[:10].mean() == pytest.approx(np.log(1.5), abs=0.01)


def test_a_priced_run_adds_the_cost_of_the_same_calls_and_changes_no_other_draw() -> None:
    unpriced = simulate(TrafficSpec(BIG, 20, seed=5))
    priced = simulate(TrafficSpec(BIG, 20, seed=5, priced=True))
    assert set(priced.moments) == {*unpriced.moments, "cost"}
    for metric, moments in unpriced.moments.items():
        assert np.array_equal(priced.moments[metric], moments)
    assert np.array_equal(priced.rate_num, unpriced.rate_num)
    tokens, cost = priced.moments["tokens"][:, 1], priced.moments["cost"][:, 1]
    assert np.array_equal(cost[:, 0], tokens[:, 0])  # one cost per call
    # Nano-dollars at 0.8 USD per million tokens with a mean-zero log mix: the daily log means
    # sit ln(800) above the tokens' and move with them (the same calls).
    gap = cost[:, 1] / cost[:, 0] - tokens[:, 1] / tokens[:, 0]
    assert gap.mean() == pytest.approx(np.log(800.0), abs=0.02)
    assert gap.std() < 0.02
