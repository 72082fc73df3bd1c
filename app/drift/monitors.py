"""Monitors: which band each daily signal must stay inside, and the day's verdicts.

Band types
- fixed: {"type": "fixed", "low": x?, "high": y?}: any signal, bounds on the rate itself.
- baseline: {"type": "baseline", "window_days": 14, "alpha": 0.001, "min_days": 3,
  "source": "champion" | "own"}: binomial rate signals only. The baseline rate comes from the
  last `window_days` days with data (incident days excluded) of the known-good checkpoint; the
  band is the exact binomial range at the day's volume (app/stats/rates), so a 12-request
  cohort gets a band too wide to page anyone while a large cohort's real shift leaves it.
  `alpha` is per model and day: it is split (Bonferroni) over the cohorts judged that day.

The known-good checkpoint ("champion" source): the current champion once it has a full window
of its own history; before that (it is new) the checkpoint it replaced, i.e. the registry's
rollback target. "own" uses the judged checkpoint's own history.

The judged checkpoint of a day is the one that served most events that day. A monitor with a
dimension (and value) overrides the model-wide one for that cohort; the most specific wins."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np
from sqlalchemy import func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core import audit
from app.core.auth import Principal
from app.core.db import get_owned, is_postgres
from app.core.errors import Conflict, Unprocessable
from app.core.pagination import paginate
from app.drift.schemas import IncidentDayIn, MonitorIn
from app.drift.signals import ALL_SIGNALS, DEFAULT_SIGNALS, RATE_SIGNALS, SignalRow
from app.models import ChampionHistory, DailySignal, IncidentDay, Model, Monitor
from app.registry.service import get_model, rollback_target_id
from app.stats.rates import rate_band, rate_outside_band, smoothed_rate

DEFAULT_BAND: dict[str, Any] = {
    "type": "baseline",
    "window_days": 14,
    "alpha": 0.001,
    "min_days": 3,
    "source": "champion",
}

CohortKey = tuple[str, str, str]  # (signal, dimension, value)


@dataclass(frozen=True)
class Verdict:
    """One monitor's judgement of one signal row; `outside` is None when the row was not
    judged (too little volume, or no baseline yet)."""

    monitor: Monitor
    row: SignalRow
    outside: bool | None
    low: float | None
    high: float | None
    baseline: float | None


@dataclass(frozen=True)
class DayJudgement:
    verdicts: list[Verdict]
    # Cohorts that had data the day, whether judged or not: the rest had no data.
    seen: set[CohortKey]


def ensure_defaults(session: Session, project_id: int, model_id: int) -> None:
    """Every model gets the four seed monitors without configuration (created on first use).

    Any process may get here first: the insert skips what the unique (model, signal, cohort)
    index says exists, so concurrent callers never create a second set."""
    existing = set(
        session.scalars(
            select(Monitor.signal).where(Monitor.model_id == model_id, Monitor.dimension.is_(None))
        ).all()
    )
    missing = [signal for signal in DEFAULT_SIGNALS if signal not in existing]
    if not missing:
        return
    dialect_insert = postgresql.insert if is_postgres(session) else sqlite.insert
    stmt = dialect_insert(Monitor).on_conflict_do_nothing(
        index_elements=[
            Monitor.model_id,
            Monitor.signal,
            text("coalesce(dimension, '')"),
            text("coalesce(value, '')"),
        ]
    )
    rows = [
        {
            "project_id": project_id,
            "model_id": model_id,
            "signal": signal,
            "band": dict(DEFAULT_BAND),
            "is_default": True,
        }
        for signal in missing
    ]
    session.execute(stmt, rows)


def list_monitors(session: Session, principal: Principal, model_name: str | None) -> list[Monitor]:
    """All monitors of the project (or of one model), defaults created first."""
    stmt = select(Monitor).where(Monitor.project_id == principal.project_id)
    models = session.scalars(select(Model).where(Model.project_id == principal.project_id)).all()
    if model_name is not None:
        models = [get_model(session, principal.project_id, model_name)]
        stmt = stmt.where(Monitor.model_id == models[0].id)
    for model in models:
        ensure_defaults(session, principal.project_id, model.id)
    session.commit()
    return list(session.scalars(stmt.order_by(Monitor.id)).all())


def _validate(body: MonitorIn) -> None:
    if body.signal not in ALL_SIGNALS:
        raise Unprocessable(f"signal: one of {', '.join(ALL_SIGNALS)}", field="signal")
    if body.band.type == "baseline" and body.signal not in RATE_SIGNALS:
        raise Unprocessable(
            f"band: a baseline band needs a rate signal; use a fixed band for '{body.signal}'",
            field="band",
        )
    if body.value is not None and body.dimension is None:
        raise Unprocessable("dimension: required when value is given", field="dimension")


def _same_key(session: Session, model_id: int, body: MonitorIn) -> Monitor | None:
    return session.scalar(
        select(Monitor)
        .where(
            Monitor.model_id == model_id,
            Monitor.signal == body.signal,
            Monitor.dimension.is_(None)
            if body.dimension is None
            else Monitor.dimension == body.dimension,
            Monitor.value.is_(None) if body.value is None else Monitor.value == body.value,
        )
        .order_by(Monitor.id.desc())
        .limit(1)
    )


def save_monitor(
    session: Session, principal: Principal, body: MonitorIn, replace: bool
) -> tuple[Monitor, bool]:
    """POST creates (409 when the (model, signal, cohort) already has one); PUT replaces the
    one with that key (a default becomes a configured monitor) or creates it. -> (row, created)"""
    _validate(body)
    model = get_model(session, principal.project_id, body.model)
    ensure_defaults(session, principal.project_id, model.id)
    monitor = _same_key(session, model.id, body)
    if monitor is not None and not replace:
        raise Conflict(
            f"monitor {monitor.id} already covers this signal and cohort; PUT to replace it",
            monitor_id=monitor.id,
        )
    created = monitor is None
    if monitor is None:
        monitor = Monitor(project_id=principal.project_id, model_id=model.id)
        session.add(monitor)
    monitor.signal = body.signal
    monitor.dimension = body.dimension
    monitor.value = body.value
    monitor.band = body.band.model_dump(exclude_none=True)
    monitor.min_volume = body.min_volume
    monitor.cooldown_hours = body.cooldown_hours
    monitor.resolve_after_days = body.resolve_after_days
    monitor.enabled = body.enabled
    monitor.is_default = False
    try:
        session.flush()
    except IntegrityError:  # another request saved this (model, signal, cohort) meanwhile
        session.rollback()
        raise Conflict(
            "another request saved a monitor for this signal and cohort at the same time; "
            "retry (PUT replaces it)"
        ) from None
    audit.record(
        session,
        principal,
        "monitor.created" if created else "monitor.replaced",
        "monitor",
        monitor.id,
        body.model_dump(mode="json"),
    )
    session.commit()
    return monitor, created


def get_monitor(session: Session, project_id: int, monitor_id: int) -> Monitor:
    return get_owned(session, Monitor, project_id, monitor_id, "monitor")


def _pick(monitors: Sequence[Monitor], signal: str, dimension: str, value: str) -> Monitor | None:
    """The most specific enabled monitor for a cohort: (dimension, value) > dimension > all."""
    best: tuple[int, int, Monitor] | None = None
    for monitor in monitors:
        if not monitor.enabled or monitor.signal != signal:
            continue
        if monitor.dimension is not None and monitor.dimension != dimension:
            continue
        if monitor.value is not None and monitor.value != value:
            continue
        rank = (monitor.dimension is not None) + (monitor.value is not None)
        if best is None or (rank, monitor.id) > best[:2]:
            best = (rank, monitor.id, monitor)
    return best[2] if best else None


def _baseline_days(
    session: Session, model: Model, checkpoint_id: int, day: date, window: int
) -> list[date]:
    """The checkpoint's last `window` days with data before `day`, incident days excluded."""
    incidents = select(IncidentDay.day).where(
        IncidentDay.project_id == model.project_id, IncidentDay.model_id == model.id
    )
    return list(
        session.scalars(
            select(DailySignal.day)
            .where(
                DailySignal.project_id == model.project_id,
                DailySignal.checkpoint_id == checkpoint_id,
                DailySignal.day < day,
                DailySignal.dimension == "all",
                DailySignal.day.not_in(incidents),
            )
            .distinct()
            .order_by(DailySignal.day.desc())
            .limit(window)
        ).all()
    )


