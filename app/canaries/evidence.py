"""Counts to bounds, verdicts and a canary's decision (the statistics: app.stats.sequential,
argued in docs/statistics.md §12). Pure: nothing here reads or writes the database.

Every signal is a rate where higher is worse, so each comparison is about
difference = candidate - champion, and each bound is one side of a confidence sequence:
- served: the candidate's share of live traffic against the champion's events of the same
  window. Lower bound asymptotic (fast to detect harm), upper bound exact (slow to bless);
- shadow: the candidate's shadow answers paired with the champion's served answers to the same
  requests. Both bounds exact.

The decision, in order:
1. `rollback` as soon as one comparison's lower bound exceeds its signal's margin, at the
   window's end or at the end of any earlier time bucket of it (`first_crossing`): a
   confidence sequence holds at every moment at once, so a crossing no evaluation happened to
   look at (the calls arrived late, or later calls brought the bound back) is as valid;
2. `promote` once every guarded signal x cohort is shown non-inferior (an upper bound below the
   margin in either comparison) or was never measured in any (a signal nobody records cannot
   guard), at least one was shown, and `min_hours` of traffic have passed;
3. otherwise none: keep running (the caller stops it inconclusive after `max_days`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from app.canaries.plan import Counts, MixCounts, Plan
from app.canaries.schemas import (
    ArmOut,
    BegunBeforeOut,
    Comparison,
    ComparisonOut,
    EvidenceOut,
    MixOut,
    MixShareOut,
    Verdict,
)
from app.core.schemas import CohortRef
from app.models.canaries import CanaryDecision
from app.stats.mix import homogeneity_g_test
from app.stats.sequential import (
    paired_difference_bounds,
    rate_difference_lower,
    rate_difference_upper,
)

FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

MIX_ALPHA = 1e-6
"""A mix difference is flagged at p < MIX_ALPHA: random routing gives the two arms one mix
of traces (each counted once, on its first call's arm), so under it a flag is a rare accident
even over thousands of looks and tens of dimensions, while a canary routed to a segment
differs at p far below it within a few hundred traces."""
MIN_MIX_TRACES = 100  # each arm's served traces before its mix is judged at all
SHARES_SHOWN = 10


@dataclass(frozen=True)
class Bounds:
    """One comparison's estimates and bounds, shape (bucket, cohort, signal of the comparison);
    `difference` is NaN where an arm (or the pairs) is empty."""

    comparison: Comparison
    signals: tuple[str, ...]
    difference: FloatArray
    lower: FloatArray
    upper: FloatArray
    alpha_lower: float
    alpha_upper: FloatArray  # per signal


def served_bounds(plan: Plan, counts: Counts) -> Bounds:
    """Candidate share against champion share; `counts` cumulative (or totals)."""
    n_c, n_b = counts.events[0], counts.events[1]
    x_c, x_b = counts.with_signal[0], counts.with_signal[1]
    alpha_upper = np.array([plan.alpha_upper(s) for s in plan.signals])
    with np.errstate(divide="ignore", invalid="ignore"):
        difference = np.where((n_c > 0) & (n_b > 0), x_c / n_c - x_b / n_b, np.nan)
    return Bounds(
        "served",
        plan.signals,
        difference,
        rate_difference_lower(x_c, n_c, x_b, n_b, plan.alpha_lower),
        rate_difference_upper(x_c, n_c, x_b, n_b, alpha_upper),
        plan.alpha_lower,
        alpha_upper,
    )


def shadow_bounds(plan: Plan, counts: Counts) -> Bounds:
    """Shadow answers paired with served ones; `counts` cumulative (or totals)."""
    alpha_upper = np.array([plan.alpha_upper(s) for s in plan.paired_signals])
    lower, upper = paired_difference_bounds(
        counts.worse, counts.better, counts.pairs, plan.alpha_lower, alpha_upper
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        difference = np.where(
            counts.pairs > 0, (counts.worse - counts.better) / counts.pairs, np.nan
        )
    return Bounds(
        "shadow", plan.paired_signals, difference, lower, upper, plan.alpha_lower, alpha_upper
    )


def all_bounds(plan: Plan, counts: Counts) -> list[Bounds]:
    bounds = [served_bounds(plan, counts)] if plan.served else []
    if plan.paired_signals:
        bounds.append(shadow_bounds(plan, counts))
    return bounds


@dataclass(frozen=True)
class Judged:
    """One comparison's bounds and verdicts, shape (bucket, cohort, signal of the comparison).
    `measured`: anything observed at all (either arm, or a pair)."""

    bounds: Bounds
    measured: BoolArray
    worse: BoolArray
    non_inferior: BoolArray
    columns: tuple[int, ...]  # where each of the comparison's signals sits in plan.signals

    def verdict(self, bucket: int, k: int, s: int) -> Verdict:
        if not self.measured[bucket, k, s]:
            return "unmeasured"
        if self.worse[bucket, k, s]:
            return "worse"
        if self.non_inferior[bucket, k, s]:
            return "non_inferior"
        return "undecided"


def judge(plan: Plan, counts: Counts) -> list[Judged]:
    """Every comparison's verdicts after each bucket of `counts` (cumulative, or totals)."""
    judged = []
    for bounds in all_bounds(plan, counts):
        columns = tuple(plan.signals.index(s) for s in bounds.signals)
        margins = np.array([plan.margin(s) for s in bounds.signals])
        if bounds.comparison == "served":
            measured = (counts.events[0] + counts.events[1]) > 0
        else:
            measured = (counts.pairs + counts.one_sided) > 0
        judged.append(
            Judged(bounds, measured, bounds.lower > margins, bounds.upper < margins, columns)
        )
    return judged


@dataclass(frozen=True)
class Decisions:
    """Per bucket: whether an evaluation then would roll back, or promote; and the pieces
    of the promotion rule, for the reasons."""

    rollback: BoolArray
    promote: BoolArray
    shown: IntArray  # hypotheses (signal x cohort) shown non-inferior
    pending: BoolArray  # (bucket, cohort, signal): measured somewhere, shown nowhere


def mix_differs(mix: MixCounts) -> list[MixOut]:
    """Every cohort dimension whose mix of values the two arms' served traces clearly
    differ on (G test of homogeneity at MIX_ALPHA, each arm with MIN_MIX_TRACES or more).
    `mix` counts traces, not calls: a trace's calls share its cohort and (routed per trace)
    its arm, so call counts are clustered and G under fair routing grows with the calls a
    trace makes."""
    differing = []
    for dimension, (candidate, champion) in mix.items():
        n_c, n_b = sum(candidate.values()), sum(champion.values())
        if min(n_c, n_b) < MIN_MIX_TRACES:
            continue
        values = sorted(set(candidate) | set(champion))
        test = homogeneity_g_test(
            [candidate.get(v, 0) for v in values], [champion.get(v, 0) for v in values]
        )
        if test is None or test.p_value >= MIX_ALPHA:
            continue
        shares = [
            MixShareOut(
                value=v, candidate=candidate.get(v, 0) / n_c, champion=champion.get(v, 0) / n_b
            )
            for v in values
        ]
        shares.sort(key=lambda share: -abs(share.candidate - share.champion))
        differing.append(
            MixOut(
                dimension=dimension,
                candidate_traces=n_c,
                champion_traces=n_b,
                g=test.statistic,
                df=test.df,
                p_value=test.p_value,
                shares=shares[:SHARES_SHOWN],
            )
        )
    return differing


def unconfounded(plan: Plan, differs: frozenset[str]) -> BoolArray:
    """Per guarded cohort: whether its comparison still compares like with like while the
    arms' mixes differ on the dimensions `differs`. A cohort of the one differing dimension
    holds one of its values on both arms; any other cohort (the whole population first) mixes
    them in different proportions. With two or more differing dimensions no one-dimension
    cohort holds them all fixed."""
    if not differs:
        return np.ones(len(plan.cohorts), dtype=np.bool_)
    return np.array([len(differs) == 1 and d in differs for d, _v in plan.cohorts], np.bool_)


def _trusted(plan: Plan, judged: Judged, differs: frozenset[str]) -> BoolArray:
    """Where `judged`'s crossings may roll back, broadcast to (bucket, cohort, signal): a
    shadow pair is two answers to one request, never confounded by the arms' mixes."""
    if judged.bounds.comparison == "shadow" or not differs:
        return np.ones((1, len(plan.cohorts), 1), dtype=np.bool_)
    return unconfounded(plan, differs)[None, :, None]


def decide(
    plan: Plan,
    judged: list[Judged],
    hours: FloatArray,
    min_hours: float,
    differs: frozenset[str] = frozenset(),
) -> Decisions:
    """The decision rule of the module docstring, for every bucket at once: `judged` from
    cumulative counts, `hours` of traffic at each bucket's end. While the arms' mixes differ
    on `differs` (an unscoped canary routed to a segment), only unconfounded cohorts may roll
    back and nothing promotes (docs/statistics.md §12.9)."""
    buckets = len(hours)
    shape = (buckets, len(plan.cohorts), len(plan.signals))
    rollback = np.zeros(buckets, dtype=np.bool_)
    shown = np.zeros(shape, dtype=np.bool_)
    measured = np.zeros(shape, dtype=np.bool_)
    for j in judged:
        rollback |= (j.worse & _trusted(plan, j, differs)).any(axis=(1, 2))
        shown[:, :, j.columns] |= j.non_inferior & j.measured
        measured[:, :, j.columns] |= j.measured
    pending = measured & ~shown
    proven = ~pending.any(axis=(1, 2)) & shown.any(axis=(1, 2))
    promote = ~rollback & proven & (hours >= min_hours) & (not differs)
    return Decisions(rollback, promote, shown.sum(axis=(1, 2)), pending)


@dataclass(frozen=True)
class Crossing:
    """The first time bucket whose cumulative counts put a lower bound above its margin, and
    each comparison that crossed there."""

    bucket: int
    reasons: list[str]


def first_crossing(
    plan: Plan, cumulative: Counts, differs: frozenset[str] = frozenset()
) -> Crossing | None:
    """Where the window's history (cumulative counts per bucket, oldest first) first crossed
    a rollback threshold, if it did; while the arms' mixes differ on `differs`, on an
    unconfounded cohort."""
    judged = judge(plan, cumulative)
    crossed = np.zeros(cumulative.left_out.shape[0], dtype=np.bool_)
    for j in judged:
        crossed |= (j.worse & _trusted(plan, j, differs)).any(axis=(1, 2))
    if not crossed.any():
        return None
    bucket = int(np.argmax(crossed))
    reasons = []
    for j in judged:
        bounds = j.bounds
        worse = j.worse[bucket] & _trusted(plan, j, differs)[0]
        for k, s in zip(*np.nonzero(worse), strict=True):
            signal = bounds.signals[int(s)]
            reasons.append(
                f"{signal} on {_cohort_name(plan, int(k))} ({bounds.comparison}): the candidate "
                "was worse "
                f"by more than the margin: lower bound {float(bounds.lower[bucket, k, s]):+.4f} "
                f"> {plan.margin(signal):.4f} (difference "
                f"{float(np.nan_to_num(bounds.difference[bucket, k, s])):+.4f})"
            )
    return Crossing(bucket, reasons)


@dataclass
class Assessment:
    comparisons: list[ComparisonOut]
    decision: CanaryDecision | None
    reasons: list[str] = field(default_factory=list)
    mix_differs: list[MixOut] = field(default_factory=list)

    def evidence(
        self,
        plan: Plan,
        evaluated_at: datetime,
        start: datetime,
        end: datetime,
        traffic_hours: float,
        shadow_traces_left_out: int | None,
        candidate_outside_scope: int | None = None,
        begun_before: BegunBeforeOut | None = None,
    ) -> EvidenceOut:
        """The evidence as stored; the candidate's calls outside a scope, when it served
        any, are named in the last reason (they decide nothing: the scope's comparison holds
        within it, and a scoped promotion extrapolates from the scope by design). So are the
        served calls left out as traces begun before the window; when they are most of the
        window's, first while nothing is decided: "no guarded signal measured yet" alone
        hid that the comparison saw almost nothing (trace ids reused across sessions)."""
        reasons = self.reasons
        if begun_before is not None and begun_before.calls:
            note = _begun_before_reason(begun_before)
            first = begun_before.most and self.decision is None
            reasons = [note, *reasons] if first else [*reasons, note]
        if candidate_outside_scope and plan.scope is not None:
            dimension, value = plan.scope
            reasons = [
                *reasons,
                f"the candidate served {candidate_outside_scope} calls outside the scope "
                f"{dimension}={value}: no comparison counts them (the scope declares the "
                "cohort it serves; if it serves more, its other calls are unguarded)",
            ]
        return EvidenceOut(
            evaluated_at=evaluated_at,
            window_start=start,
            window_end=end,
            hours=round(max((end - start).total_seconds(), 0.0) / 3600.0, 3),
            traffic_hours=round(traffic_hours, 3),
            scope=_scope(plan),
            comparisons=self.comparisons,
            reasons=reasons,
            mix_differs=self.mix_differs,
            shadow_traces_left_out=shadow_traces_left_out,
            candidate_outside_scope=candidate_outside_scope,
            begun_before=begun_before,
        )


def _begun_before_reason(left: BegunBeforeOut) -> str:
    counts = (
        f"{left.calls} of {left.served_calls} served calls left out as traces begun before the "
        f"canary's window (candidate {left.candidate_calls} calls of {left.candidate_traces} "
        f"traces, champion {left.champion_calls} of {left.champion_traces}; a trace counts "
        "only if neither arm served it in the day before)"
    )
    if not left.most:
        return counts
    return (
        f"{counts}: trace ids reused across sessions (one per user or conversation)? Give "
        "each session its own trace id; until then the comparison sees only the rest"
    )


def assess(
    plan: Plan, totals: Counts, hours: float, min_hours: int, mix: list[MixOut] | None = None
) -> Assessment:
    """The verdict of every comparison on the window's totals (one bucket), and the decision;
    `hours` of the candidate's traffic (since its first answer in the window) against
    `min_hours`; `mix` the dimensions whose mix the arms' served traces differ on (see
    `decide`)."""
    mix = mix or []
    differs = frozenset(m.dimension for m in mix)
    trusted = unconfounded(plan, differs)
    judged = judge(plan, totals)
    decided = decide(plan, judged, np.array([hours]), min_hours, differs)
    comparisons = [
        _comparison(plan, totals, j, k, s)
        for j in judged
        for k in range(len(plan.cohorts))
        for s in range(len(j.bounds.signals))
    ]
    if decided.rollback[0]:
        worse = [
            c
            for c in comparisons
            if c.verdict == "worse" and (c.comparison == "shadow" or trusted[_cohort(plan, c)])
        ]
        reasons = [_worse_reason(c) for c in worse]
        return Assessment(comparisons, CanaryDecision.rollback, reasons, mix)
    held = [_mix_reason(plan, mix, comparisons)] if mix else []
    pending = [
        min(group, key=lambda c: c.upper)
        for group in _hypotheses(comparisons)
        if decided.pending[0, _cohort(plan, group[0]), plan.signals.index(group[0].signal)]
    ]
    shown = int(decided.shown[0])
    if pending or not shown:
        reasons = [_pending_reason(c) for c in pending] or ["no guarded signal measured yet"]
        return Assessment(comparisons, None, held + reasons, mix)
    proven = f"non-inferior on every measured guarded signal and cohort ({shown})"
    if not decided.promote[0]:
        if not held:
            proven += f"; promotion waits for {min_hours} h of traffic ({hours:.1f} h so far)"
        return Assessment(comparisons, None, [*held, proven], mix)
    return Assessment(comparisons, CanaryDecision.promote, [proven], mix)


def _mix_reason(plan: Plan, mix: list[MixOut], comparisons: list[ComparisonOut]) -> str:
    """Why the canary neither promotes nor (on a confounded row) rolls back: the arms serve
    different mixes, so their difference is partly the mix's."""
    parts = []
    for m in mix:
        top = m.shares[0]
        parts.append(
            f"{m.dimension} ({m.dimension}={top.value or '(none)'}: {top.candidate:.0%} of the "
            f"candidate's served traces, {top.champion:.0%} of the champion's; p={m.p_value:.1e})"
        )
    confounded = [c for c in comparisons if c.verdict == "worse"]
    crossed = (
        f"; {_name(confounded[0])} is past the margin but may be the mix's, not the candidate's"
        if confounded
        else ""
    )
    # A scoped canary routed on a second dimension too: its scope is not all it serves.
    declare = "declare scope" if plan.scope is None else "narrow the scope"
    return (
        f"inconclusive: mix differs on {', '.join(parts)}, {declare} (the cohort the "
        f"candidate serves): no promotion while the arms serve different mixes, and a rollback "
        f"only on a guarded cohort of the differing dimension{crossed}"
    )


def _cohort(plan: Plan, c: ComparisonOut) -> int:
    return plan.labels.index((c.cohort.dimension, c.cohort.value))


def _scope(plan: Plan) -> CohortRef | None:
    if plan.scope is None:
        return None
    dimension, value = plan.scope
    return CohortRef(dimension=dimension, value=value)


def _cohort_name(plan: Plan, k: int) -> str:
    """The k-th cohort as reasons name it: a guarded cohort of a scoped canary is judged
    within the scope, and says so."""
    dimension, value = plan.labels[k]
    if plan.scope is None or k == 0:
        return f"{dimension}={value}"
    return f"{dimension}={value} within {plan.scope[0]}={plan.scope[1]}"


def _comparison(plan: Plan, totals: Counts, judged: Judged, k: int, s: int) -> ComparisonOut:
    bounds = judged.bounds
    signal = bounds.signals[s]
    difference = float(bounds.difference[0, k, s])
    arms: dict[str, Any] = {}
    if bounds.comparison == "served":
        column = judged.columns[s]
        arms["candidate"], arms["champion"] = (
            _arm(int(totals.events[arm, 0, k, column]), int(totals.with_signal[arm, 0, k, column]))
            for arm in (0, 1)
        )
    else:
        arms["pairs"] = int(totals.pairs[0, k, s])
        arms["candidate_worse"] = int(totals.worse[0, k, s])
        arms["candidate_better"] = int(totals.better[0, k, s])
    dimension, value = plan.labels[k]
    return ComparisonOut(
        comparison=bounds.comparison,
        signal=signal,
        cohort=CohortRef(dimension=dimension, value=value),
        scope=_scope(plan),
        margin=plan.margin(signal),
        difference=None if np.isnan(difference) else difference,
        lower=float(bounds.lower[0, k, s]),
        upper=float(bounds.upper[0, k, s]),
        alpha_lower=bounds.alpha_lower,
        alpha_upper=float(bounds.alpha_upper[s]),
        verdict=judged.verdict(0, k, s),
        **arms,
    )


def _arm(events: int, with_signal: int) -> ArmOut:
    return ArmOut(
        events=events, with_signal=with_signal, rate=with_signal / events if events else None
    )


def _hypotheses(comparisons: list[ComparisonOut]) -> list[list[ComparisonOut]]:
    """The comparisons grouped per guarded signal x cohort (each one hypothesis)."""
    groups: dict[tuple[str, str, str], list[ComparisonOut]] = {}
    for c in comparisons:
        groups.setdefault((c.signal, c.cohort.dimension, c.cohort.value), []).append(c)
    return list(groups.values())


def _name(c: ComparisonOut) -> str:
    within = ""
    if c.scope is not None and (c.scope.dimension, c.scope.value) != (
        c.cohort.dimension,
        c.cohort.value,
    ):
        within = f" within {c.scope.dimension}={c.scope.value}"
    return f"{c.signal} on {c.cohort.dimension}={c.cohort.value}{within} ({c.comparison})"


def _worse_reason(c: ComparisonOut) -> str:
    return (
        f"{_name(c)}: the candidate is worse by more than the margin: lower bound "
        f"{c.lower:+.4f} > {c.margin:.4f} (difference {c.difference or 0.0:+.4f})"
    )


def _pending_reason(c: ComparisonOut) -> str:
    return (
        f"{_name(c)}: not yet shown non-inferior: upper bound {c.upper:+.4f} >= margin "
        f"{c.margin:.4f}"
    )
