"""Typed reads of daily signals, drift runs and alerts, shared by the API and the pages.

Pages read the daily rollups (`daily_signals`), never the raw events."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Date, bindparam, case, cast, func, or_, select, text
from sqlalchemy.orm import Session

from app.core.db import is_postgres, today_utc
from app.core.pagination import paginate
from app.drift.signals import RATE_SIGNALS
from app.models import (
    Alert,
    DailySignal,
    DriftJudgement,
    DriftReference,
    DriftRun,
    Model,
)
from app.models.drift import AlertStatus


def cohort_judgements(
    model: Model, signal: str, dimension: str, value: str
) -> tuple[ColumnElement[bool], ...]:
    """The conditions selecting one cohort x signal's stored verdicts of `model` (every day,
    every checkpoint, every reference): the CUSUM, its onset and an alert's evidence are read
    per cohort x signal across checkpoints."""
    return (
        DriftJudgement.project_id == model.project_id,
        DriftJudgement.model_id == model.id,
        DriftJudgement.signal == signal,
        DriftJudgement.dimension == dimension,
        DriftJudgement.value == value,
    )


@dataclass(frozen=True)
class SignalPoint:
    model: str
    signal: str
    value: str
    day: date
    rate: float | None
    numerator: float
    denominator: int
    band_low: float | None = None
    band_high: float | None = None


def signal_series(
    session: Session,
    project_id: int,
    *,
    signals: Sequence[str],
    dimension: str,
    start: date,
    end: date,
    model: str | None = None,
    value: str | None = None,
    weekly: bool = False,
) -> list[SignalPoint]:
    """Rates per model x signal x cohort value and day (or week, for long ranges), summed over
    the day's checkpoints in SQL; a weekly point is dated by its Monday."""
    numerator = func.sum(DailySignal.numerator)
    denominator = func.sum(DailySignal.denominator)
    bucket = _week_start(session, DailySignal.day) if weekly else DailySignal.day
    stmt = (
        select(
            Model.name,
            DailySignal.signal,
            DailySignal.value,
            bucket,
            numerator,
            denominator,
        )
        .join(Model, Model.id == DailySignal.model_id)
        .where(
            DailySignal.project_id == project_id,
            DailySignal.signal.in_(signals),
            DailySignal.dimension == dimension,
            DailySignal.day >= start,
            DailySignal.day <= end,
        )
        .group_by(Model.name, DailySignal.signal, DailySignal.value, bucket)
        .order_by(Model.name, DailySignal.signal, DailySignal.value, bucket)
    )
    if model is not None:
        stmt = stmt.where(Model.name == model)
    if value is not None:
        stmt = stmt.where(DailySignal.value == value)
    points = []
    for name, signal, cohort_value, day, num, den in session.execute(stmt):
        rate = float(num) / den if den else None
        points.append(SignalPoint(name, signal, cohort_value, day, rate, float(num), int(den)))
    return points


@dataclass(frozen=True)
class CalibrationBin:
    """One equal-mass bin of one cohort value, its per-day sums added over the range."""

    value: str
    bin: int
    n: float
    sum_prob: float
    sum_label: float
    sum_prob_sq: float
    sum_prob_label: float


_BIN_FIELDS = ("n", "sum_prob", "sum_label", "sum_prob_sq", "sum_prob_label")


def calibration_bins(
    session: Session, project_id: int, *, model: str, dimension: str, start: date, end: date
) -> list[CalibrationBin]:
    """Per cohort value and bin index, the stored per-bin sums of the brier_score rows over
    [start, end], added in SQL (the JSON array in `extra` is expanded by the database).
    Rows without a `bins` array (written before it existed) contribute nothing."""
    if is_postgres(session):
        elements = (
            "jsonb_array_elements(CASE WHEN jsonb_typeof(ds.extra -> 'bins') = 'array' "
            "THEN ds.extra -> 'bins' ELSE '[]'::jsonb END) AS b"
        )
        field = "CAST(b.value ->> '{}' AS DOUBLE PRECISION)"
    else:
        elements = (
            "json_each(CASE WHEN json_type(ds.extra, '$.bins') = 'array' "
            "THEN json_extract(ds.extra, '$.bins') ELSE '[]' END) AS b"
        )
        field = "json_extract(b.value, '$.{}')"
    sums = ", ".join(f"SUM({field.format(name)}) AS {name}" for name in _BIN_FIELDS)
    bin_index = f"CAST({field.format('bin')} AS INTEGER)"
    sql = (
        f"SELECT ds.value, {bin_index} AS bin, {sums}\n"
        f"FROM daily_signals ds JOIN models m ON m.id = ds.model_id CROSS JOIN {elements}\n"
        "WHERE ds.project_id = :project_id AND m.name = :model AND ds.signal = 'brier_score'\n"
        "  AND ds.dimension = :dimension AND ds.day >= :start AND ds.day <= :end\n"
        f"GROUP BY ds.value, {bin_index} ORDER BY ds.value, bin"
    )
    stmt = text(sql).bindparams(bindparam("start", type_=Date()), bindparam("end", type_=Date()))
    params = {
        "project_id": project_id,
        "model": model,
        "dimension": dimension,
        "start": start,
        "end": end,
    }
    return [
        CalibrationBin(row.value, int(row.bin), *(float(row[i + 2]) for i in range(5)))
        for row in session.execute(stmt, params)
    ]


