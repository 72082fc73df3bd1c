"""A finished run's summary, computed by the database: {n, calls, errors, mean_score,
pass_rate} per evaluator, per evaluator and risk, and per evaluator and cohort
dimension/value (the whole population included as all/all). `n` counts rows, `calls` results
(rows x repeats), `errors` the results whose evaluator could not reach a verdict (an LLM judge
without its key or unreachable); the rates are over the other calls, the verdicts (null when
there is none). `output_errors` counts the calls without an output (the endpoint did not
answer, or an upload carried nothing an evaluator reads): their results are fails, counted in
the rates. Cohort dimensions are read from the rows' cohort JSON, so
any dimension works without configuration. With repeats, each evaluator's flip rate (how often
two calls of the same row disagree, app.stats.planning.flip_rate) comes from its per-row pass
counts, which the database groups."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy import Float, and_, case, func, select, true
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import TableValuedAlias

from app.core.db import is_postgres
from app.models import (
    DatasetRow,
    EvalResult,
    RunOutput,
)
from app.stats.planning import flip_rate


def json_object_entries(session: Session, column: Any) -> TableValuedAlias:
    """(key, value) rows of a JSON object column, as a table joinable per row: json_each on
    SQLite, jsonb_each_text on PostgreSQL. Cohort values are stored as strings, so both
    dialects yield the same text values."""
    function = func.jsonb_each_text if is_postgres(session) else func.json_each
    return function(column).table_valued("key", "value", joins_implicitly=True)


def _rates() -> list[ColumnElement[Any]]:
    """AVG skips NULL: an error's score and pass are NULL here, so the rates are over
    verdicts."""
    return [
        func.count(func.distinct(EvalResult.key)).label("n"),
        func.count().label("calls"),
        func.count(case((EvalResult.error, 1))).label("errors"),
        sql_cast(func.avg(case((EvalResult.error, None), else_=EvalResult.score)), Float).label(
            "mean_score"
        ),
        sql_cast(
            func.avg(case((EvalResult.error, None), (EvalResult.passed, 1.0), else_=0.0)), Float
        ).label("pass_rate"),
    ]


def compute_summary(
    session: Session, project_id: int, run_id: int, version_id: int, repeats: int
) -> dict[str, Any]:
    """Mean score and pass rate per evaluator, per (evaluator, risk) and per (evaluator,
    cohort dimension, value), each a GROUP BY in the database; flip rates with repeats. Every
    statement names the run's project, and joins on it (one shard)."""
    joined = (
        select()
        .select_from(EvalResult)
        .join(
            DatasetRow,
            and_(
                DatasetRow.project_id == EvalResult.project_id,
                DatasetRow.version_id == version_id,
                DatasetRow.key == EvalResult.key,
            ),
        )
    )
    where = and_(EvalResult.project_id == project_id, EvalResult.run_id == run_id)
    by_evaluator = session.execute(
        select(EvalResult.evaluator, *_rates())
        .where(where)
        .group_by(EvalResult.evaluator)
        .order_by(EvalResult.evaluator)
    ).all()
    by_risk = session.execute(
        joined.add_columns(EvalResult.evaluator, DatasetRow.risk, *_rates())
        .where(where)
        .group_by(EvalResult.evaluator, DatasetRow.risk)
        .order_by(EvalResult.evaluator, DatasetRow.risk)
    ).all()
    entries = json_object_entries(session, DatasetRow.cohort)
    dimension, value = entries.c.key, entries.c.value
    by_cohort = session.execute(
        joined.join(entries, true())
        .add_columns(EvalResult.evaluator, dimension, value, *_rates())
        .where(where)
        .group_by(EvalResult.evaluator, dimension, value)
        .order_by(EvalResult.evaluator, dimension, value)
    ).all()
    errors = session.scalar(
        select(func.count())
        .select_from(RunOutput)
        .where(
            RunOutput.project_id == project_id,
            RunOutput.run_id == run_id,
            RunOutput.error.is_not(None),
        )
    )

    flips = _flip_rates(session, where) if repeats > 1 else {}

    def rates(row: Any) -> dict[str, Any]:
        return {
            "n": row.n,
            "calls": row.calls,
            "errors": row.errors,
            "mean_score": row.mean_score,
            "pass_rate": row.pass_rate,
        }

    def flip(evaluator: str) -> dict[str, Any]:
        estimate, standard_error = flips.get(evaluator, (None, None))
        return {"flip_rate": estimate, "flip_rate_se": standard_error}

    return {
        "repeats": repeats,
        "by_evaluator": [
            {"evaluator": row.evaluator, **rates(row), **flip(row.evaluator)}
            for row in by_evaluator
        ],
        "by_risk": [
            {"evaluator": row.evaluator, "risk": str(row.risk.value), **rates(row)}
            for row in by_risk
        ],
        "by_cohort": [
            {"evaluator": row.evaluator, "dimension": "all", "value": "all", **rates(row)}
            for row in by_evaluator
        ]
        + [
            {"evaluator": row.evaluator, "dimension": row.key, "value": row.value, **rates(row)}
            for row in by_cohort
        ],
        "output_errors": errors or 0,
    }


def _flip_rates(
    session: Session, of_run: ColumnElement[bool]
) -> dict[str, tuple[float | None, float | None]]:
    """(estimate, standard error) of each evaluator's flip rate, from its passes and calls per
    row (grouped in the database, errors left out: they are no verdict to flip); `of_run`
    picks the run's results."""
    per_row = session.execute(
        select(
            EvalResult.evaluator,
            func.sum(case((EvalResult.passed, 1), else_=0)),
            func.count(),
        )
        .where(of_run, EvalResult.error.is_(False))
        .group_by(EvalResult.evaluator, EvalResult.key)
        .order_by(EvalResult.evaluator)
    ).all()
    grouped: dict[str, tuple[list[int], list[int]]] = {}
    for evaluator, passes, calls in per_row:
        column = grouped.setdefault(evaluator, ([], []))
        column[0].append(int(passes))
        column[1].append(int(calls))
    out = {}
    for evaluator, (passes, calls) in grouped.items():
        rate = flip_rate(np.asarray(passes), np.asarray(calls))
        out[evaluator] = (rate.estimate, rate.standard_error)
    return out
