"""Monitors: which band each daily signal is judged by (judge.py applies them).

Band types
- fixed: {"type": "fixed", "low": x?, "high": y?}: any signal, bounds on the value itself.
- baseline: {"type": "baseline", "side": "upper" | "two-sided"}: any signal, judged against
  the model's frozen reference (references.py) by the predictive band and the CUSUM under
  the model-day's one error budget (judge.py). "upper" (the default) alerts only on
  increases, the harmful direction of every signal Plumbline computes; improvements are
  shown on the page, not paged. Earlier baseline settings (window_days, alpha, min_days,
  source) are accepted and dropped: the reference and the budget are per model now.

Every model has a default baseline monitor for every signal (signals.DEFAULT_SIGNALS). A
monitor with a dimension (and value) overrides the model-wide one for that cohort; the most
specific wins (judge.pick_monitor)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core import audit
from app.core.auth import Principal
from app.core.db import get_owned, is_postgres
from app.core.errors import Conflict, NotFound, Unprocessable
from app.core.pagination import paginate
from app.drift.schemas import IncidentDayIn, MonitorIn
from app.drift.signals import ALL_SIGNALS, DEFAULT_SIGNALS
from app.models import IncidentDay, Model, Monitor
from app.registry.service import get_model
from app.stats.alerting import DEFAULT_RESOLVE_AFTER

DEFAULT_BAND: dict[str, Any] = {"type": "baseline", "side": "upper"}
# No volume floor: the predictive band is exact at any volume and the budget leaves out
# cohorts too small to ever reach significance, so a small cohort pages no one anyway.
DEFAULT_MIN_VOLUME = 1


def ensure_defaults(session: Session, project_id: int, model_id: int) -> None:
    """Every model gets a monitor per signal without configuration (created on first use).

    Any process may get here first: the insert skips what the unique (model, signal, cohort)
    index says exists, so concurrent callers never create a second set."""
    existing = set(
        session.scalars(
            select(Monitor.signal).where(
                Monitor.project_id == project_id,
                Monitor.model_id == model_id,
                Monitor.dimension.is_(None),
            )
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
            "min_volume": DEFAULT_MIN_VOLUME,
            "resolve_after_days": DEFAULT_RESOLVE_AFTER,
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
    if body.value is not None and body.dimension is None:
        raise Unprocessable("dimension: required when value is given", field="dimension")


def _same_key(session: Session, model: Model, body: MonitorIn) -> Monitor | None:
    return session.scalar(
        select(Monitor)
        .where(
            Monitor.project_id == model.project_id,
            Monitor.model_id == model.id,
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
    monitor = _same_key(session, model, body)
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


def mark_incident_day(session: Session, principal: Principal, body: IncidentDayIn) -> IncidentDay:
    """Marks a day as an incident: references frozen from now on skip it (a frozen one keeps
    its days; rebaseline to take a new one). Marking it again is a no-op."""
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


def unmark_incident_day(session: Session, principal: Principal, model_name: str, day: date) -> None:
    """Removes the incident mark of a model's day (404 when it is not marked). Audited."""
    model = get_model(session, principal.project_id, model_name)
    row = session.scalar(
        select(IncidentDay).where(
            IncidentDay.project_id == principal.project_id,
            IncidentDay.model_id == model.id,
            IncidentDay.day == day,
        )
    )
    if row is None:
        raise NotFound(f"{day.isoformat()} is not marked as an incident day of '{model.name}'")
    session.delete(row)
    audit.record(
        session, principal, "incident_day.unmarked", "model", model.id, {"day": day.isoformat()}
    )
    session.commit()
