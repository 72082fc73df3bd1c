"""Drift: run the daily job, read signals, configure monitors, work alerts, mark incidents,
rebaseline a model's frozen reference, read and change the project's drift settings."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated

from fastapi import Query, Response, status

from app.core.db import today_utc
from app.core.deps import (
    Admin,
    LinksDep,
    Paging,
    Reader,
    SessionDep,
    SettingsDep,
    Writer,
    api_router,
)
from app.core.schemas import CohortFilter, Page
from app.drift import alerts, monitors, references
from app.drift import job as drift_job
from app.drift import queries as drift_queries
from app.drift import settings as drift_settings
from app.drift.schemas import (
    AlertActionIn,
    AlertOut,
    DriftDayOut,
    DriftRunIn,
    DriftRunOut,
    DriftSettings,
    IncidentDayIn,
    IncidentDayOut,
    MonitorIn,
    MonitorOut,
    RebaselineIn,
    ReferenceOut,
    SignalOut,
    UnjudgedDayOut,
)
from app.ingest.retention import retention_cutoff
from app.models.drift import AlertStatus

router = api_router("/api/v1", "drift")

Filter = Annotated[str | None, Query(max_length=200)]


@router.post(
    "/drift/run",
    response_model=DriftRunOut,
    responses={
        500: {
            "description": "A day failed: the days before it are committed; the problem names "
            "`failed_day` and `rerun` ({date, backfill}) to run again from it"
        }
    },
)
def run_drift(
    body: DriftRunIn, principal: Writer, session: SessionDep, links: LinksDep, settings: SettingsDep
) -> DriftRunOut:
    """Computes the day's signals (default yesterday, UTC) and evaluates the monitors.
    Runs inline: one day is a handful of GROUP BY queries over that day's events."""
    day = drift_job.ended_day(body.date or today_utc() - timedelta(days=1))
    results = drift_job.run_days(
        session,
        links,
        principal.project_id,
        day,
        body.backfill,
        "api",
        retention_cutoff(settings),
    )
    return DriftRunOut(
        signals=sum(r.signals for r in results),
        alerts_opened=sum(r.alerts_opened for r in results),
        days=[DriftDayOut.model_validate(r) for r in results],
    )


@router.get("/drift/unjudged-days", response_model=Page[UnjudgedDayOut])
def list_unjudged_days(principal: Reader, session: SessionDep) -> Page[UnjudgedDayOut]:
    """Days whose drift run failed and that no run has judged since, newest first (at most
    100), each with the `POST /api/v1/drift/run` body that judges it."""
    rows = drift_queries.unjudged_days(session, principal.project_id)
    return Page(items=[UnjudgedDayOut.model_validate(r) for r in rows])


