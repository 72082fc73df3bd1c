"""Read-only queries behind the dashboard pages, one small function per question.

Pages read the daily rollups (`daily_signals`), never the raw events, except the trace views.
Every function takes the project id and filters by it: a page never sees another tenant."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Date, Select, and_, bindparam, case, cast, func, or_, select, text
from sqlalchemy.orm import Session, aliased

from app.db import is_postgres
from app.errors import NotFound
from app.models import (
    Alert,
    ApiKey,
    ChampionHistory,
    Checkpoint,
    DailySignal,
    Dataset,
    DatasetRow,
    DatasetVersion,
    DriftRun,
    EvalResult,
    EvaluationRun,
    Event,
    Feedback,
    Gate,
    Model,
    Project,
    RunOutput,
    WebhookDelivery,
    WebhookEndpoint,
)
from app.models.drift import AlertStatus
from app.models.project import Role
from app.models.runs import RunStatus

SEED_SIGNALS = ("eval_fail_rate", "fallback_rate", "refusal_rate", "thumbs_down_rate")
ALL_SIGNALS = (*SEED_SIGNALS, "over_refusal_rate", "under_refusal_rate", "brier_score", "ece")


@dataclass(frozen=True)
class SessionKey:
    key_id: int
    project_id: int
    project_name: str
    name: str
    role: Role


def session_keys(session: Session, key_ids: Sequence[int]) -> list[SessionKey]:
    """The session's keys that still work, with their projects (for the project switcher)."""
    if not key_ids:
        return []
    rows = session.execute(
        select(ApiKey.id, ApiKey.project_id, Project.name, ApiKey.name, ApiKey.role)
        .join(Project, Project.id == ApiKey.project_id)
        .where(ApiKey.id.in_(key_ids), ApiKey.revoked_at.is_(None))
        .order_by(Project.name, ApiKey.id)
    ).all()
    return [SessionKey(*row) for row in rows]


# --- models and checkpoints -------------------------------------------------------------


@dataclass(frozen=True)
class ModelSummary:
    name: str
    champion_id: int | None
    champion_version: str | None
    champion_kind: str | None
    champion_since: datetime | None
    checkpoints: int


def model_summaries(session: Session, project_id: int) -> list[ModelSummary]:
    latest = (
        select(ChampionHistory.model_id, func.max(ChampionHistory.id).label("last_id"))
        .where(ChampionHistory.project_id == project_id)
        .group_by(ChampionHistory.model_id)
        .subquery()
    )
    counts = (
        select(Checkpoint.model_id, func.count().label("n"))
        .where(Checkpoint.project_id == project_id)
        .group_by(Checkpoint.model_id)
        .subquery()
    )
    entry = aliased(ChampionHistory)
    rows = session.execute(
        select(
            Model.name,
            Checkpoint.id,
            Checkpoint.version,
            Checkpoint.kind,
            entry.created_at,
            func.coalesce(counts.c.n, 0),
        )
        .select_from(Model)
        .outerjoin(latest, latest.c.model_id == Model.id)
        .outerjoin(entry, entry.id == latest.c.last_id)
        .outerjoin(Checkpoint, Checkpoint.id == entry.checkpoint_id)
        .outerjoin(counts, counts.c.model_id == Model.id)
        .where(Model.project_id == project_id)
        .order_by(Model.name)
    ).all()
    return [
        ModelSummary(name, cid, version, kind.value if kind else None, since, n)
        for name, cid, version, kind, since, n in rows
    ]


def model_names(session: Session, project_id: int) -> list[str]:
    return list(
        session.scalars(
            select(Model.name).where(Model.project_id == project_id).order_by(Model.name)
        )
    )


def model_checkpoints(session: Session, model_id: int) -> Sequence[Checkpoint]:
    return session.scalars(
        select(Checkpoint).where(Checkpoint.model_id == model_id).order_by(Checkpoint.id)
    ).all()


def checkpoint_in_project(session: Session, project_id: int, checkpoint_id: int) -> Checkpoint:
    checkpoint = session.get(Checkpoint, checkpoint_id)
    if checkpoint is None or checkpoint.project_id != project_id:
        raise NotFound(f"no checkpoint {checkpoint_id} in this project")
    return checkpoint