def _baseline_checkpoint(
    session: Session, model: Model, served: int, day: date, band: dict[str, Any]
) -> tuple[int, list[date]] | None:
    window, min_days = int(band["window_days"]), int(band["min_days"])
    candidates: list[tuple[int, int]] = []  # (checkpoint, days of history it needs)
    if band.get("source") != "own":
        history = session.scalars(
            select(ChampionHistory)
            .where(
                ChampionHistory.project_id == model.project_id, ChampionHistory.model_id == model.id
            )
            .order_by(ChampionHistory.id)
        ).all()
        if history:
            current = history[-1].checkpoint_id
            candidates.append((current, window))
            target = rollback_target_id(history)
            if target is not None:
                candidates.append((target, min_days))
            candidates.append((current, min_days))
    candidates.append((served, min_days))
    for checkpoint_id, needed in candidates:
        days = _baseline_days(session, model, checkpoint_id, day, window)
        if len(days) >= needed:
            return checkpoint_id, days
    return None


def _baseline_sums(
    session: Session, checkpoint_id: int, days: list[date]
) -> dict[CohortKey, tuple[float, int]]:
    rows = session.execute(
        select(
            DailySignal.signal,
            DailySignal.dimension,
            DailySignal.value,
            func.sum(DailySignal.numerator),
            func.sum(DailySignal.denominator),
        )
        .where(DailySignal.checkpoint_id == checkpoint_id, DailySignal.day.in_(days))
        .group_by(DailySignal.signal, DailySignal.dimension, DailySignal.value)
    ).all()
    return {(r[0], r[1], r[2]): (float(r[3]), int(r[4])) for r in rows}