def _week_start(session: Session, day: Any) -> Any:
    """The Monday of a day's ISO week, in SQL on either database."""
    if is_postgres(session):
        return cast(func.date_trunc("week", day), Date)
    return func.date(day, "-6 days", "weekday 1", type_=Date)


def signal_dimensions(session: Session, project_id: int) -> list[str]:
    """Dimensions present in the rollups; `all` first."""
    found = set(
        session.scalars(
            select(DailySignal.dimension).where(DailySignal.project_id == project_id).distinct()
        )
    )
    return ["all", *sorted(found - {"all"})]


def last_drift_run(session: Session, project_id: int) -> DriftRun | None:
    return session.scalar(
        select(DriftRun)
        .where(DriftRun.project_id == project_id)
        .order_by(DriftRun.id.desc())
        .limit(1)
    )


MAX_RERUN_DAYS = 90
"""The longest backfill one drift run takes (DriftRunIn.backfill)."""


@dataclass(frozen=True)
class Rerun:
    """A `POST /api/v1/drift/run` body: `backfill` days ending with `date`."""

    date: date
    backfill: int


@dataclass(frozen=True)
class UnjudgedDay:
    """A day whose drift run failed and that no run has judged since: its verdicts were
    never given. `rerun`: the run that judges it and the days after it that its failure
    stopped (up to the next day judged, or yesterday), in order."""

    day: date
    error: str | None
    attempts: int
    last_attempt_at: datetime | None
    rerun: Rerun


def unjudged_days(session: Session, project_id: int, limit: int = 100) -> list[UnjudgedDay]:
    """The project's days whose latest drift run failed, newest first (at most `limit`).

    The last run shown on the overview says only how the newest run went: once the next
    day ran, a day whose run failed for good (the scheduler gives up after its retries, and
    never retries a day older than its catch-up window; a failed API or CLI run is not
    retried at all) was judged by nobody, and nothing said so."""
    failed = session.execute(
        select(
            DriftRun.day,
            func.count(),
            func.max(DriftRun.id),
            func.max(DriftRun.finished_at),
        )
        .where(DriftRun.project_id == project_id, DriftRun.status == "failed")
        .group_by(DriftRun.day)
    ).all()
    if not failed:
        return []
    succeeded = dict(
        session.execute(
            select(DriftRun.day, func.max(DriftRun.id))
            .where(DriftRun.project_id == project_id, DriftRun.status == "succeeded")
            .group_by(DriftRun.day)
        ).all()
    )
    lost = sorted(
        (row for row in failed if row[2] > succeeded.get(row[0], 0)),
        key=lambda row: row[0],
        reverse=True,
    )[:limit]
    errors = dict(
        session.execute(
            select(DriftRun.id, DriftRun.error).where(
                DriftRun.project_id == project_id, DriftRun.id.in_([row[2] for row in lost])
            )
        ).all()
    )
    judged = sorted(succeeded)
    yesterday = today_utc() - timedelta(days=1)
    out = []
    for day, attempts, last_id, last_at in lost:
        after = next((d for d in judged if d > day), None)
        through = max(day, after - timedelta(days=1) if after is not None else yesterday)
        through = min(through, day + timedelta(days=MAX_RERUN_DAYS - 1))
        backfill = (through - day).days + 1
        rerun = Rerun(through, backfill)
        out.append(UnjudgedDay(day, errors.get(last_id), attempts, last_at, rerun))
    return out