def model_by_id(session: Session, model_id: int) -> Model:
    model = session.get(Model, model_id)
    assert model is not None  # foreign keys guarantee it
    return model


def versions_by_id(session: Session, checkpoint_ids: set[int]) -> dict[int, str]:
    if not checkpoint_ids:
        return {}
    rows = session.execute(
        select(Checkpoint.id, Checkpoint.version).where(Checkpoint.id.in_(checkpoint_ids))
    ).all()
    return {cid: version for cid, version in rows}


def gate_verdicts(session: Session, gate_ids: set[int]) -> dict[int, str]:
    if not gate_ids:
        return {}
    rows = session.execute(select(Gate.id, Gate.verdict).where(Gate.id.in_(gate_ids))).all()
    return {gid: verdict.value for gid, verdict in rows}


def checkpoint_children(session: Session, checkpoint_id: int) -> Sequence[Checkpoint]:
    return session.scalars(
        select(Checkpoint).where(Checkpoint.parent_id == checkpoint_id).order_by(Checkpoint.id)
    ).all()


# --- runs ---------------------------------------------------------------------------------


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
    """Other succeeded runs on the same dataset (any version): the baselines /compare takes."""
    stmt = _runs_query(project_id).where(
        Dataset.id
        == select(DatasetVersion.dataset_id)
        .where(DatasetVersion.id == run.dataset_version_id)
        .scalar_subquery(),
        EvaluationRun.id != run.id,
        EvaluationRun.status == RunStatus.succeeded,
    )
    return [_run_summary(row) for row in session.execute(stmt.limit(limit))]


def run_in_project(session: Session, project_id: int, run_id: int) -> EvaluationRun:
    run = session.get(EvaluationRun, run_id)
    if run is None or run.project_id != project_id:
        raise NotFound(f"no run {run_id} in this project")
    return run


@dataclass(frozen=True)
class CohortCell:
    evaluator: str
    cohort: str
    mean_score: float
    pass_rate: float
    n: int


def run_cohort_dimensions(session: Session, version_id: int) -> list[str]:
    """The cohort dimensions a dataset version uses (distinct cohort objects are few)."""
    dimensions: set[str] = set()
    for cohort in session.scalars(
        select(DatasetRow.cohort).where(DatasetRow.version_id == version_id).distinct()
    ):
        dimensions.update((cohort or {}).keys())
    return sorted(dimensions)


def run_cohort_cells(session: Session, run: EvaluationRun) -> list[CohortCell]:
    """Mean score and pass rate per evaluator x cohort, grouped in SQL: the whole population,
    each risk level, and each value of each cohort dimension."""
    base = (
        select(EvalResult.evaluator)
        .join(
            DatasetRow,
            and_(DatasetRow.version_id == run.dataset_version_id, DatasetRow.key == EvalResult.key),
        )
        .where(EvalResult.run_id == run.id)
    )
    measures = (
        func.avg(EvalResult.score),
        func.avg(case((EvalResult.passed.is_(True), 1.0), else_=0.0)),
        func.count(),
    )
    cells: list[CohortCell] = []
    whole = base.add_columns(*measures).group_by(EvalResult.evaluator)
    for evaluator, mean, rate, n in session.execute(whole):
        cells.append(CohortCell(evaluator, "all", float(mean), float(rate), n))
    risk = base.add_columns(DatasetRow.risk, *measures).group_by(
        EvalResult.evaluator, DatasetRow.risk
    )
    for evaluator, level, mean, rate, n in session.execute(risk):
        cells.append(CohortCell(evaluator, f"risk={level.value}", float(mean), float(rate), n))
    for dimension in run_cohort_dimensions(session, run.dataset_version_id):
        value = DatasetRow.cohort[dimension].as_string()
        grouped = (
            base.add_columns(value, *measures)
            .where(value.is_not(None))
            .group_by(EvalResult.evaluator, value)
        )
        for evaluator, cohort_value, mean, rate, n in session.execute(grouped):
            cells.append(
                CohortCell(evaluator, f"{dimension}={cohort_value}", float(mean), float(rate), n)
            )
    return cells


