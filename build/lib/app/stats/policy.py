"""The knobs of a checkpoint gate, with defaults a statistician can defend (docs/statistics.md)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Metric = Literal["pass_rate", "mean_score"]
Correction = Literal["holm", "bh"]


@dataclass(frozen=True)
class GatePolicy:
    """What every guarded cohort of one gate must show before the candidate may ship.

    ``margin`` is the largest tolerated drop of ``metric`` (candidate minus champion);
    ``alpha`` is the two-sided error rate, so intervals are (1 - alpha) and
    non-inferiority is a one-sided alpha/2 test, as in ICH E9.
    """

    metric: Metric = "pass_rate"
    margin: float = 0.02
    alpha: float = 0.05
    floor: float | None = None
    power: float = 0.8
    min_effect: float | None = None
    min_n: int | None = None
    score_range: float = 1.0
    correction: Correction = "holm"
    n_resamples: int = 2000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.score_range <= 0.0:
            raise ValueError("score_range must be positive")
        if not 0.0 < self.margin < self.metric_range:
            raise ValueError("margin must lie strictly between 0 and the metric's range")
        if not 0.0 < self.alpha < 1.0 or not 0.0 < self.power < 1.0:
            raise ValueError("alpha and power must lie strictly between 0 and 1")
        if self.min_effect is not None and self.min_effect <= 0.0:
            raise ValueError("min_effect must be positive")
        if self.min_n is not None and self.min_n < 2:
            raise ValueError("min_n must be at least 2")
        if self.n_resamples < 100:
            raise ValueError("n_resamples below 100 makes the bootstrap tails meaningless")

    @property
    def confidence(self) -> float:
        return 1.0 - self.alpha

    @property
    def effect(self) -> float:
        """The effect the power calculation targets: by default the margin itself."""
        return self.margin if self.min_effect is None else self.min_effect

    @property
    def metric_range(self) -> float:
        """Largest possible per-row change of the metric: 1 for pass/fail, else the score range."""
        return 1.0 if self.metric == "pass_rate" else self.score_range

    @property
    def minimum_rows(self) -> int:
        """Rows required before non-inferiority may be claimed at all.

        By default the smallest n at which a hidden failure mode covering a share
        margin/range of traffic (enough to cost the whole margin) would show up in
        at least one row with probability 1 - alpha/2: (1 - margin/range)^n <= alpha/2.
        Below it, a zero-variance cohort's [0, 0] interval proves nothing.
        """
        if self.min_n is not None:
            return self.min_n
        share = self.margin / self.metric_range
        return math.ceil(math.log(self.alpha / 2.0) / math.log1p(-share))