@router.get("/signals", response_model=Page[SignalOut])
def list_signals(
    principal: Reader,
    session: SessionDep,
    paging: Paging,
    model: Filter = None,
    signal: Filter = None,
    dimension: CohortFilter = None,
    value: CohortFilter = None,
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
    return Page(items=[SignalOut.model_validate(r) for r in rows], next_cursor=cursor)


@router.get("/monitors", response_model=Page[MonitorOut])
def list_monitors(principal: Reader, session: SessionDep, model: Filter = None) -> Page[MonitorOut]:
    """Every monitor, the default baseline monitors of each model (one per signal) included."""
    rows = monitors.list_monitors(session, principal, model)
    return Page(items=[MonitorOut.model_validate(m) for m in rows])


@router.post("/monitors", response_model=MonitorOut, status_code=status.HTTP_201_CREATED)
def create_monitor(body: MonitorIn, principal: Writer, session: SessionDep) -> MonitorOut:
    monitor, _ = monitors.save_monitor(session, principal, body, replace=False)
    return MonitorOut.model_validate(monitor)


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
    return MonitorOut.model_validate(monitor)


@router.get("/alerts", response_model=Page[AlertOut])
def list_alerts(
    principal: Reader,
    session: SessionDep,
    links: LinksDep,
    paging: Paging,
    status: AlertStatus | None = None,
    model: Filter = None,
    signal: Filter = None,
    dimension: CohortFilter = None,
    value: CohortFilter = None,
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
    return Page(items=[alerts.alert_out(a, links) for a in rows], next_cursor=cursor)


@router.get("/alerts/{alert_id}", response_model=AlertOut)
def get_alert(alert_id: int, principal: Reader, session: SessionDep, links: LinksDep) -> AlertOut:
    return alerts.alert_out(alerts.get_alert(session, principal.project_id, alert_id), links)


@router.post("/alerts/{alert_id}/ack", response_model=AlertOut)
def acknowledge_alert(
    alert_id: int,
    principal: Writer,
    session: SessionDep,
    links: LinksDep,
    body: AlertActionIn | None = None,
) -> AlertOut:
    alert = alerts.acknowledge(session, principal, alert_id, body.note if body else None)
    return alerts.alert_out(alert, links)


@router.post("/alerts/{alert_id}/resolve", response_model=AlertOut)
def resolve_alert(
    alert_id: int,
    principal: Writer,
    session: SessionDep,
    links: LinksDep,
    body: AlertActionIn | None = None,
) -> AlertOut:
    alert = alerts.resolve(session, principal, links, alert_id, body.note if body else None)
    return alerts.alert_out(alert, links)


@router.post("/incident-days", response_model=IncidentDayOut, status_code=status.HTTP_201_CREATED)
def mark_incident_day(
    body: IncidentDayIn, principal: Writer, session: SessionDep
) -> IncidentDayOut:
    """Excludes a day from every baseline window of the model (a known incident)."""
    return IncidentDayOut.model_validate(monitors.mark_incident_day(session, principal, body))


@router.get("/incident-days", response_model=Page[IncidentDayOut])
def list_incident_days(
    principal: Reader, session: SessionDep, paging: Paging, model: Filter = None
) -> Page[IncidentDayOut]:
    rows, cursor = monitors.list_incident_days(
        session, principal.project_id, model, paging.cursor, paging.limit
    )
    return Page(items=[IncidentDayOut.model_validate(r) for r in rows], next_cursor=cursor)


@router.delete("/models/{model}/incident-days/{day}", status_code=status.HTTP_204_NO_CONTENT)
def unmark_incident_day(model: str, day: date, principal: Writer, session: SessionDep) -> None:
    """Removes a day's incident mark: references frozen from now on may take the day again."""
    monitors.unmark_incident_day(session, principal, model, day)


@router.post(
    "/models/{model}/rebaseline",
    response_model=ReferenceOut,
    status_code=status.HTTP_201_CREATED,
)
def rebaseline(
    model: str, body: RebaselineIn, principal: Writer, session: SessionDep
) -> ReferenceOut:
    """Freezes the champion's known-good days in [first_day, last_day] (default: its last
    `reference_days` before today) as the model's new reference, with a reason; audited.
    Its CUSUMs restart."""
    return ReferenceOut.model_validate(references.rebaseline(session, principal, model, body))


@router.get("/models/{model}/references", response_model=Page[ReferenceOut])
def list_references(model: str, principal: Reader, session: SessionDep) -> Page[ReferenceOut]:
    """The model's frozen references, newest first; the `active` one judges new days."""
    rows = references.list_references(session, principal.project_id, model)
    return Page(items=[ReferenceOut.model_validate(r) for r in rows])


@router.get("/drift/settings", response_model=DriftSettings)
def get_drift_settings(principal: Reader, session: SessionDep) -> DriftSettings:
    """The project's reference length, warm-up and daily error budget (defaults if unset)."""
    return drift_settings.drift_settings(session, principal.project_id)


@router.put("/drift/settings", response_model=DriftSettings)
def put_drift_settings(body: DriftSettings, principal: Admin, session: SessionDep) -> DriftSettings:
    """Replaces the drift settings (missing fields take the defaults); audited. A frozen
    reference stays as it is: new lengths apply at the next freeze."""
    return drift_settings.set_drift_settings(session, principal, body)
