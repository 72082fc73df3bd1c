"""The deploy gate: a candidate run against a baseline run, per evaluator x cohort.

The flow is fetch (two queries: each run x evaluator's results as arrays, the rows' risk and
cohorts; paired by row in numpy), compare (app.stats, vectorised over cohorts), decide
(non-inferiority per guarded cohort), store.
Reading and computing happen outside any write transaction, because on SQLite every
transaction holds the single writer lock.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import ValidationError
from sqlalchemy import ClauseElement, Connection, Text, and_, cast, func, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core import audit
from app.core.auth import Principal
from app.core.db import get_owned
from app.core.errors import Conflict, Unprocessable
from app.core.links import Links
from app.core.pagination import paginate
from app.gates.schemas import GateIn, GatePolicySpec
from app.models import (
    Checkpoint,
    DatasetRow,
    DatasetVersion,
    EvalResult,
    EvaluationRun,
    Gate,
    GatePolicy,
    Model,
)
from app.models.datasets import Risk
from app.models.gates import GateVerdict
from app.models.registry import CheckpointStatus
from app.models.runs import RunStatus
from app.registry import service as registry
from app.stats._arrays import BoolArray, FloatArray, IntArray
from app.stats.noninferiority import apply_gate, gate_verdict
from app.stats.paired import CohortComparison, CohortMeta, compare_cohorts
from app.stats.policy import GatePolicy as StatsPolicy
from app.webhooks import outbox

RISK_BY_RANK = (Risk.low, Risk.medium, Risk.high)
RISK_RANK = {risk: rank for rank, risk in enumerate(RISK_BY_RANK)}
# Cohort dimensions that would collide with the built-in cohorts of the same name.
RESERVED_DIMENSIONS = ("all", "risk")

Role = Literal["block", "warn", "report"]


# --- policies ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyState:
    model: Model
    stored: GatePolicy | None
    spec: GatePolicySpec


def _latest_policy(session: Session, model_id: int) -> GatePolicy | None:
    return session.scalar(
        select(GatePolicy)
        .where(GatePolicy.model_id == model_id)
        .order_by(GatePolicy.version.desc())
        .limit(1)
    )


def get_policy(session: Session, project_id: int, model_name: str) -> PolicyState:
    """The model's current policy; the built-in default (version None) until one is stored."""
    model = registry.get_model(session, project_id, model_name)
    stored = _latest_policy(session, model.id)
    spec = GatePolicySpec.model_validate(stored.policy) if stored else GatePolicySpec()
    return PolicyState(model, stored, spec)