def judge_day(session: Session, model: Model, day: date, rows: Sequence[SignalRow]) -> DayJudgement:
    """Each of the served checkpoint's rows against the monitor that covers it."""
    ensure_defaults(session, model.project_id, model.id)
    volumes = {r.checkpoint_id: r.denominator for r in rows if r.dimension == "all"}
    if not rows:
        return DayJudgement([], set())
    served = max(volumes or {rows[0].checkpoint_id: 0}, key=lambda c: (volumes.get(c, 0), c))
    served_rows = [r for r in rows if r.checkpoint_id == served]
    monitors = session.scalars(select(Monitor).where(Monitor.model_id == model.id)).all()
    picked = [
        (monitor, row)
        for row in served_rows
        if (monitor := _pick(monitors, row.signal, row.dimension, row.value)) is not None
    ]
    seen = {(r.signal, r.dimension, r.value) for r in served_rows}
    verdicts = [v for v in _judge_fixed(picked)]
    verdicts += _judge_baseline(session, model, served, day, picked)
    return DayJudgement(verdicts, seen)


def _judge_fixed(picked: list[tuple[Monitor, SignalRow]]) -> list[Verdict]:
    verdicts = []
    for monitor, row in picked:
        if monitor.band.get("type") != "fixed":
            continue
        low, high = monitor.band.get("low"), monitor.band.get("high")
        if row.denominator < monitor.min_volume or row.rate is None:
            verdicts.append(Verdict(monitor, row, None, low, high, None))
            continue
        outside = (low is not None and row.rate < low) or (high is not None and row.rate > high)
        verdicts.append(Verdict(monitor, row, outside, low, high, None))
    return verdicts


def _judge_baseline(
    session: Session,
    model: Model,
    served: int,
    day: date,
    picked: list[tuple[Monitor, SignalRow]],
) -> list[Verdict]:
    """Baseline bands, grouped by band settings so each baseline is read once."""
    groups: dict[str, list[tuple[Monitor, SignalRow]]] = {}
    for monitor, row in picked:
        if monitor.band.get("type") == "baseline" and row.signal in RATE_SIGNALS:
            band = {**DEFAULT_BAND, **monitor.band}
            groups.setdefault(repr(sorted(band.items())), []).append((monitor, row))
    verdicts: list[Verdict] = []
    for members in groups.values():
        band = {**DEFAULT_BAND, **members[0][0].band}
        found = _baseline_checkpoint(session, model, served, day, band)
        sums = _baseline_sums(session, *found) if found else {}
        judged: list[tuple[Monitor, SignalRow, float]] = []
        for monitor, row in members:
            numerator, denominator = sums.get((row.signal, row.dimension, row.value), (0.0, 0))
            if row.denominator < monitor.min_volume or denominator < monitor.min_volume:
                verdicts.append(Verdict(monitor, row, None, None, None, None))
                continue
            judged.append((monitor, row, float(smoothed_rate(numerator, denominator))))
        if not judged:
            continue
        alpha = float(band["alpha"]) / len(judged)
        baselines = np.array([b for _, _, b in judged])
        counts = np.array([round(r.numerator) for _, r, _ in judged])
        volumes = np.array([r.denominator for _, r, _ in judged])
        low, high = rate_band(baselines, volumes, 1.0 - alpha)
        outside = rate_outside_band(counts, volumes, baselines, alpha)
        for i, (monitor, row, baseline) in enumerate(judged):
            verdicts.append(
                Verdict(monitor, row, bool(outside[i]), float(low[i]), float(high[i]), baseline)
            )
    return verdicts


def mark_incident_day(session: Session, principal: Principal, body: IncidentDayIn) -> IncidentDay:
    """Marks a day as an incident: baselines skip it from now on. Marking it again is a no-op."""
    model = get_model(session, principal.project_id, body.model)
    row = session.scalar(
        select(IncidentDay).where(
            IncidentDay.project_id == model.project_id,
            IncidentDay.model_id == model.id,
            IncidentDay.day == body.day,
        )
    )
    if row is None:
        row = IncidentDay(
            project_id=principal.project_id, model_id=model.id, day=body.day, note=body.note
        )
        session.add(row)
        session.flush()
        audit.record(
            session,
            principal,
            "incident_day.marked",
            "model",
            model.id,
            {"day": body.day.isoformat()},
            body.note,
        )
        session.commit()
    return row


def list_incident_days(
    session: Session, project_id: int, model_name: str | None, cursor: str | None, limit: int
) -> tuple[Sequence[IncidentDay], str | None]:
    stmt = select(IncidentDay).where(IncidentDay.project_id == project_id)
    if model_name is not None:
        stmt = stmt.where(IncidentDay.model_id == get_model(session, project_id, model_name).id)
    return paginate(session, stmt, IncidentDay.id, cursor, limit)