@dataclass(frozen=True)
class ResultRow:
    key: str
    evaluator: str
    score: float
    passed: bool
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
            EvalResult.evaluator,
            EvalResult.score,
            EvalResult.passed,
            EvalResult.reason,
            DatasetRow.risk,
            DatasetRow.cohort,
            DatasetRow.input,
            DatasetRow.expected,
            RunOutput.output,
        )
        .join(
            DatasetRow,
            and_(DatasetRow.version_id == run.dataset_version_id, DatasetRow.key == EvalResult.key),
        )
        .outerjoin(RunOutput, and_(RunOutput.run_id == run.id, RunOutput.key == EvalResult.key))
        .where(EvalResult.run_id == run.id)
        .order_by(EvalResult.key, EvalResult.evaluator)
        .offset(offset)
        .limit(limit)
    )
    if failures_only:
        stmt = stmt.where(EvalResult.passed.is_(False))
    if evaluator:
        stmt = stmt.where(EvalResult.evaluator == evaluator)
    if cohort is not None:
        dimension, value = cohort
        if dimension == "risk":
            stmt = stmt.where(DatasetRow.risk == value)
        elif dimension != "all":
            stmt = stmt.where(DatasetRow.cohort[dimension].as_string() == value)
    return [
        ResultRow(k, e, s, p, r, risk.value, c or {}, i, x, o)
        for k, e, s, p, r, risk, c, i, x, o in session.execute(stmt)
    ]


# --- gates --------------------------------------------------------------------------------


def gate_in_project(session: Session, project_id: int, gate_id: int) -> Gate:
    gate = session.get(Gate, gate_id)
    if gate is None or gate.project_id != project_id:
        raise NotFound(f"no gate {gate_id} in this project")
    return gate


def gates_for_checkpoints(session: Session, checkpoint_ids: Sequence[int]) -> Sequence[Gate]:
    return session.scalars(
        select(Gate).where(Gate.checkpoint_id.in_(checkpoint_ids)).order_by(Gate.id.desc())
    ).all()


# --- signals, drift runs, alerts ------------------------------------------------------------


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


def champion_changes(
    session: Session, project_id: int, model: str | None, start: date, end: date
) -> list[tuple[str, datetime, str, str]]:
    """(model, when, action, version) of every champion change in the window."""
    stmt = (
        select(Model.name, ChampionHistory.created_at, ChampionHistory.action, Checkpoint.version)
        .join(Model, Model.id == ChampionHistory.model_id)
        .join(Checkpoint, Checkpoint.id == ChampionHistory.checkpoint_id)
        .where(
            ChampionHistory.project_id == project_id,
            ChampionHistory.created_at >= datetime.combine(start, time(), UTC),
            ChampionHistory.created_at < datetime.combine(end + timedelta(days=1), time(), UTC),
        )
        .order_by(ChampionHistory.id)
    )
    if model is not None:
        stmt = stmt.where(Model.name == model)
    return [
        (name, when, action.value, version) for name, when, action, version in session.execute(stmt)
    ]


def last_drift_run(session: Session, project_id: int) -> DriftRun | None:
    return session.scalar(
        select(DriftRun)
        .where(DriftRun.project_id == project_id)
        .order_by(DriftRun.id.desc())
        .limit(1)
    )


@dataclass(frozen=True)
class AlertRow:
    id: int
    status: str
    model: str
    checkpoint_id: int
    checkpoint_version: str
    signal: str
    dimension: str
    value: str
    day: date
    observed: float
    band_low: float | None
    band_high: float | None
    baseline: float | None
    volume: int
    opened_at: datetime


def _alerts_query(project_id: int) -> Select:
    return (
        select(
            Alert.id,
            Alert.status,
            Model.name,
            Alert.checkpoint_id,
            Checkpoint.version,
            Alert.signal,
            Alert.dimension,
            Alert.value,
            Alert.day,
            Alert.observed,
            Alert.band_low,
            Alert.band_high,
            Alert.baseline,
            Alert.volume,
            Alert.opened_at,
        )
        .join(Model, Model.id == Alert.model_id)
        .join(Checkpoint, Checkpoint.id == Alert.checkpoint_id)
        .where(Alert.project_id == project_id)
        .order_by(Alert.id.desc())
    )


