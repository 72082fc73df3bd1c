"""Typed reads of evaluation runs and their results, shared by the API and the pages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, select
from sqlalchemy.orm import Session

from app.core.errors import NotFound
from app.models import (
    Checkpoint,
    Dataset,
    DatasetRow,
    DatasetVersion,
    EvalResult,
    EvaluationRun,
    RunOutput,
)
from app.models.runs import RunStatus


@dataclass(frozen=True)
class RunSummary:
    id: int
    checkpoint_id: int
    checkpoint_version: str
    dataset: str
    dataset_version: int
    status: str
    progress_done: int
    progress_total: int
    created_at: datetime


def _runs_query(project_id: int) -> Select:
    return (
        select(
            EvaluationRun.id,
            EvaluationRun.checkpoint_id,
            Checkpoint.version,
            Dataset.name,
            DatasetVersion.version,
            EvaluationRun.status,
            EvaluationRun.progress_done,
            EvaluationRun.progress_total,
            EvaluationRun.created_at,
        )
        .join(Checkpoint, Checkpoint.id == EvaluationRun.checkpoint_id)
        .join(DatasetVersion, DatasetVersion.id == EvaluationRun.dataset_version_id)
        .join(Dataset, Dataset.id == DatasetVersion.dataset_id)
        .where(EvaluationRun.project_id == project_id)
        .order_by(EvaluationRun.id.desc())
    )


def _run_summary(row: Any) -> RunSummary:
    rid, cid, version, dataset, dversion, status, done, total, created = row
    return RunSummary(rid, cid, version, dataset, dversion, status.value, done, total, created)


def runs_for_checkpoints(
    session: Session, project_id: int, checkpoint_ids: Sequence[int], limit: int = 50
) -> list[RunSummary]:
    stmt = _runs_query(project_id).where(EvaluationRun.checkpoint_id.in_(checkpoint_ids))
    return [_run_summary(row) for row in session.execute(stmt.limit(limit))]


def run_summary(session: Session, project_id: int, run_id: int) -> RunSummary:
    row = session.execute(_runs_query(project_id).where(EvaluationRun.id == run_id)).first()
    if row is None:
        raise NotFound(f"no run {run_id} in this project")
    return _run_summary(row)


def comparable_runs(
    session: Session, project_id: int, run: EvaluationRun, limit: int = 50
) -> list[RunSummary]:
    """Other checkpoints' succeeded runs on the same dataset (any version): the baselines
    /compare takes (a gate compares two checkpoints, each pooled over its runs)."""
    stmt = _runs_query(project_id).where(
        Dataset.id
        == select(DatasetVersion.dataset_id)
        .where(DatasetVersion.id == run.dataset_version_id)
        .scalar_subquery(),
        EvaluationRun.checkpoint_id != run.checkpoint_id,
        EvaluationRun.status == RunStatus.succeeded,
    )
    return [_run_summary(row) for row in session.execute(stmt.limit(limit))]


def _row_of_result(run: EvaluationRun) -> ColumnElement[bool]:
    """Joins a result of `run` to its dataset row: same project (the distribution column),
    the run's version, same key."""
    return and_(
        DatasetRow.project_id == EvalResult.project_id,
        DatasetRow.version_id == run.dataset_version_id,
        DatasetRow.key == EvalResult.key,
    )


@dataclass(frozen=True)
class ResultRow:
    key: str
    repeat: int
    evaluator: str
    score: float
    passed: bool
    error: bool  # the evaluator reached no verdict: neither a pass nor a failure
    reason: str | None
    risk: str
    cohort: dict[str, Any]
    input: Any
    expected: Any
    output: Any


def run_result_rows(
    session: Session,
    run: EvaluationRun,
    cohort: tuple[str, str] | None,
    evaluator: str | None,
    failures_only: bool,
    offset: int,
    limit: int,
) -> list[ResultRow]:
    stmt = (
        select(
            EvalResult.key,
            EvalResult.repeat,
            EvalResult.evaluator,
            EvalResult.score,
            EvalResult.passed,
            EvalResult.error,
            EvalResult.reason,
            DatasetRow.risk,
            DatasetRow.cohort,
            DatasetRow.input,
            DatasetRow.expected,
            RunOutput.output,
        )
        .join(DatasetRow, _row_of_result(run))
        .outerjoin(
            RunOutput,
            and_(
                RunOutput.project_id == EvalResult.project_id,
                RunOutput.run_id == run.id,
                RunOutput.key == EvalResult.key,
                RunOutput.repeat == EvalResult.repeat,
            ),
        )
        .where(EvalResult.project_id == run.project_id, EvalResult.run_id == run.id)
        .order_by(EvalResult.key, EvalResult.repeat, EvalResult.evaluator)
        .offset(offset)
        .limit(limit)
    )
    if failures_only:
        stmt = stmt.where(EvalResult.passed.is_(False), EvalResult.error.is_(False))
    if evaluator:
        stmt = stmt.where(EvalResult.evaluator == evaluator)
    if cohort is not None:
        dimension, value = cohort
        if dimension == "risk":
            stmt = stmt.where(DatasetRow.risk == value)
        elif dimension != "all":
            stmt = stmt.where(DatasetRow.cohort[dimension].as_string() == value)
    return [
        ResultRow(k, rep, e, s, p, err, r, risk.value, c or {}, i, x, o)
        for k, rep, e, s, p, err, r, risk, c, i, x, o in session.execute(stmt)
    ]
