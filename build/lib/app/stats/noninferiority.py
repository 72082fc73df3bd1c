"""The verdict per guarded cohort: regressed, non-inferior, or inconclusive.

A gate must not confuse "no significant difference" with "no regression": a
3-row cohort is never significant, yet proves nothing. So safety is claimed only
as non-inferiority (the interval excludes a drop of the margin), harm only on
evidence that survives the gate's multiplicity (or, for high-risk cohorts, on
per-cohort evidence of a drop beyond the margin), and everything else is
inconclusive with the reason and the rows needed. Argued in docs/statistics.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from app.stats.paired import CohortComparison, adjust_pvalues
from app.stats.policy import GatePolicy

Verdict = Literal["regressed", "non_inferior", "inconclusive"]


@dataclass(frozen=True)
class Decision:
    status: Verdict
    reason: str


@dataclass(frozen=True)
class Evidence:
    """The guarded metric of one cohort: its change, (1 - alpha) interval and adjusted p-value."""

    n: int
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    p_adjusted: float
    candidate_value: float | None
    floor: float | None
    required_n: int | None
    high_risk: bool = False

    @classmethod
    def from_comparison(
        cls, comparison: CohortComparison, policy: GatePolicy, p_adjusted: float
    ) -> Evidence:
        """Pick the pass-rate or the mean-score statistics, whichever the policy guards."""
        c = comparison
        metric: tuple[float | None, float | None, float | None, float | None]
        if policy.metric == "pass_rate":
            metric = (c.pass_delta, c.pass_ci_low, c.pass_ci_high, c.candidate_pass_rate)
        else:
            metric = (c.delta, c.ci_low, c.ci_high, c.candidate_mean)
        delta, low, high, candidate = metric
        return cls(c.n, delta, low, high, p_adjusted, candidate, c.floor, c.required_n, c.high_risk)


def primary_p_value(comparison: CohortComparison, policy: GatePolicy) -> float:
    """The raw p-value of the guarded metric: exact McNemar for pass rates, else the score test."""
    if policy.metric == "pass_rate":
        return comparison.pass_p_value
    return comparison.p_value


def decide(evidence: Evidence, policy: GatePolicy) -> Decision:
    """Three-way non-inferiority verdict for one guarded cohort.

    Regressed if the candidate is below the hard floor, or a drop is significant
    after multiplicity adjustment, or, in a high-risk cohort, the interval shows a
    drop beyond the margin (upper bound < -margin: catches a small cohort that
    collapses, which no adjusted test can). Non-inferior if the interval's lower
    bound > -margin on at least ``policy.minimum_rows`` rows. Otherwise
    inconclusive, saying why.
    """
    e = evidence
    if e.delta is None or e.ci_low is None or e.ci_high is None:
        return Decision("inconclusive", f"{e.n} rows: too few for an interval")
    if e.floor is not None and e.candidate_value is not None and e.candidate_value < e.floor:
        return Decision(
            "regressed", f"candidate {e.candidate_value:.4g} is below the floor {e.floor:.4g}"
        )
    if e.p_adjusted < policy.alpha and e.delta < 0.0:
        return Decision(
            "regressed",
            f"significant drop {e.delta:+.4g} (adjusted p = {e.p_adjusted:.3g} < {policy.alpha})",
        )
    if e.ci_high < -policy.margin:
        shown = f"interval upper bound {e.ci_high:+.4g} < -{policy.margin}"
        if e.high_risk:
            return Decision("regressed", f"high-risk cohort, drop beyond the margin: {shown}")
        return Decision(
            "inconclusive",
            f"drop beyond the margin indicated ({shown}) but not significant after "
            f"adjustment (p = {e.p_adjusted:.3g}); mark the cohort high-risk to block on it",
        )
    if e.ci_low > -policy.margin and e.n >= policy.minimum_rows:
        return Decision(
            "non_inferior",
            f"interval lower bound {e.ci_low:+.4g} > -{policy.margin} on {e.n} rows",
        )
    return Decision("inconclusive", _inconclusive_reason(e, policy))


def _inconclusive_reason(evidence: Evidence, policy: GatePolicy) -> str:
    needed = f"; about {evidence.required_n} rows needed" if evidence.required_n else ""
    if evidence.n < policy.minimum_rows:
        return (
            f"too few rows: {evidence.n} < {policy.minimum_rows}, the minimum before "
            f"non-inferiority can be claimed{needed}"
        )
    return (
        f"too noisy: interval lower bound {evidence.ci_low:+.4g} does not exclude a drop "
        f"of {policy.margin}{needed}"
    )


def apply_gate(
    comparisons: Sequence[CohortComparison], policy: GatePolicy
) -> list[CohortComparison]:
    """Adjust the guarded p-values of a whole gate together, then decide every guarded cohort.

    ``comparisons`` is the flat list over all evaluators of the gate, as returned
    by ``compare_cohorts``; the result keeps its order.
    """
    guarded = [i for i, c in enumerate(comparisons) if c.guarded]
    raw = np.array([primary_p_value(comparisons[i], policy) for i in guarded], dtype=np.float64)
    adjusted = dict(zip(guarded, adjust_pvalues(raw, policy.correction), strict=True))
    decided = []
    for i, comparison in enumerate(comparisons):
        if i not in adjusted:
            decided.append(dataclasses.replace(comparison, status="unguarded"))
            continue
        p = float(adjusted[i])
        verdict = decide(Evidence.from_comparison(comparison, policy, p), policy)
        decided.append(
            dataclasses.replace(
                comparison, p_adjusted=p, status=verdict.status, reason=verdict.reason
            )
        )
    return decided


def gate_verdict(decided: Sequence[CohortComparison]) -> Literal["block", "pass", "inconclusive"]:
    """Block on any regression; pass only if every guarded cohort is non-inferior.

    Requiring all cohorts to be non-inferior is an intersection-union test
    (Berger 1982), so the gate's chance of wrongly passing stays at alpha/2
    without any multiplicity adjustment of the intervals.
    """
    statuses = [c.status for c in decided if c.guarded]
    if "regressed" in statuses:
        return "block"
    if statuses and all(s == "non_inferior" for s in statuses):
        return "pass"
    return "inconclusive"