def put_policy(
    session: Session, principal: Principal, model_name: str, spec: GatePolicySpec
) -> PolicyState:
    """Stores a new version; earlier versions stay, so every gate can name the one it used."""
    model = registry.get_model(session, principal.project_id, model_name)
    latest = _latest_policy(session, model.id)
    row = GatePolicy(
        project_id=principal.project_id,
        model_id=model.id,
        version=(latest.version if latest else 0) + 1,
        policy=spec.model_dump(mode="json"),
        actor=principal.actor,
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise Conflict("the gate policy was changed concurrently; retry") from exc
    audit.record(
        session,
        principal,
        "gate_policy.updated",
        "model",
        model.id,
        {"model": model.name, "version": row.version, "policy": row.policy},
    )
    session.commit()
    return PolicyState(model, row, spec)


def effective_policy(stored: GatePolicy | None, override: GatePolicySpec | None) -> GatePolicySpec:
    """The stored policy (or the default) with the request's explicitly given fields on top."""
    base = stored.policy if stored else GatePolicySpec().model_dump(mode="json")
    if override is None:
        return GatePolicySpec.model_validate(base)
    merged = {**base, **override.model_dump(mode="json", exclude_unset=True)}
    try:
        return GatePolicySpec.model_validate(merged)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise Unprocessable(f"policy: {first['msg']}", field="policy") from exc


def stats_policy(spec: GatePolicySpec) -> StatsPolicy:
    try:
        return StatsPolicy(
            metric=spec.metric,
            margin=spec.margin,
            alpha=spec.alpha,
            power=spec.power,
            min_effect=spec.min_effect,
            min_n=spec.min_rows,
            correction=spec.correction,
            n_resamples=spec.bootstrap_resamples,
            seed=spec.seed,
        )
    except ValueError as exc:
        raise Unprocessable(f"policy: {exc}", field="policy") from exc


# --- fetching the paired results -----------------------------------------------------------


@dataclass(frozen=True)
class EvaluatorPairs:
    """One evaluator's results on the rows both runs scored; `rows` index PairedResults.keys."""

    name: str
    rows: IntArray
    baseline_scores: FloatArray
    candidate_scores: FloatArray
    baseline_passed: BoolArray
    candidate_passed: BoolArray

    @property
    def identical(self) -> bool:
        return bool(
            np.array_equal(self.baseline_scores, self.candidate_scores)
            and np.array_equal(self.baseline_passed, self.candidate_passed)
        )


@dataclass(frozen=True)
class PairedResults:
    keys: list[str]
    risk_rank: IntArray
    dimensions: dict[str, list[str | None]]
    evaluators: list[EvaluatorPairs]
    notes: list[str] = field(default_factory=list)


def _cohort_label(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


@dataclass(frozen=True)
class RunResults:
    """One evaluator's results in one run, ordered by dataset row id."""

    row_ids: IntArray
    scores: FloatArray
    passed: BoolArray

    def at(self, picks: IntArray) -> RunResults:
        return RunResults(self.row_ids[picks], self.scores[picks], self.passed[picks])


def load_pairs(
    session: Session, candidate: EvaluationRun, baseline: EvaluationRun
) -> PairedResults:
    """Both runs' results as arrays per (run, evaluator) on the candidate version's rows (one
    query), paired by row in numpy, and the shared rows' risk and cohorts (a second query)."""
    connection = session.connection()
    results = _fetch_results(connection, candidate.dataset_version_id, (baseline.id, candidate.id))
    evaluators = {
        run.id: {name for run_id, name in results if run_id == run.id}
        for run in (baseline, candidate)
    }
    notes = [
        f"evaluators only in the {label} run, not compared: {', '.join(sorted(only))}"
        for label, only in (
            ("candidate", evaluators[candidate.id] - evaluators[baseline.id]),
            ("baseline", evaluators[baseline.id] - evaluators[candidate.id]),
        )
        if only
    ]
    matched: list[tuple[str, RunResults, RunResults]] = []
    for name in sorted(evaluators[candidate.id] & evaluators[baseline.id]):
        base, cand = results[(baseline.id, name)], results[(candidate.id, name)]
        _, in_base, in_cand = np.intersect1d(
            base.row_ids, cand.row_ids, assume_unique=True, return_indices=True
        )
        if len(in_base):
            matched.append((name, base.at(in_base), cand.at(in_cand)))
    no_rows = np.empty(0, np.int64)
    shared = np.unique(np.concatenate([no_rows, *(base.row_ids for _, base, _ in matched)]))
    keys, risk_rank, dimensions = _rows_context(connection, candidate.dataset_version_id, shared)
    for dimension in sorted(d for d in dimensions if d in RESERVED_DIMENSIONS):
        del dimensions[dimension]
        notes.append(f"cohort dimension '{dimension}' clashes with a built-in cohort; ignored")
    pairs = [
        EvaluatorPairs(
            name,
            np.searchsorted(shared, base.row_ids),
            base.scores,
            cand.scores,
            base.passed,
            cand.passed,
        )
        for name, base, cand in matched
    ]
    return PairedResults(keys, risk_rank, dimensions, pairs, notes)


def _rows_context(
    connection: Connection, version_id: int, row_ids: IntArray
) -> tuple[list[str], IntArray, dict[str, list[str | None]]]:
    """Key, risk rank and cohort labels of the version's rows `row_ids` (sorted), in that
    order. The cohorts come as JSON text and are decoded in one call, not one per row."""
    rows = _driver_rows(
        connection,
        select(DatasetRow.id, DatasetRow.key, DatasetRow.risk, cast(DatasetRow.cohort, Text))
        .where(DatasetRow.version_id == version_id)
        .order_by(DatasetRow.id),
    )
    all_ids = np.fromiter((row[0] for row in rows), np.int64, len(rows))
    kept = [rows[i] for i in np.searchsorted(all_ids, row_ids)]
    risk_rank = np.fromiter((RISK_RANK[Risk(row[2])] for row in kept), np.int64, len(kept))
    cohorts = json.loads(f"[{','.join(row[3] or 'null' for row in kept)}]")
    dimensions: dict[str, list[str | None]] = {}
    for i, cohort in enumerate(cohorts):
        for dimension, value in (cohort or {}).items():
            column = dimensions.get(dimension)
            if column is None:
                column = dimensions[dimension] = [None] * len(kept)
            column[i] = _cohort_label(value)
    return [row[1] for row in kept], risk_rank, dimensions


def _fetch_results(
    connection: Connection, version_id: int, run_ids: tuple[int, int]
) -> dict[tuple[int, str], RunResults]:
    """Every result of the runs on a row of the version, per (run id, evaluator). The cost of
    10^5 results is in building Python objects per result, so neither path does: PostgreSQL
    aggregates each (run, evaluator) into arrays, SQLite's rows come as the driver's tuples."""
    on_version = and_(DatasetRow.version_id == version_id, DatasetRow.key == EvalResult.key)
    if connection.dialect.name == "postgresql":
        aggregated = connection.execute(
            select(
                EvalResult.run_id,
                EvalResult.evaluator,
                func.array_agg(aggregate_order_by(DatasetRow.id, DatasetRow.id)),
                func.array_agg(aggregate_order_by(EvalResult.score, DatasetRow.id)),
                func.array_agg(aggregate_order_by(EvalResult.passed, DatasetRow.id)),
            )
            .join(DatasetRow, on_version)
            .where(EvalResult.run_id.in_(run_ids))
            .group_by(EvalResult.run_id, EvalResult.evaluator)
        )
        return {
            (run_id, name): RunResults(
                np.asarray(ids, np.int64),
                np.asarray(scores, np.float64),
                np.asarray(passed, np.bool_),
            )
            for run_id, name, ids, scores, passed in aggregated
        }
    rows = _driver_rows(
        connection,
        select(
            EvalResult.run_id,
            EvalResult.evaluator,
            DatasetRow.id,
            EvalResult.score,
            EvalResult.passed,
        )
        .join(DatasetRow, on_version)
        .where(EvalResult.run_id.in_(run_ids))
        .order_by(EvalResult.run_id, EvalResult.evaluator, DatasetRow.id),
    )
    if not rows:
        return {}
    run_column, name_column, ids, scores, passed = zip(*rows, strict=True)
    row_ids = np.asarray(ids, np.int64)
    score_values = np.asarray(scores, np.float64)
    passed_values = np.asarray(passed, np.bool_)
    grouped = {}
    start = 0
    for group, members in itertools.groupby(zip(run_column, name_column, strict=True)):
        end = start + sum(1 for _ in members)
        grouped[group] = RunResults(
            row_ids[start:end], score_values[start:end], passed_values[start:end]
        )
        start = end
    return grouped


def _driver_rows(connection: Connection, statement: ClauseElement) -> Sequence[Any]:
    """The statement's rows as the driver's plain tuples, without a SQLAlchemy Row and type
    processing each. Its parameters are inlined: they are integer ids of our own rows."""
    sql = statement.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True})
    cursor = connection.connection.cursor()
    try:
        cursor.execute(str(sql))
        return cursor.fetchall()
    finally:
        cursor.close()