def alerts(
    session: Session,
    project_id: int,
    statuses: Sequence[AlertStatus],
    *,
    model: str | None = None,
    signal: str | None = None,
    dimension: str | None = None,
    start: date | None = None,
    end: date | None = None,
    limit: int = 100,
    quality_first: bool = False,
) -> Sequence[Alert]:
    """Newest first: the alerts of some statuses, of one model, signal and dimension if given,
    and alive in the day range if given (opened by its end, and open or last judged in it:
    an alert opened before the range and still open belongs to it). `quality_first`: the
    quality rates (eval-fail, refusal, ...) before latency, tokens, cost and calibration, and
    the whole population before cohorts, then newest first: one release can open dozens of
    token and cost alerts per cohort, which buried its headline regression on the overview."""
    order: list[ColumnElement[Any]] = [Alert.id.desc()]
    if quality_first:
        order = [
            case((Alert.signal.in_(tuple(RATE_SIGNALS)), 0), else_=1),
            case((Alert.dimension == "all", 0), else_=1),
            *order,
        ]
    stmt = (
        select(Alert)
        .join(Model, Model.id == Alert.model_id)
        .where(Alert.project_id == project_id, Alert.status.in_(statuses))
        .order_by(*order)
        .limit(limit)
    )
    if model is not None:
        stmt = stmt.where(Model.name == model)
    if signal is not None:
        stmt = stmt.where(Alert.signal == signal)
    if dimension is not None:
        stmt = stmt.where(Alert.dimension == dimension)
    if start is not None:
        stmt = stmt.where(or_(Alert.last_day >= start, Alert.status != AlertStatus.resolved))
    if end is not None:
        stmt = stmt.where(Alert.day <= end)
    return session.scalars(stmt).all()


def alert_counts(session: Session, project_id: int, model: str | None = None) -> dict[str, int]:
    """Alerts per status, of one model if given (the alerts page counts what it filters)."""
    stmt = select(Alert.status, func.count()).where(Alert.project_id == project_id)
    if model is not None:
        stmt = stmt.join(Model, Model.id == Alert.model_id).where(Model.name == model)
    rows = session.execute(stmt.group_by(Alert.status)).all()
    counts = {status.value: 0 for status in AlertStatus}
    counts.update({status.value: n for status, n in rows})
    return counts


def list_signals(
    session: Session,
    project_id: int,
    filters: dict[str, Any],
    cursor: str | None,
    limit: int,
) -> tuple[Sequence[DailySignal], str | None]:
    stmt = select(DailySignal).where(DailySignal.project_id == project_id)
    if filters.get("model") is not None:
        model_id = session.scalar(
            select(Model.id).where(Model.project_id == project_id, Model.name == filters["model"])
        )
        stmt = stmt.where(DailySignal.model_id == (model_id or -1))
    for column in ("signal", "dimension", "value", "checkpoint_id"):
        if filters.get(column) is not None:
            stmt = stmt.where(getattr(DailySignal, column) == filters[column])
    if filters.get("from") is not None:
        stmt = stmt.where(DailySignal.day >= filters["from"])
    if filters.get("to") is not None:
        stmt = stmt.where(DailySignal.day <= filters["to"])
    return paginate(session, stmt, DailySignal.id, cursor, limit)


@dataclass(frozen=True)
class JudgementPoint:
    """One cohort value's verdict of one day: its band, CUSUM and threshold (None: untested)."""

    value: str
    day: date
    center: float | None
    band_low: float | None
    band_high: float | None
    cusum: float
    cusum_h: float | None
    rules: int


def judgements(
    session: Session,
    project_id: int,
    *,
    model: str,
    signal: str,
    dimension: str,
    start: date,
    end: date,
) -> list[JudgementPoint]:
    """The stored verdicts of one model x signal x dimension over [start, end], by value, day."""
    rows = session.execute(
        select(
            DriftJudgement.value,
            DriftJudgement.day,
            DriftJudgement.center,
            DriftJudgement.band_low,
            DriftJudgement.band_high,
            DriftJudgement.cusum,
            DriftJudgement.cusum_lower,
            DriftJudgement.cusum_h,
            DriftJudgement.rules,
        )
        .join(Model, Model.id == DriftJudgement.model_id)
        .where(
            DriftJudgement.project_id == project_id,
            Model.name == model,
            DriftJudgement.signal == signal,
            DriftJudgement.dimension == dimension,
            DriftJudgement.day >= start,
            DriftJudgement.day <= end,
        )
        .order_by(DriftJudgement.value, DriftJudgement.day)
    ).all()
    return [
        JudgementPoint(
            r.value,
            r.day,
            r.center,
            r.band_low,
            r.band_high,
            max(float(r.cusum), float(r.cusum_lower)),
            r.cusum_h,
            int(r.rules),
        )
        for r in rows
    ]


def references(
    session: Session, project_id: int, model: str, start: date, end: date
) -> Sequence[DriftReference]:
    """The model's references whose window overlaps [start, end], or that are active."""
    return session.scalars(
        select(DriftReference)
        .join(Model, Model.id == DriftReference.model_id)
        .where(
            DriftReference.project_id == project_id,
            Model.name == model,
            (DriftReference.status == "active")
            | ((DriftReference.first_day <= end) & (DriftReference.last_day >= start)),
        )
        .order_by(DriftReference.version)
    ).all()
