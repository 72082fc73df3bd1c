"""app.stats.alerting: open / stay / resolve sequences, no-data days and hysteresis."""

from __future__ import annotations

import numpy as np

from app.stats.alerting import (
    NONE,
    OPEN,
    RESOLVE,
    RULE_BAND,
    RULE_CUSUM,
    STAY,
    alert_step,
)


def run(days: list[tuple[bool, bool, bool, bool]], resolve_after: int = 3) -> list[int]:
    """days: (band fired, cusum fired, cusum quiet, has data) -> action per day."""
    is_open, count, actions = np.array(False), np.array(0), []
    for band, cusum, quiet, data in days:
        step = alert_step(is_open, count, band, cusum, data, resolve_after, quiet)
        is_open, count = step.is_open, step.days_in_control
        actions.append(int(step.action))
    return actions


QUIET = (False, False, True, True)
NO_DATA = (False, False, True, False)


def test_opens_on_either_rule_and_reports_which() -> None:
    step = alert_step([False] * 3, [0] * 3, [True, False, True], [False, True, True], [True] * 3)
    assert list(step.action) == [OPEN] * 3
    assert list(step.rules) == [RULE_BAND, RULE_CUSUM, RULE_BAND | RULE_CUSUM]


def test_resolves_after_consecutive_days_in_control() -> None:
    fired = (True, False, False, True)
    assert run([fired, QUIET, QUIET, QUIET, QUIET]) == [OPEN, STAY, STAY, RESOLVE, NONE]


def test_a_fired_day_restarts_the_count() -> None:
    fired = (False, True, False, True)
    days = [fired, QUIET, QUIET, fired, QUIET, QUIET, QUIET]
    assert run(days) == [OPEN, STAY, STAY, STAY, STAY, STAY, RESOLVE]


def test_no_data_neither_counts_nor_breaks() -> None:
    fired = (True, False, True, True)
    days = [fired, QUIET, NO_DATA, NO_DATA, QUIET, QUIET]
    assert run(days) == [OPEN, STAY, STAY, STAY, STAY, RESOLVE]
    assert run([NO_DATA, NO_DATA]) == [NONE, NONE]


def test_hysteresis_cusum_between_release_and_threshold_keeps_it_open() -> None:
    fired = (False, True, False, True)
    settling = (False, False, False, True)  # S <= h but above the release level
    days = [fired, settling, settling, settling, settling, QUIET, QUIET, QUIET]
    assert run(days) == [OPEN, STAY, STAY, STAY, STAY, STAY, STAY, RESOLVE]
    # Without an open alert the in-between zone does nothing.
    assert run([settling, settling]) == [NONE, NONE]


def test_resolve_after_one_day() -> None:
    fired = (True, False, True, True)
    assert run([fired, QUIET, fired], resolve_after=1) == [OPEN, RESOLVE, OPEN]


def test_state_invariants_hold_on_random_sequences() -> None:
    rng = np.random.default_rng(0)
    shape = (500,)
    is_open, count = np.zeros(shape, bool), np.zeros(shape, np.int64)
    for _ in range(60):
        band, cusum = rng.random(shape) < 0.1, rng.random(shape) < 0.1
        quiet = ~cusum & (rng.random(shape) < 0.7)
        data = rng.random(shape) < 0.9
        step = alert_step(is_open, count, band, cusum, data, 3, quiet)
        fired = data & (band | cusum)
        assert np.all(step.days_in_control[fired] == 0)
        assert np.all(step.days_in_control[step.is_open] < 3)
        assert np.all(step.is_open[step.action == OPEN]) and np.all(~is_open[step.action == OPEN])
        assert np.all(~step.is_open[step.action == RESOLVE])
        assert np.all((step.action == STAY) <= (is_open & step.is_open))
        is_open, count = step.is_open, step.days_in_control
