"""When an alert opens, stays open and resolves: a pure daily step per cohort x signal.

Two rules judge each day: the band (today's p-value below its share of the error budget)
and the CUSUM (S above its threshold h). The state kept per cohort x signal is
(alert open?, consecutive days in control, CUSUM statistic(s)); the daily job reads it,
calls ``alert_step`` with today's two verdicts and writes it back.

- Closed, either rule fires: OPEN (evidence says which fired).
- Open, either rule fires: STAY; the in-control count restarts at 0.
- Open, in control today: the in-control count grows; at ``resolve_after`` RESOLVE.
  "In control" means the band is quiet *and* S is at or below the CUSUM's release level
  (``cusum_quiet``; cusum.release_level, half of h by default). The gap between h and the
  release level is hysteresis: a persistent shift keeps S near its cap (cusum.py caps it
  so it can come back once the shift ends), far above the release level, so the alert stays
  open for as long as the shift lasts, however many individual days land inside the band.
- Open, neither firing nor in control (S between release level and h): STAY, and the
  in-control count restarts.
- No data today (or not judged): nothing changes; the day neither counts as recovery nor
  breaks the count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.stats._arrays import BoolArray, IntArray

DEFAULT_RESOLVE_AFTER = 3

NONE, OPEN, STAY, RESOLVE = 0, 1, 2, 3
ACTION_NAMES = ("none", "open", "stay", "resolve")

# Which rule fired, as a bit field (also the evidence's "rule": band, cusum or both).
RULE_BAND, RULE_CUSUM = 1, 2


@dataclass(frozen=True)
class AlertStep:
    """Arrays of one shape: today's action code, and the state to store for tomorrow.

    Invariants: is_open is True after OPEN/STAY and False after RESOLVE/NONE-while-closed;
    days_in_control is 0 whenever a rule fired, and < resolve_after while open.
    """

    action: IntArray
    rules: IntArray
    is_open: BoolArray
    days_in_control: IntArray


def alert_step(
    is_open: npt.ArrayLike,
    days_in_control: npt.ArrayLike,
    band_fired: npt.ArrayLike,
    cusum_fired: npt.ArrayLike,
    has_data: npt.ArrayLike,
    resolve_after: int = DEFAULT_RESOLVE_AFTER,
    cusum_quiet: npt.ArrayLike | None = None,
) -> AlertStep:
    """Today's open / stay / resolve decision from yesterday's state and today's verdicts.

    ``cusum_fired``: S > h today; ``cusum_quiet``: S <= release level today (defaults to
    not cusum_fired, i.e. no hysteresis). Both are ignored where ``has_data`` is False.
    """
    if resolve_after < 1:
        raise ValueError("resolve_after must be at least 1")
    was_open = np.asarray(is_open, dtype=np.bool_)
    count = np.asarray(days_in_control, dtype=np.int64)
    band = np.asarray(band_fired, dtype=np.bool_)
    cusum = np.asarray(cusum_fired, dtype=np.bool_)
    data = np.asarray(has_data, dtype=np.bool_)
    rules = np.where(data, RULE_BAND * band + RULE_CUSUM * cusum, 0).astype(np.int64)
    fired = rules > 0
    calm = ~cusum if cusum_quiet is None else np.asarray(cusum_quiet, dtype=np.bool_)
    quiet = data & ~fired & calm
    unsettled = data & ~fired & ~calm
    counted = np.where(was_open & quiet, count + 1, np.where(unsettled, 0, count))
    resolving = was_open & quiet & (counted >= resolve_after)
    action = np.full(was_open.shape, NONE, dtype=np.int64)
    action = np.where(fired & ~was_open, OPEN, action)
    action = np.where(was_open & ~resolving, STAY, action)
    action = np.where(resolving, RESOLVE, action)
    now_open = (was_open & ~resolving) | fired
    days = np.where(fired | ~now_open, 0, counted)
    return AlertStep(
        action=np.asarray(action, dtype=np.int64),
        rules=rules,
        is_open=np.asarray(now_open, dtype=np.bool_),
        days_in_control=np.asarray(days, dtype=np.int64),
    )
