"""The decision rules on constructed counts (no database): rollback on any comparison whose
lower bound clears the margin, promotion only when every measured signal x cohort is shown
non-inferior and min_hours have passed, and the error split of the plan."""

from __future__ import annotations

import numpy as np
import pytest

from app.canaries.evidence import assess
from app.canaries.plan import Counts, Plan
from app.models.canaries import CanaryDecision
from app.stats.sequential import rate_difference_lower

SIGNALS = ("refusal_rate", "fallback_rate", "thumbs_down_rate")
COHORTS = (("all", "all"), ("region", "eu"))


def plan(comparisons: tuple[str, ...] = ("served", "shadow")) -> Plan:
    return Plan(SIGNALS, COHORTS, comparisons, (0.01, 0.02, 0.05), 0.05)


def counts(
    served: dict[tuple[int, str], tuple[int, int, int, int]] | None = None,
    paired: dict[tuple[int, str], tuple[int, int, int]] | None = None,
    the_plan: Plan | None = None,
) -> Counts:
    """Totals (one bucket): served[(cohort, signal)] = (x_candidate, n_candidate, x_champion,
    n_champion); paired[(cohort, signal)] = (pairs, worse, better)."""
    p = the_plan or plan()
    events = np.zeros((2, 1, len(p.cohorts), len(p.signals)), dtype=np.int64)
    with_signal = np.zeros_like(events)
    for (k, signal), (xc, nc, xb, nb) in (served or {}).items():
        s = p.signals.index(signal)
        events[:, 0, k, s] = nc, nb
        with_signal[:, 0, k, s] = xc, xb
    shape = (1, len(p.cohorts), len(p.paired_signals))
    pairs, worse, better = (np.zeros(shape, dtype=np.int64) for _ in range(3))
    for (k, signal), (n, w, b) in (paired or {}).items():
        s = p.paired_signals.index(signal)
        pairs[0, k, s], worse[0, k, s], better[0, k, s] = n, w, b
    left_out = np.zeros(1, dtype=np.int64)
    return Counts(events, with_signal, pairs, worse, better, np.zeros_like(pairs), left_out, 24.0)


def test_the_plan_splits_alpha_over_the_rollback_family_only() -> None:
    both = plan()
    # 3 signals served + 2 pairable (no feedback on shadow answers), on 2 cohorts.
    assert both.paired_signals == ("refusal_rate", "fallback_rate")
    assert both.family_size == 10 and both.alpha_lower == pytest.approx(0.005)
    assert both.alpha_upper("refusal_rate") == 0.025  # shown by either comparison
    assert both.alpha_upper("thumbs_down_rate") == 0.05  # only the served one can show it
    served_only = plan(("served",))
    assert served_only.family_size == 6 and served_only.alpha_upper("refusal_rate") == 0.05
    assert plan(("shadow",)).family_size == 4


def test_one_comparison_over_the_margin_rolls_back_and_says_where() -> None:
    # Clean everywhere except the paired refusal rate of the eu cohort.
    served = {(k, s): (50, 1000, 450, 9000) for k in (0, 1) for s in SIGNALS}
    assessment = assess(plan(), counts(served, {(1, "refusal_rate"): (600, 90, 5)}), 30.0, 24)
    assert assessment.decision is CanaryDecision.rollback
    [reason] = assessment.reasons
    assert reason.startswith("refusal_rate on region=eu (shadow): the candidate is worse")
    worse = [c for c in assessment.comparisons if c.verdict == "worse"]
    assert [(c.comparison, c.cohort.value) for c in worse] == [("shadow", "eu")]
    assert worse[0].lower > 0.01 and worse[0].difference == pytest.approx(85 / 600)


def test_worse_but_within_the_margin_does_not_roll_back() -> None:
    # +2 points of fallback, margin 2 points: the lower bound never clears it.
    served = {(0, "fallback_rate"): (1200, 20_000, 18_000, 400_000)}
    assessment = assess(plan(("served",)), counts(served), 48.0, 24)
    assert assessment.decision is None
    fallback = next(
        c for c in assessment.comparisons if c.signal == "fallback_rate" and c.cohort.value == "all"
    )
    assert fallback.difference == pytest.approx(0.015)
    assert 0.0 < fallback.lower < 0.02 < fallback.upper
    assert fallback.verdict == "undecided"


def test_promotion_needs_every_measured_hypothesis_and_min_hours() -> None:
    served = {(k, s): (2000, 40_000, 18_000, 360_000) for k in (0, 1) for s in SIGNALS}
    early = assess(plan(("served",)), counts(served), 10.0, 24)
    assert early.decision is None
    assert "waits for 24 h" in early.reasons[0] and "(6)" in early.reasons[0]
    ready = assess(plan(("served",)), counts(served), 24.0, 24)
    assert ready.decision is CanaryDecision.promote
    assert {c.verdict for c in ready.comparisons} == {"non_inferior"}


def test_unmeasured_signals_do_not_block_but_one_undecided_does() -> None:
    # Only refusal is recorded at all; the eu cohort has no traffic.
    measured = {(0, "refusal_rate"): (2000, 40_000, 18_000, 360_000)}
    assessment = assess(plan(), counts(measured), 30.0, 24)
    assert assessment.decision is CanaryDecision.promote
    verdicts = {(c.comparison, c.signal, c.cohort.value): c.verdict for c in assessment.comparisons}
    assert verdicts[("served", "refusal_rate", "all")] == "non_inferior"
    assert verdicts[("shadow", "refusal_rate", "all")] == "unmeasured"
    assert verdicts[("served", "thumbs_down_rate", "eu")] == "unmeasured"
    # The champion measured thumbs-down and the candidate has none yet: not shown.
    measured[(0, "thumbs_down_rate")] = (0, 0, 900, 9000)
    pending = assess(plan(), counts(measured), 30.0, 24)
    assert pending.decision is None
    assert pending.reasons == [
        "thumbs_down_rate on all=all (served): not yet shown non-inferior: upper bound "
        "+1.0000 >= margin 0.0500"
    ]


def test_nothing_measured_decides_nothing() -> None:
    assessment = assess(plan(), counts(), 100.0, 0)
    assert assessment.decision is None
    assert assessment.reasons == ["no guarded signal measured yet"]


def test_the_served_lower_bound_is_the_stats_module_at_the_family_alpha() -> None:
    served = {(0, "refusal_rate"): (220, 2000, 900, 18_000)}
    assessment = assess(plan(), counts(served), 24.0, 24)
    refusal = next(
        c
        for c in assessment.comparisons
        if (c.comparison, c.signal, c.cohort.value) == ("served", "refusal_rate", "all")
    )
    assert refusal.alpha_lower == pytest.approx(0.005)
    assert refusal.lower == pytest.approx(
        float(rate_difference_lower(220, 2000, 900, 18_000, 0.005))
    )
    assert refusal.candidate is not None and refusal.candidate.rate == pytest.approx(0.11)
    assert refusal.verdict == "worse"
