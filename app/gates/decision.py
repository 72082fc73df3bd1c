"""Deciding a gate from pooled, paired results: which cohorts are guarded (declared risk),
the three-way decision per guarded comparison and the verdict (app.stats.gate.decide_gate),
and the comparisons and reasons a person reads."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.core.errors import Unprocessable
from app.gates.pairs import EvaluatorPairs, PairedResults
from app.gates.schemas import GatePolicySpec
from app.models.gates import GateVerdict
from app.stats.cohorts import CohortSpec, build_cohorts
from app.stats.gate import ComparisonRecord, EvaluatorOutcomes, UnjudgedRows, decide_gate


@dataclass(frozen=True)
class Decision:
    verdict: GateVerdict
    reasons: list[dict[str, Any]]
    comparisons: list[dict[str, Any]]
    notes: list[str]
    alpha: float
    attempt: int
    previously_blocked: bool
    guarded_comparisons: int


def declared_risk(
    version_risk: Mapping[str, Mapping[str, str]], spec: GatePolicySpec
) -> dict[str, dict[str, str]]:
    """The dataset version's declared cohort risk with the policy's on top: the gate owner's
    statement wins for a cohort both declare."""
    merged = {dimension: dict(values) for dimension, values in version_risk.items()}
    for dimension, values in spec.cohort_risk.items():
        merged.setdefault(dimension, {}).update({v: r.value for v, r in values.items()})
    return merged


def decide(
    paired: PairedResults,
    spec: GatePolicySpec,
    version_risk: Mapping[str, Mapping[str, str]],
    *,
    attempt: int,
    previously_blocked: bool,
) -> Decision:
    """Every evaluator in every cohort, decided as docs/statistics.md §6 says: the guarded
    family shares one error budget, every other cohort can only warn, the verdict blocks on
    any guarded block or broken floor, passes when every guarded comparison passes."""
    notes = list(paired.notes)
    if not any(pairs.rows.size for pairs in paired.evaluators if not pairs.candidate_only):
        why = f" ({'; '.join(notes)})" if notes else ""
        raise Unprocessable(
            f"the two runs share no scored (key, evaluator) pair to compare{why}",
            field="baseline_run_id",
        )
    declared = declared_risk(version_risk, spec)
    blocking = [risk.value for risk in spec.block_risks]
    unpaired = _unpaired_guarded(paired, declared, blocking)
    compared_without_rows = {(cohort.dimension, cohort.value) for cohort in unpaired}
    for dimension, values in sorted(declared.items()):
        labels = set(paired.dimensions.get(dimension, ()))
        for value in sorted(set(values) - labels):
            if (dimension, value) in compared_without_rows:
                continue  # inconclusive, not merely noted
            notes.append(
                f"declared cohort {dimension}={value} ({values[value]} risk) has no rows both "
                "sides scored: it is not compared"
            )
    cohorts, membership = build_cohorts(
        paired.dimensions,
        paired.risks,
        block_risks=blocking,
        declared_risk=declared,
        guard_population=spec.guard_population,
    )
    if unpaired:
        cohorts = [*cohorts, *unpaired]
        empty = np.zeros((len(unpaired), membership.shape[1]), dtype=np.bool_)
        membership = np.vstack([membership, empty])
    notes += [
        f"evaluator '{pairs.name}' has a floor ({floor_of(spec, pairs.name):g}) but only the "
        "candidate's runs ran it: its floor is tested on the candidate's rows, with no margin "
        "comparison (evaluate the baseline's checkpoint with it to compare)"
        for pairs in paired.evaluators
        if pairs.candidate_only
    ]
    try:
        decided = decide_gate(
            [_outcomes(pairs, spec) for pairs in paired.evaluators],
            membership,
            cohorts,
            spec.decision_policy(),
            attempt=attempt,
            previously_blocked=previously_blocked,
        )
    except ValueError as exc:
        raise Unprocessable(f"policy: {exc}", field="policy") from exc
    retired = spec.retired_fields_set()
    if retired:
        notes.append(f"retired policy fields, ignored: {', '.join(retired)}")
    return Decision(
        GateVerdict(decided.verdict),
        [{k: v for k, v in reason.items() if k != "cohort_index"} for reason in decided.reasons],
        [_comparison(record, spec) for record in decided.records],
        notes + decided.notes,
        decided.alpha,
        decided.attempt,
        previously_blocked,
        decided.guarded_comparisons,
    )


def _unpaired_guarded(
    paired: PairedResults, declared: Mapping[str, Mapping[str, str]], blocking: Sequence[str]
) -> list[CohortSpec]:
    """Guarded cohorts the candidate's version has rows of but neither side scored in common
    (a baseline run on an older version never saw them): each is compared with no rows, so
    it is inconclusive and the gate cannot pass on the rows it did compare. The guarded
    family is what the candidate's version and the policy declare, never what happens to
    be shared (docs/statistics.md §6.1)."""
    specs = [
        CohortSpec(f"risk={level}", guarded=True, risk=level, dimension="risk", value=level)
        for level in blocking
        if level in paired.unpaired_risks
    ]
    for dimension, values in sorted(paired.unpaired_cohorts.items()):
        levels = declared.get(dimension, {})
        specs.extend(
            CohortSpec(
                f"{dimension}={value}",
                guarded=True,
                risk=levels[value],
                dimension=dimension,
                value=value,
            )
            for value in sorted(values)
            if levels.get(value) in blocking
        )
    return specs


def floor_of(spec: GatePolicySpec, evaluator: str) -> float | None:
    """The policy's floor for an evaluator (its own, else the policy's), if any: the service
    keeps the rows of an evaluator only the candidate ran when one applies, for its floor
    test (a floor is a statement about the candidate's level, and leaving the evaluator out
    would pass it unseen)."""
    return spec.floors.get(evaluator, spec.floor)


def _outcomes(pairs: EvaluatorPairs, spec: GatePolicySpec) -> EvaluatorOutcomes:
    """Per-row means over calls of the guarded metric (scores lie in [0, 1] already), the
    same with each side's calls without a verdict at their worst, and the rows judged on one
    side only: a pass must survive both (docs/statistics.md §7.6)."""
    by_pass = spec.metric == "pass_rate"
    one_sided = pairs.one_sided
    candidate = pairs.candidate_pass_rate if by_pass else pairs.candidate_score
    baseline = (
        candidate
        if pairs.candidate_only
        else (pairs.baseline_pass_rate if by_pass else pairs.baseline_score)
    )
    base_calls = np.ones(candidate.size, np.int64) if pairs.candidate_only else pairs.baseline_calls
    worst_base, worst_cand = None, None
    if pairs.baseline_missing.any() or pairs.candidate_missing.any():
        # A call without a verdict at its worst: the candidate's a fail (score 0), the
        # baseline's a pass (score 1), among all the row's calls.
        missing_base, missing_cand = pairs.baseline_missing, pairs.candidate_missing
        worst_base = (baseline * base_calls + missing_base) / (base_calls + missing_base)
        cand_calls = pairs.candidate_calls
        worst_cand = candidate * cand_calls / (cand_calls + missing_cand)
    return EvaluatorOutcomes(
        pairs.name,
        baseline,
        candidate,
        base_calls,
        pairs.candidate_calls,
        rows=pairs.rows,
        unjudged=UnjudgedRows(
            one_sided.rows,
            one_sided.baseline_pass_rate if by_pass else one_sided.baseline_score,
            one_sided.candidate_pass_rate if by_pass else one_sided.candidate_score,
        ),
        candidate_only=pairs.candidate_only,
        baseline_worst=worst_base,
        candidate_worst=worst_cand,
    )


def _comparison(record: ComparisonRecord, spec: GatePolicySpec) -> dict[str, Any]:
    """A record in the API's shape: the record's fields, the cohort as {dimension, value},
    and the names clients know (ci_low/ci_high are the one-sided bounds, p_value the block
    test's p)."""
    fields = dataclasses.asdict(record)
    del fields["cohort"], fields["cohort_index"]
    return {
        **fields,
        "cohort": {"dimension": record.dimension, "value": record.value},
        "role": "block" if record.guarded else "warn",
        "metric": spec.metric,
        "ci_low": record.lower_bound,
        "ci_high": record.upper_bound,
        "p_value": record.p_block,
        "p_adjusted": record.p_block_adjusted,
        "regressed": record.status == "block",
        "below_floor": record.floor_status == "broken",
        "underpowered": record.required_n is not None and record.n < record.required_n,
    }