def _alert_row(row: Any) -> AlertRow:
    values = list(row)
    values[1] = values[1].value
    return AlertRow(*values)


def alert_rows(
    session: Session,
    project_id: int,
    statuses: Sequence[AlertStatus],
    *,
    model: str | None = None,
    start: date | None = None,
    end: date | None = None,
    limit: int = 100,
) -> list[AlertRow]:
    stmt = _alerts_query(project_id).where(Alert.status.in_(statuses)).limit(limit)
    if model is not None:
        stmt = stmt.where(Model.name == model)
    if start is not None:
        stmt = stmt.where(Alert.day >= start)
    if end is not None:
        stmt = stmt.where(Alert.day <= end)
    return [_alert_row(row) for row in session.execute(stmt)]


def alert_counts(session: Session, project_id: int) -> dict[str, int]:
    rows = session.execute(
        select(Alert.status, func.count())
        .where(Alert.project_id == project_id)
        .group_by(Alert.status)
    ).all()
    counts = {status.value: 0 for status in AlertStatus}
    counts.update({status.value: n for status, n in rows})
    return counts


def alert_detail(session: Session, project_id: int, alert_id: int) -> tuple[AlertRow, Alert]:
    row = session.execute(_alerts_query(project_id).where(Alert.id == alert_id)).first()
    if row is None:
        raise NotFound(f"no alert {alert_id} in this project")
    alert = session.get(Alert, alert_id)
    assert alert is not None
    return _alert_row(row), alert


# --- traces (the only views that read raw events) ---------------------------------------------


@dataclass(frozen=True)
class EventFilter:
    model: str | None = None
    checkpoint_id: int | None = None
    route: str | None = None
    user_segment: str | None = None
    prompt_version: str | None = None
    flag: str | None = None
    start: datetime | None = None
    end: datetime | None = None
    trace_ids: tuple[str, ...] = ()


EVENT_FLAGS = {
    "eval_failed": Event.eval_passed.is_(False),
    "fallback": Event.fallback.is_(True),
    "refusal": Event.refusal.is_(True),
    "thumbs_down": Event.feedback == -1,
}


def events(
    session: Session, project_id: int, filters: EventFilter, before_id: int | None, limit: int
) -> tuple[list[tuple[Event, str, str]], int | None]:
    """Newest first, keyset-paged by id; returns (event, model, version) rows and the next id."""
    stmt = (
        select(Event, Model.name, Checkpoint.version)
        .join(Model, Model.id == Event.model_id)
        .join(Checkpoint, Checkpoint.id == Event.checkpoint_id)
        .where(Event.project_id == project_id)
        .order_by(Event.id.desc())
        .limit(limit + 1)
    )
    if filters.model:
        stmt = stmt.where(Model.name == filters.model)
    if filters.checkpoint_id:
        stmt = stmt.where(Event.checkpoint_id == filters.checkpoint_id)
    for column, wanted in (
        (Event.route, filters.route),
        (Event.user_segment, filters.user_segment),
        (Event.prompt_version, filters.prompt_version),
    ):
        if wanted:
            stmt = stmt.where(column == wanted)
    if filters.start is not None:
        stmt = stmt.where(Event.ts >= filters.start)
    if filters.end is not None:
        stmt = stmt.where(Event.ts <= filters.end)
    if before_id is not None:
        stmt = stmt.where(Event.id < before_id)
    if filters.trace_ids:
        stmt = stmt.where(Event.trace_id.in_(filters.trace_ids))
    if filters.flag in EVENT_FLAGS:
        stmt = stmt.where(EVENT_FLAGS[filters.flag])
    rows = [(event, model, version) for event, model, version in session.execute(stmt)]
    next_id = rows[limit - 1][0].id if len(rows) > limit else None
    return rows[:limit], next_id


