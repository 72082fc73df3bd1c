"""Drift: run the daily job, read signals, configure monitors, work alerts, mark incidents."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from typing import Annotated

from fastapi import Query, Response, status

from app.core.db import today_utc
from app.core.deps import Paging, Reader, SessionDep, Writer, api_router
from app.core.schemas import Page
from app.drift import alerts, monitors
from app.drift import job as drift_job
from app.drift import queries as drift_queries
from app.drift.schemas import (
    AlertActionIn,
    AlertOut,
    DriftDayOut,
    DriftRunIn,
    DriftRunOut,
    IncidentDayIn,
    IncidentDayOut,
    MonitorIn,
    MonitorOut,
    SignalOut,
)
from app.models import DailySignal, Monitor
from app.models.drift import AlertStatus
from app.registry.service import names_by_id

router = api_router("/api/v1", "drift")

Filter = Annotated[str | None, Query(max_length=200)]


@router.post("/drift/run", response_model=DriftRunOut)
def run_drift(body: DriftRunIn, principal: Writer, session: SessionDep) -> DriftRunOut:
    """Computes the day's signals (default yesterday, UTC) and evaluates the monitors.
    Runs inline: one day is a handful of GROUP BY queries over that day's events."""
    day = body.date or today_utc() - timedelta(days=1)
    results = drift_job.run_days(session, principal.project_id, day, body.backfill, "api")
    return DriftRunOut(
        signals=sum(r.signals for r in results),
        alerts_opened=sum(r.alerts_opened for r in results),
        days=[
            DriftDayOut(
                day=r.day,
                signals=r.signals,
                alerts_opened=r.alerts_opened,
                alerts_resolved=r.alerts_resolved,
            )
            for r in results
        ],
    )


def _signals_out(session: SessionDep, rows: Sequence[DailySignal]) -> list[SignalOut]:
    names = names_by_id(session, {r.checkpoint_id for r in rows})
    return [
        SignalOut(
            day=r.day,
            model=names[r.checkpoint_id][0],
            checkpoint_id=r.checkpoint_id,
            checkpoint_version=names[r.checkpoint_id][1],
            signal=r.signal,
            dimension=r.dimension,
            value=r.value,
            numerator=r.numerator,
            denominator=r.denominator,
            rate=r.rate,
            extra=r.extra,
        )
        for r in rows
    ]


@router.get("/signals", response_model=Page[SignalOut])
def list_signals(
    principal: Reader,
    session: SessionDep,
    paging: Paging,
    model: Filter = None,
    signal: Filter = None,
    dimension: Filter = None,
    value: Filter = None,
    checkpoint_id: int | None = None,
    from_: Annotated[date | None, Query(alias="from")] = None,
    to: date | None = None,
) -> Page[SignalOut]:
    filters = {
        "model": model,
        "signal": signal,
        "dimension": dimension,
        "value": value,
        "checkpoint_id": checkpoint_id,
        "from": from_,
        "to": to,
    }
    rows, cursor = drift_queries.list_signals(
        session, principal.project_id, filters, paging.cursor, paging.limit
    )
    return Page(items=_signals_out(session, rows), next_cursor=cursor)


def _monitors_out(session: SessionDep, rows: Sequence[Monitor]) -> list[MonitorOut]:
    names = monitors.model_names(session, {m.model_id for m in rows})
    return [
        MonitorOut(
            id=m.id,
            model=names[m.model_id],
            signal=m.signal,
            band=m.band,
            dimension=m.dimension,
            value=m.value,
            min_volume=m.min_volume,
            cooldown_hours=m.cooldown_hours,
            resolve_after_days=m.resolve_after_days,
            enabled=m.enabled,
            is_default=m.is_default,
        )
        for m in rows
    ]


