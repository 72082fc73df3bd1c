"""What a canary compares, fixed when it starts, and the counts its comparisons rest on.

The bottom of the package: queries fill `Counts` for a `Plan`, evidence turns them into
bounds and a decision. Nothing here touches the database."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from app.models import Canary

ALL = ("all", "all")
# Shadow answers never reach a user, so they collect no feedback: every other signal pairs.
UNPAIRED_SIGNALS = frozenset({"thumbs_down_rate"})

IntArray = npt.NDArray[np.int64]

MixCounts = dict[str, tuple[dict[str, int], dict[str, int]]]
"""Per cohort dimension: the candidate's and the champion's served traces per value of it
('' for traces without the dimension), each trace once, on the arm and in the cohort of its
first served call (queries.load_mix)."""


@dataclass(frozen=True)
class Plan:
    """The family of comparisons: every guarded signal x cohort (the whole population first)
    in the served comparison, and every pairable one in the shadow comparison.

    Error split (docs/statistics.md §12.5). A rollback needs one comparison whose lower bound
    clears the margin, so its chance of a wrong rollback is a union over the family: each
    lower bound gets alpha / family_size (Bonferroni, valid under any dependence). A promotion
    needs every signal x cohort shown non-inferior (an intersection-union test, Berger 1982):
    no split across them, only across the (at most two) comparisons that may show it."""

    signals: tuple[str, ...]
    cohorts: tuple[tuple[str, str], ...]
    comparisons: tuple[str, ...]
    margins: tuple[float, ...]
    alpha: float
    scope: tuple[str, str] | None = None
    """The one cohort the candidate serves, when declared: every count is of its events
    alone, on both arms, so the first cohort (ALL) stands for the scope, and each guarded
    cohort for its intersection with the scope."""

    @classmethod
    def of(cls, canary: Canary) -> Plan:
        signals = tuple(canary.signals)
        cohorts = (ALL, *((c["dimension"], c["value"]) for c in canary.cohorts))
        margins = tuple(float(canary.margins.get(s, canary.margin)) for s in signals)
        scope = (canary.scope["dimension"], canary.scope["value"]) if canary.scope else None
        return cls(signals, cohorts, tuple(canary.comparisons), margins, canary.alpha, scope)

    @property
    def labels(self) -> tuple[tuple[str, str], ...]:
        """The cohorts as evidence and pages name them: the scope in the whole population's
        place when there is one."""
        return (self.scope or ALL, *self.cohorts[1:])

    @property
    def served(self) -> bool:
        return "served" in self.comparisons

    @property
    def paired_signals(self) -> tuple[str, ...]:
        if "shadow" not in self.comparisons:
            return ()
        return tuple(s for s in self.signals if s not in UNPAIRED_SIGNALS)

    @property
    def family_size(self) -> int:
        served = len(self.signals) if self.served else 0
        return len(self.cohorts) * (served + len(self.paired_signals))

    @property
    def alpha_lower(self) -> float:
        return self.alpha / self.family_size

    def alpha_upper(self, signal: str) -> float:
        sharing = int(self.served) + int(signal in self.paired_signals)
        return self.alpha / sharing

    def margin(self, signal: str) -> float:
        return self.margins[self.signals.index(signal)]


@dataclass(frozen=True)
class Counts:
    """Counts per time bucket (oldest first), guarded cohort and signal.

    Served, shape (arm, bucket, cohort, signal) with arm 0 the candidate and 1 the champion:
    `events` judged on the signal and those counting against it (`with_signal`). Shadow, shape
    (bucket, cohort, paired signal): `pairs` where both answers were judged, those where only
    the candidate's counted against the signal (`worse`) and only the champion's (`better`),
    and requests answered by both where only one side was judged on it (`one_sided`: a
    candidate whose answers stopped carrying a field leaves the signal measured, unproven).
    `left_out`, shape (bucket,): served traces with shadow answers that formed no pair, having
    several calls on a side (which shadow answer answers which call is not recorded)."""

    events: IntArray
    with_signal: IntArray
    pairs: IntArray
    worse: IntArray
    better: IntArray
    one_sided: IntArray
    left_out: IntArray
    bucket_hours: float

    def last(self) -> Counts:
        """The last bucket alone: of cumulative counts, the window's totals."""
        return Counts(
            self.events[:, -1:],
            self.with_signal[:, -1:],
            self.pairs[-1:],
            self.worse[-1:],
            self.better[-1:],
            self.one_sided[-1:],
            self.left_out[-1:],
            self.bucket_hours,
        )

    def cumulative(self) -> Counts:
        """Each bucket's counts from the start: what an evaluation at its end saw."""
        return Counts(
            np.cumsum(self.events, axis=-3),
            np.cumsum(self.with_signal, axis=-3),
            np.cumsum(self.pairs, axis=0),
            np.cumsum(self.worse, axis=0),
            np.cumsum(self.better, axis=0),
            np.cumsum(self.one_sided, axis=0),
            np.cumsum(self.left_out, axis=0),
            self.bucket_hours,
        )