def trace_events(
    session: Session, project_id: int, trace_id: str
) -> tuple[list[tuple[Event, str, str]], Feedback | None]:
    rows, _ = events(session, project_id, EventFilter(trace_ids=(trace_id,)), None, 500)
    feedback = session.scalar(
        select(Feedback).where(Feedback.project_id == project_id, Feedback.trace_id == trace_id)
    )
    return sorted(rows, key=lambda row: row[0].ts), feedback


# --- datasets ----------------------------------------------------------------------------------


def dataset_names(session: Session, project_id: int) -> list[str]:
    return list(
        session.scalars(
            select(Dataset.name).where(Dataset.project_id == project_id).order_by(Dataset.name)
        )
    )


def dataset_with_versions(
    session: Session, project_id: int, name: str
) -> tuple[Dataset, Sequence[DatasetVersion]]:
    dataset = session.scalar(
        select(Dataset).where(Dataset.project_id == project_id, Dataset.name == name)
    )
    if dataset is None:
        raise NotFound(f"no dataset named '{name}' in this project")
    versions = session.scalars(
        select(DatasetVersion)
        .where(DatasetVersion.dataset_id == dataset.id)
        .order_by(DatasetVersion.version.desc())
    ).all()
    return dataset, versions


def dataset_rows(
    session: Session, version_id: int, offset: int, limit: int
) -> Sequence[DatasetRow]:
    return session.scalars(
        select(DatasetRow)
        .where(DatasetRow.version_id == version_id)
        .order_by(DatasetRow.key)
        .offset(offset)
        .limit(limit)
    ).all()


@dataclass(frozen=True)
class VersionDiff:
    added: list[str]
    removed: list[str]
    changed: list[str]


def version_diff(session: Session, old_id: int, new_id: int) -> VersionDiff:
    """Keys added, removed and changed (row hash differs) between two versions, in SQL."""
    old = aliased(DatasetRow)
    new = aliased(DatasetRow)
    added = session.scalars(
        select(new.key)
        .outerjoin(old, and_(old.version_id == old_id, old.key == new.key))
        .where(new.version_id == new_id, old.id.is_(None))
        .order_by(new.key)
    ).all()
    removed = session.scalars(
        select(old.key)
        .outerjoin(new, and_(new.version_id == new_id, new.key == old.key))
        .where(old.version_id == old_id, new.id.is_(None))
        .order_by(old.key)
    ).all()
    changed = session.scalars(
        select(new.key)
        .join(old, and_(old.version_id == old_id, old.key == new.key))
        .where(new.version_id == new_id, old.row_hash != new.row_hash)
        .order_by(new.key)
    ).all()
    return VersionDiff(list(added), list(removed), list(changed))


# --- webhooks --------------------------------------------------------------------------------


def webhook_endpoints(session: Session, project_id: int) -> Sequence[WebhookEndpoint]:
    return session.scalars(
        select(WebhookEndpoint)
        .where(WebhookEndpoint.project_id == project_id)
        .order_by(WebhookEndpoint.id)
    ).all()


def webhook_deliveries(
    session: Session,
    project_id: int,
    endpoint_id: int | None,
    status: str | None,
    limit: int = 100,
) -> Sequence[WebhookDelivery]:
    stmt = (
        select(WebhookDelivery)
        .where(WebhookDelivery.project_id == project_id)
        .order_by(WebhookDelivery.id.desc())
        .limit(limit)
    )
    if endpoint_id is not None:
        stmt = stmt.where(WebhookDelivery.endpoint_id == endpoint_id)
    if status:
        stmt = stmt.where(WebhookDelivery.status == status)
    return session.scalars(stmt).all()


def deliveries_for_alert(
    session: Session, project_id: int, alert_id: int
) -> Sequence[WebhookDelivery]:
    """Deliveries whose message id names this alert (alert.opened.<id>, alert.resolved.<id>)."""
    return session.scalars(
        select(WebhookDelivery)
        .where(
            WebhookDelivery.project_id == project_id,
            or_(
                WebhookDelivery.msg_id == f"alert.opened.{alert_id}",
                WebhookDelivery.msg_id == f"alert.resolved.{alert_id}",
            ),
        )
        .order_by(WebhookDelivery.id)
    ).all()