# --- comparing and deciding ----------------------------------------------------------------


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


# --- the gate ------------------------------------------------------------------------------


def _get_run(session: Session, project_id: int, run_id: int, field_name: str) -> EvaluationRun:
    run = get_owned(session, EvaluationRun, project_id, run_id, "evaluation run", field_name)
    if run.status is not RunStatus.succeeded:
        raise Conflict(
            f"{field_name}: run {run_id} is '{run.status.value}'; only succeeded runs can be "
            "gated (wait for it to finish)",
            field=field_name,
        )
    return run


def _champion_run(
    session: Session, model: Model, candidate: EvaluationRun, version: DatasetVersion
) -> EvaluationRun:
    champion = registry.champion_of(session, model.id)
    if champion is None:
        raise Conflict(
            f"model '{model.name}' has no champion to compare with: promote a first champion "
            "or pass baseline_run_id",
            field="baseline_run_id",
        )
    if champion.id == candidate.checkpoint_id:
        raise Conflict(
            f"checkpoint {champion.id} is already the champion: pass baseline_run_id",
            field="baseline_run_id",
        )
    run = session.scalar(
        select(EvaluationRun)
        .where(
            EvaluationRun.checkpoint_id == champion.id,
            EvaluationRun.dataset_version_id == candidate.dataset_version_id,
            EvaluationRun.status == RunStatus.succeeded,
        )
        .order_by(EvaluationRun.id.desc())
        .limit(1)
    )
    if run is None:
        raise Conflict(
            f"the champion of '{model.name}' (checkpoint {champion.id}, version "
            f"'{champion.version}') has no succeeded run on dataset version {version.version}: "
            "evaluate the champion on it, or pass baseline_run_id",
            field="baseline_run_id",
        )
    return run


@dataclass(frozen=True)
class RunComparison:
    """Everything a gate would decide about two runs, before anything is stored."""

    model: Model
    checkpoint: Checkpoint
    candidate: EvaluationRun
    baseline: EvaluationRun
    spec: GatePolicySpec
    policy_version: int | None
    decision: Decision
    notes: list[str]
    shared_rows: int


