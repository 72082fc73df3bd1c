"""The overview page: every model's champion, open alerts, the last drift run, a month of
the seed signals."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import HTMLResponse

from app.core.deps import LinksDep, SessionDep
from app.datasets import queries as dataset_queries
from app.drift import alerts
from app.drift import figures as drift_figures
from app.drift import queries as drift_queries
from app.drift import signals as signals
from app.models.drift import AlertStatus
from app.registry import queries as registry_queries
from app.web.auth import ViewerDep
from app.web.rendering import (
    date_window,
    render,
    web_router,
)

router = web_router()


@router.get("/", response_class=HTMLResponse)
def overview(
    request: Request, viewer: ViewerDep, session: SessionDep, links: LinksDep
) -> HTMLResponse:
    project_id = viewer.principal.project_id
    start, end = date_window(None, None, 30)
    points = drift_queries.signal_series(
        session, project_id, signals=signals.HEADLINE_SIGNALS, dimension="all", start=start, end=end
    )
    context = {
        "viewer": viewer,
        "alert_numbers": drift_figures.alert_numbers,
        "models": registry_queries.model_summaries(session, project_id),
        "open_alerts": [
            alerts.alert_out(a, links)
            for a in drift_queries.alerts(
                session, project_id, [AlertStatus.open], limit=10, quality_first=True
            )
        ],
        "alert_counts": drift_queries.alert_counts(session, project_id),
        "drift_run": drift_queries.last_drift_run(session, project_id),
        "unjudged_days": drift_queries.unjudged_days(session, project_id),
        "datasets": dataset_queries.dataset_names(session, project_id),
        "signals_figure": drift_figures.small_multiples(points, signals.HEADLINE_SIGNALS)
        if points
        else None,
    }
    return render(request, "overview/overview.html", context)