@router.get("/monitors", response_model=Page[MonitorOut])
def list_monitors(principal: Reader, session: SessionDep, model: Filter = None) -> Page[MonitorOut]:
    """Every monitor, the four default baseline monitors of each model included."""
    rows = monitors.list_monitors(session, principal, model)
    return Page(items=_monitors_out(session, rows))


@router.post("/monitors", response_model=MonitorOut, status_code=status.HTTP_201_CREATED)
def create_monitor(body: MonitorIn, principal: Writer, session: SessionDep) -> MonitorOut:
    monitor, _ = monitors.save_monitor(session, principal, body, replace=False)
    return _monitors_out(session, [monitor])[0]


@router.put(
    "/monitors",
    response_model=MonitorOut,
    responses={201: {"model": MonitorOut, "description": "Created"}},
)
def put_monitor(
    body: MonitorIn, principal: Writer, session: SessionDep, response: Response
) -> MonitorOut:
    """Replaces the monitor of (model, signal, dimension, value), or creates it."""
    monitor, created = monitors.save_monitor(session, principal, body, replace=True)
    if created:
        response.status_code = status.HTTP_201_CREATED
    return _monitors_out(session, [monitor])[0]


@router.get("/alerts", response_model=Page[AlertOut])
def list_alerts(
    principal: Reader,
    session: SessionDep,
    paging: Paging,
    status: AlertStatus | None = None,
    model: Filter = None,
    signal: Filter = None,
    dimension: Filter = None,
    value: Filter = None,
) -> Page[AlertOut]:
    filters = {
        "status": status,
        "model": model,
        "signal": signal,
        "dimension": dimension,
        "value": value,
    }
    rows, cursor = alerts.list_alerts(
        session, principal.project_id, filters, paging.cursor, paging.limit
    )
    return Page(
        items=[AlertOut.model_validate(d) for d in alerts.describe(session, rows)],
        next_cursor=cursor,
    )


@router.get("/alerts/{alert_id}", response_model=AlertOut)
def get_alert(alert_id: int, principal: Reader, session: SessionDep) -> AlertOut:
    alert = alerts.get_alert(session, principal.project_id, alert_id)
    return AlertOut.model_validate(alerts.describe(session, [alert])[0])


@router.post("/alerts/{alert_id}/ack", response_model=AlertOut)
def acknowledge_alert(
    alert_id: int, principal: Writer, session: SessionDep, body: AlertActionIn | None = None
) -> AlertOut:
    alert = alerts.acknowledge(session, principal, alert_id, body.note if body else None)
    return AlertOut.model_validate(alerts.describe(session, [alert])[0])


@router.post("/alerts/{alert_id}/resolve", response_model=AlertOut)
def resolve_alert(
    alert_id: int, principal: Writer, session: SessionDep, body: AlertActionIn | None = None
) -> AlertOut:
    alert = alerts.resolve(session, principal, alert_id, body.note if body else None)
    return AlertOut.model_validate(alerts.describe(session, [alert])[0])


@router.post("/incident-days", response_model=IncidentDayOut, status_code=status.HTTP_201_CREATED)
def mark_incident_day(
    body: IncidentDayIn, principal: Writer, session: SessionDep
) -> IncidentDayOut:
    """Excludes a day from every baseline window of the model (a known incident)."""
    row, model_name = monitors.mark_incident_day(session, principal, body)
    return IncidentDayOut(
        id=row.id, model=model_name, day=row.day, note=row.note, created_at=row.created_at
    )


@router.get("/incident-days", response_model=Page[IncidentDayOut])
def list_incident_days(
    principal: Reader, session: SessionDep, paging: Paging, model: Filter = None
) -> Page[IncidentDayOut]:
    rows, cursor = monitors.list_incident_days(
        session, principal.project_id, model, paging.cursor, paging.limit
    )
    return Page(
        items=[
            IncidentDayOut(id=r.id, model=name, day=r.day, note=r.note, created_at=r.created_at)
            for r, name in rows
        ],
        next_cursor=cursor,
    )
