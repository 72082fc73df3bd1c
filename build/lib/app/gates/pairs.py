"""Fetching two runs' results paired by dataset row, as arrays.

Two queries (each run x evaluator's results aggregated in the database, and the rows' risk
and cohorts), paired by row key in numpy. Reading happens outside any write transaction:
on SQLite every transaction holds the single writer lock."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import ClauseElement, Connection, Text, and_, cast, func, select
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session

from app.models import (
    DatasetRow,
    EvalResult,
    EvaluationRun,
)
from app.models.datasets import Risk
from app.stats._arrays import BoolArray, FloatArray, IntArray

RISK_BY_RANK = (Risk.low, Risk.medium, Risk.high)


RISK_RANK = {risk: rank for rank, risk in enumerate(RISK_BY_RANK)}


# Cohort dimensions that would collide with the built-in cohorts of the same name.
RESERVED_DIMENSIONS = ("all", "risk")


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
