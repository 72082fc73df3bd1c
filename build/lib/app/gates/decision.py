"""Deciding a gate from paired results: which cohorts are guarded, the statistics per
evaluator x cohort (app.stats), the verdict and the reasons a person reads."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from app.core.errors import Unprocessable
from app.gates.pairs import RISK_BY_RANK, PairedResults
from app.gates.policies import stats_policy
from app.gates.schemas import GatePolicySpec
from app.models.datasets import Risk
from app.models.gates import GateVerdict
from app.stats._arrays import BoolArray
from app.stats.noninferiority import apply_gate, gate_verdict
from app.stats.paired import CohortComparison, CohortMeta, compare_cohorts

Role = Literal["block", "warn", "report"]


@dataclass(frozen=True)
class Cohort:
    dimension: str
    value: str
    risk: Risk
    role: Role


@dataclass(frozen=True)
class Decision:
    verdict: GateVerdict
    reasons: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]
    notes: list[str]


def cohorts_of(paired: PairedResults, spec: GatePolicySpec) -> tuple[list[Cohort], BoolArray]:
    """Every cohort the gate reports (all, each risk level, each value of each dimension) and
    its (cohorts x rows) membership. A cohort is as risky as its riskiest row."""
    n = len(paired.keys)
    labels: list[tuple[str, str]] = [("all", "all")]
    masks: list[BoolArray] = [np.ones(n, dtype=np.bool_)]
    for rank in reversed(range(len(RISK_BY_RANK))):
        mask = paired.risk_rank == rank
        if mask.any():
            labels.append(("risk", RISK_BY_RANK[rank].value))
            masks.append(mask)
    for dimension in sorted(paired.dimensions):
        column = np.asarray(paired.dimensions[dimension], dtype=object)
        for value in sorted({v for v in paired.dimensions[dimension] if v is not None}):
            labels.append((dimension, value))
            masks.append(column == value)
    membership = np.vstack(masks).astype(np.bool_) if n else np.zeros((1, 0), dtype=np.bool_)
    cohort_risk = np.where(membership, paired.risk_rank[None, :], 0).max(axis=1, initial=0)
    cohorts = []
    for (dimension, value), rank in zip(labels, cohort_risk, strict=True):
        risk = RISK_BY_RANK[int(rank)]
        cohorts.append(Cohort(dimension, value, risk, _role(dimension, risk, spec)))
    return cohorts, membership


def _role(dimension: str, risk: Risk, spec: GatePolicySpec) -> Role:
    if (dimension == "all" and spec.guard_population) or risk in spec.block_risks:
        return "block"
    return "warn" if risk in spec.warn_risks else "report"


def _per_cohort_evidence_counts(cohort: Cohort, spec: GatePolicySpec) -> bool:
    """Whether an interval entirely beyond the margin is a regression without adjusted
    significance: for cohorts of a blocking risk level (a collapsing 10-row high-risk cohort is
    never significant after adjustment), and for warnings, which cost nothing."""
    return cohort.risk in spec.block_risks or cohort.role == "warn"


@dataclass(frozen=True)
class _Compared:
    evaluator: str
    cohort: Cohort
    result: CohortComparison


def _metric(c: CohortComparison, spec: GatePolicySpec) -> tuple[Any, ...]:
    """(baseline, candidate, delta, ci_low, ci_high, p_value) of the guarded metric."""
    if spec.metric == "pass_rate":
        return (
            c.baseline_pass_rate,
            c.candidate_pass_rate,
            c.pass_delta,
            c.pass_ci_low if c.n else None,
            c.pass_ci_high if c.n else None,
            c.pass_p_value,
        )
    return (c.baseline_mean, c.candidate_mean, c.delta, c.ci_low, c.ci_high, c.p_value)


def _below_floor(c: CohortComparison, spec: GatePolicySpec) -> bool:
    candidate = _metric(c, spec)[1]
    return c.floor is not None and candidate is not None and candidate < c.floor


def decide(paired: PairedResults, spec: GatePolicySpec) -> Decision:
    """Compare every evaluator in every cohort, adjust and decide the blocking and the warning
    cohorts as two separate families, and reach the verdict."""
    policy = stats_policy(spec)
    notes = list(paired.notes)
    if not paired.keys or not paired.evaluators:
        raise Unprocessable(
            "the two runs share no scored (key, evaluator) pair to compare",
            field="baseline_run_id",
        )
    cohorts, membership = cohorts_of(paired, spec)
    compared: list[_Compared] = []
    for pairs in paired.evaluators:
        floor = spec.floors.get(pairs.name, spec.floor)
        meta = [
            CohortMeta(
                f"{c.dimension}={c.value}",
                guarded=c.role != "report",
                high_risk=_per_cohort_evidence_counts(c, spec),
                floor=floor,
            )
            for c in cohorts
        ]
        results = compare_cohorts(
            pairs.baseline_scores,
            pairs.candidate_scores,
            pairs.baseline_passed,
            pairs.candidate_passed,
            membership[:, pairs.rows],
            meta,
            policy,
        )
        compared += [_Compared(pairs.name, c, r) for c, r in zip(cohorts, results, strict=True)]
    for role in ("block", "warn"):
        family = [i for i, item in enumerate(compared) if item.cohort.role == role]
        if family:
            decided = apply_gate([compared[i].result for i in family], policy)
            for i, result in zip(family, decided, strict=True):
                compared[i] = dataclasses.replace(compared[i], result=result)

    blocking = [item for item in compared if item.cohort.role == "block"]
    floor_breaches = [item for item in compared if _below_floor(item.result, spec)]
    identical = all(pairs.identical for pairs in paired.evaluators)
    verdict: GateVerdict
    if floor_breaches or any(item.result.status == "regressed" for item in blocking):
        verdict = GateVerdict.block
    elif identical:
        verdict = GateVerdict.passed
        notes.append(
            f"candidate and baseline results are identical on all {len(paired.keys)} shared "
            "rows and every evaluator: nothing changed, so the gate passes"
        )
    elif not blocking:
        verdict = GateVerdict.inconclusive
        notes.append("this policy guards no cohort of this dataset: nothing can pass")
    else:
        verdict = GateVerdict(gate_verdict([item.result for item in blocking]))
    reasons = _reasons(verdict, compared, floor_breaches, spec)
    comparisons = [_comparison_out(item, spec) for item in compared]
    return Decision(verdict, reasons, comparisons, notes)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _describe(item: _Compared, spec: GatePolicySpec) -> str:
    c = item.result
    baseline, candidate, delta, low, high, _p = _metric(c, spec)
    confidence = round(100 * (1 - spec.alpha))
    adjusted = f", adjusted p = {c.p_adjusted:.3g}" if c.p_adjusted is not None else ""
    delta_text = "n/a" if delta is None else f"{delta:+.3f}"
    interval = f" [{_fmt(low)}, {_fmt(high)}]" if low is not None and high is not None else ""
    return (
        f"{item.evaluator} on {item.cohort.dimension}={item.cohort.value} "
        f"({item.cohort.risk.value} risk, {c.n} rows): {spec.metric.replace('_', ' ')} "
        f"{_fmt(baseline)} -> {_fmt(candidate)}, delta {delta_text}{interval} "
        f"({confidence}% CI){adjusted}"
    )


def _reason(severity: str, item: _Compared, message: str) -> dict[str, Any]:
    return {
        "severity": severity,
        "message": message,
        "evaluator": item.evaluator,
        "dimension": item.cohort.dimension,
        "value": item.cohort.value,
        "n": item.result.n,
        "required_n": item.result.required_n,
    }


def _reasons(
    verdict: GateVerdict,
    compared: Sequence[_Compared],
    floor_breaches: Sequence[_Compared],
    spec: GatePolicySpec,
) -> list[dict[str, Any]]:
    reasons = []
    for item in floor_breaches:
        message = f"{_describe(item, spec)}: below the hard floor {item.result.floor:.3f}"
        reasons.append(_reason("block", item, message))
    for item in compared:
        if item.result.status == "regressed" and item.cohort.role == "block":
            reasons.append(_reason("block", item, f"{_describe(item, spec)}: {item.result.reason}"))
    if verdict is GateVerdict.inconclusive:
        for item in compared:
            if item.cohort.role == "block" and item.result.status == "inconclusive":
                message = f"{_describe(item, spec)}: {item.result.reason}"
                reasons.append(_reason("inconclusive", item, message))
    for item in compared:
        if item.result.status == "regressed" and item.cohort.role == "warn":
            message = f"{_describe(item, spec)}: {item.result.reason} (warning only)"
            reasons.append(_reason("warn", item, message))
    if verdict is GateVerdict.passed:
        guarded = sum(item.cohort.role == "block" for item in compared)
        reasons.insert(
            0,
            {
                "severity": "info",
                "message": f"all {guarded} guarded evaluator x cohort comparisons rule out a "
                f"drop of {spec.margin} in {spec.metric.replace('_', ' ')} "
                "(or the results are identical)",
            },
        )
    return reasons


def _comparison_out(item: _Compared, spec: GatePolicySpec) -> dict[str, Any]:
    c = item.result
    baseline, candidate, delta, low, high, p_value = _metric(c, spec)
    return {
        "evaluator": item.evaluator,
        "cohort": {"dimension": item.cohort.dimension, "value": item.cohort.value},
        "dimension": item.cohort.dimension,
        "value": item.cohort.value,
        "risk": item.cohort.risk.value,
        "role": item.cohort.role,
        "guarded": item.cohort.role == "block",
        "n": c.n,
        "metric": spec.metric,
        "baseline": baseline,
        "candidate": candidate,
        "delta": delta,
        "ci_low": low,
        "ci_high": high,
        "p_value": p_value,
        "p_adjusted": c.p_adjusted,
        "regressed": c.status == "regressed" or _below_floor(c, spec),
        "below_floor": _below_floor(c, spec),
        "status": c.status,
        "reason": c.reason,
        "underpowered": c.underpowered,
        "required_n": c.required_n,
        "floor": c.floor,
        "scores": {
            "baseline": c.baseline_mean,
            "candidate": c.candidate_mean,
            "delta": c.delta,
            "ci_low": c.ci_low,
            "ci_high": c.ci_high,
            "p_value": c.p_value,
        },
        "pass_rates": {
            "baseline": c.baseline_pass_rate,
            "candidate": c.candidate_pass_rate,
            "delta": c.pass_delta,
            "ci_low": c.pass_ci_low if c.n else None,
            "ci_high": c.pass_ci_high if c.n else None,
            "p_value": c.pass_p_value,
            "lost": c.discordant_b,
            "won": c.discordant_c,
        },
    }