def compare_runs(
    session: Session,
    project_id: int,
    candidate_run_id: int,
    baseline_run_id: int | None,
    policy: GatePolicySpec | None = None,
) -> RunComparison:
    """Compares and decides under the candidate model's policy, storing nothing: the gate
    stores this, and the dashboard's "compare any two runs" only shows it. Ends the session's
    read transaction (the statistics run without holding SQLite's lock)."""
    candidate = _get_run(session, project_id, candidate_run_id, "candidate_run_id")
    checkpoint = registry.get_checkpoint(session, project_id, candidate.checkpoint_id)
    model = session.get_one(Model, checkpoint.model_id)
    cand_version = session.get_one(DatasetVersion, candidate.dataset_version_id)
    if baseline_run_id is None:
        baseline = _champion_run(session, model, candidate, cand_version)
    else:
        baseline = _get_run(session, project_id, baseline_run_id, "baseline_run_id")
    if baseline.id == candidate.id:
        raise Unprocessable(
            "baseline_run_id: a run cannot be its own baseline", field="baseline_run_id"
        )
    base_version = session.get_one(DatasetVersion, baseline.dataset_version_id)
    if base_version.dataset_id != cand_version.dataset_id:
        raise Unprocessable(
            f"baseline_run_id: run {baseline.id} evaluated another dataset; "
            "a gate compares runs on the same dataset",
            field="baseline_run_id",
        )
    stored = _latest_policy(session, model.id)
    spec = effective_policy(stored, policy)
    paired = load_pairs(session, candidate, baseline)
    session.commit()  # ends the read transaction: the statistics run without holding a lock

    decision = decide(paired, spec)
    notes = list(decision.notes)
    if base_version.id != cand_version.id:
        notes.insert(
            0,
            f"dataset versions differ (candidate v{cand_version.version}, baseline "
            f"v{base_version.version}): only the {len(paired.keys)} keys both runs scored are "
            f"compared, with risk and cohorts from v{cand_version.version}",
        )
    if policy is not None:
        notes.append(
            "policy overridden in the request: " + ", ".join(sorted(policy.model_fields_set))
        )
    return RunComparison(
        model,
        checkpoint,
        candidate,
        baseline,
        spec,
        stored.version if stored else None,
        decision,
        notes,
        len(paired.keys),
    )


def create_gate(session: Session, principal: Principal, links: Links, body: GateIn) -> Gate:
    """Compares, decides, and stores the decision; a block queues a `gate.blocked` event."""
    compared = compare_runs(
        session, principal.project_id, body.candidate_run_id, body.baseline_run_id, body.policy
    )
    gate = Gate(
        project_id=principal.project_id,
        model_id=compared.model.id,
        checkpoint_id=compared.checkpoint.id,
        candidate_run_id=compared.candidate.id,
        baseline_run_id=compared.baseline.id,
        policy=compared.spec.model_dump(mode="json"),
        policy_version=compared.policy_version,
        verdict=compared.decision.verdict,
        reasons=compared.decision.reasons,
        comparisons=compared.decision.comparisons,
        notes={"messages": compared.notes, "shared_rows": compared.shared_rows},
        api_key_id=principal.key_id,
    )
    session.add(gate)
    session.flush()
    _record_outcome(session, principal, links, gate, compared.model, compared.checkpoint)
    session.commit()
    return gate


def _record_outcome(
    session: Session,
    principal: Principal,
    links: Links,
    gate: Gate,
    model: Model,
    checkpoint: Checkpoint,
) -> None:
    """Audit, the checkpoint's status, and on a block the `gate.blocked` event."""
    current = session.get_one(Checkpoint, checkpoint.id)
    if gate.verdict is GateVerdict.block and current.status in (
        CheckpointStatus.registered,
        CheckpointStatus.evaluated,
    ):
        current.status = CheckpointStatus.blocked
    elif gate.verdict is not GateVerdict.block and current.status is CheckpointStatus.blocked:
        current.status = CheckpointStatus.evaluated
    details = {
        "gate_id": gate.id,
        "model": model.name,
        "checkpoint_id": checkpoint.id,
        "version": checkpoint.version,
        "candidate_run_id": gate.candidate_run_id,
        "baseline_run_id": gate.baseline_run_id,
        "verdict": gate.verdict.value,
        "policy_version": gate.policy_version,
    }
    audit.record(session, principal, "gate.decided", "gate", gate.id, details)
    if gate.verdict is GateVerdict.block:
        url = links.page("gates", gate.id)
        blocking = [r for r in gate.reasons if r["severity"] == "block"]
        outbox.emit(
            session,
            principal.project_id,
            "gate.blocked",
            f"gate.{gate.id}.blocked",
            {**details, "reasons": blocking, "url": url},
        )


def get_gate(session: Session, project_id: int, gate_id: int) -> Gate:
    return get_owned(session, Gate, project_id, gate_id, "gate")


def list_gates(
    session: Session, project_id: int, checkpoint_id: int | None, cursor: str | None, limit: int
) -> tuple[Sequence[Gate], str | None]:
    stmt = select(Gate).where(Gate.project_id == project_id)
    if checkpoint_id is not None:
        stmt = stmt.where(Gate.checkpoint_id == checkpoint_id)
    return paginate(session, stmt, Gate.id, cursor, limit)
