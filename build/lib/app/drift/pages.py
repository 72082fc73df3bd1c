"""The drift page (signals, bands, alerts, champion changes, calibration) and the alert pages."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from app.core.deps import LinksDep, SessionDep
from app.core.errors import Unprocessable
from app.drift import alerts
from app.drift import figures as drift_figures
from app.drift import queries as drift_queries
from app.drift import signals as signals
from app.ingest import queries as event_queries
from app.ingest.schemas import EventOut
from app.models.drift import AlertStatus
from app.models.project import Role
from app.registry import queries as registry_queries
from app.web import auth
from app.web.auth import ViewerDep
from app.web.rendering import (
    CsrfField,
    OptionalText,
    date_window,
    redirect,
    render,
    require_role,
    web_router,
)
from app.webhooks import queries as webhook_queries

router = web_router()
WEEKLY_AFTER_DAYS = 120


@router.get("/drift", response_class=HTMLResponse)
def drift_page(
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    links: LinksDep,
    model: OptionalText = None,
    signal: Annotated[str, Query(max_length=64)] = "eval_fail_rate",
    dimension: Annotated[str, Query(max_length=100)] = "all",
    start: Annotated[date | None, Query(alias="from")] = None,
    end: Annotated[date | None, Query(alias="to")] = None,
) -> HTMLResponse:
    project_id = viewer.principal.project_id
    if signal not in signals.ALL_SIGNALS:
        raise Unprocessable(f"signal: one of {', '.join(signals.ALL_SIGNALS)}", field="signal")
    start, end = date_window(start, end, 45)
    models = registry_queries.model_names(session, project_id)
    model = model or (models[0] if models else None)

    # Beyond four months a chart of days is noise: weekly sums, without the daily band.
    weekly = (end - start).days > WEEKLY_AFTER_DAYS

    def series(signals: list[str], dimension: str) -> list[drift_queries.SignalPoint]:
        return drift_queries.signal_series(
            session,
            project_id,
            signals=signals,
            dimension=dimension,
            start=start,
            end=end,
            model=model,
            weekly=weekly,
        )

    points = series([signal], dimension)
    shown = [
        alerts.alert_out(a, links)
        for a in drift_queries.alerts(
            session, project_id, list(AlertStatus), model=model, start=start, end=end, limit=500
        )
        if a.signal == signal and a.dimension == dimension
    ]
    alert_marks = [(a.day, a.value, a.observed, a.id) for a in shown]
    changes = registry_queries.champion_changes(session, project_id, model, start, end)
    calibration = series(["brier_score", "ece"], "all")
    calibration_bins = (
        drift_queries.calibration_bins(
            session, project_id, model=model, dimension=dimension, start=start, end=end
        )
        if model
        else []
    )
    refusal = series(["over_refusal_rate", "under_refusal_rate"], "all")
    context = {
        "viewer": viewer,
        "models": models,
        "signals": [(s, signals.signal_label(s)) for s in signals.ALL_SIGNALS],
        "dimensions": drift_queries.signal_dimensions(session, project_id),
        "filters": {
            "model": model,
            "signal": signal,
            "dimension": dimension,
            "from": start.isoformat(),
            "to": end.isoformat(),
        },
        "alerts": shown,
        "weekly": weekly,
        "drift_figure": drift_figures.drift(points, signal, alert_marks, changes, banded=not weekly)
        if points
        else None,
        "calibration_figure": drift_figures.per_signal(
            calibration, "brier_score", changes, "Brier score and ECE (lower is better)", not weekly
        )
        if calibration
        else None,
        "reliability_figure": drift_figures.reliability(
            calibration_bins,
            f"Reliability {'of all traffic' if dimension == 'all' else 'per ' + dimension}, "
            f"{start} to {end}",
        )
        if calibration_bins
        else None,
        "refusal_figure": drift_figures.per_signal(
            refusal, "refusal_rate", changes, "Over- and under-refusal", not weekly
        )
        if refusal
        else None,
    }
    return render(request, "drift/drift.html", context)


@router.get("/alerts", response_class=HTMLResponse)
def alerts_page(
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    links: LinksDep,
    status: Annotated[AlertStatus | None, Query()] = None,
    model: OptionalText = None,
) -> HTMLResponse:
    project_id = viewer.principal.project_id
    statuses = [status] if status else [AlertStatus.open, AlertStatus.acknowledged]
    context = {
        "viewer": viewer,
        "alerts": [
            alerts.alert_out(a, links)
            for a in drift_queries.alerts(session, project_id, statuses, model=model, limit=200)
        ],
        "counts": drift_queries.alert_counts(session, project_id),
        "models": registry_queries.model_names(session, project_id),
        "filters": {"status": status.value if status else None, "model": model},
        "statuses": [s.value for s in AlertStatus],
    }
    return render(request, "drift/alerts.html", context)


@router.get("/alerts/{alert_id}", response_class=HTMLResponse)
def alert_page(
    request: Request, alert_id: int, viewer: ViewerDep, session: SessionDep, links: LinksDep
) -> HTMLResponse:
    project_id = viewer.principal.project_id
    row = alerts.alert_out(alerts.get_alert(session, project_id, alert_id), links)
    start, end = row.day - timedelta(days=21), row.day + timedelta(days=7)
    points = drift_queries.signal_series(
        session,
        project_id,
        signals=[row.signal],
        dimension=row.dimension,
        start=start,
        end=end,
        model=row.model,
        value=row.value,
    )
    changes = registry_queries.champion_changes(session, project_id, row.model, start, end)
    sample_events, _ = event_queries.list_events(
        session,
        project_id,
        event_queries.EventFilters(trace_ids=tuple(row.sample_trace_ids[:20])),
        None,
        20,
    )
    samples = [EventOut.model_validate(event) for event in sample_events]
    context = {
        "viewer": viewer,
        "alert": row,
        "samples": samples,
        "deliveries": webhook_queries.deliveries_for_alert(session, project_id, alert_id),
        "band_figure": drift_figures.drift(
            points,
            row.signal,
            [(row.day, row.value, row.observed, row.id)],
            changes,
            f"{signals.signal_label(row.signal)} · {row.dimension}={row.value}",
        )
        if points
        else None,
    }
    return render(request, "drift/alert.html", context)


@router.post("/alerts/{alert_id}/ack")
def acknowledge_alert(
    request: Request, alert_id: int, viewer: ViewerDep, session: SessionDep, csrf_token: CsrfField
) -> RedirectResponse:
    auth.check_csrf(request, csrf_token)
    require_role(viewer, Role.write)
    alerts.acknowledge(session, viewer.principal, alert_id, "acknowledged on the dashboard")
    return redirect(f"/alerts/{alert_id}")


@router.post("/alerts/{alert_id}/resolve")
def resolve_alert(
    request: Request,
    alert_id: int,
    viewer: ViewerDep,
    session: SessionDep,
    links: LinksDep,
    csrf_token: CsrfField,
) -> RedirectResponse:
    auth.check_csrf(request, csrf_token)
    require_role(viewer, Role.write)
    alerts.resolve(session, viewer.principal, links, alert_id, "resolved on the dashboard")
    return redirect(f"/alerts/{alert_id}")
