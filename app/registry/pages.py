"""Model and checkpoint pages: champion, lineage, history, runs and gates; the rollback
confirmation page an alert links to."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from app.canaries import queries as canary_queries
from app.core.deps import LinksDep, SessionDep
from app.core.links import Links
from app.drift import alerts, signals
from app.evaluations import queries as run_queries
from app.gates import queries as gate_queries
from app.models.project import Role
from app.registry import figures as registry_figures
from app.registry import queries as registry_queries
from app.registry import service as registry
from app.web import auth
from app.web.auth import ViewerDep
from app.web.rendering import (
    CsrfField,
    PageText,
    redirect,
    render,
    require_role,
    web_router,
)

router = web_router()


@router.get("/models/{model}", response_class=HTMLResponse)
def model_page(
    request: Request, model: PageText, viewer: ViewerDep, session: SessionDep
) -> HTMLResponse:
    state = registry.model_state(session, viewer.principal.project_id, model)
    checkpoints = registry_queries.model_checkpoints(
        session, state.model.project_id, state.model.id
    )
    checkpoint_ids = [c.id for c in checkpoints]
    history = list(reversed(state.history))
    context = {
        "viewer": viewer,
        "state": state,
        "checkpoints": checkpoints,
        "versions": {c.id: c.version for c in checkpoints},
        "history": history,
        "verdicts": gate_queries.gate_verdicts(
            session, viewer.principal.project_id, {h.gate_id for h in history if h.gate_id}
        ),
        "runs": run_queries.runs_for_checkpoints(
            session, viewer.principal.project_id, checkpoint_ids
        ),
        "gates": gate_queries.gates_for_checkpoints(
            session, viewer.principal.project_id, checkpoint_ids
        ),
        "canaries": canary_queries.canaries_of_model(
            session, state.model.project_id, state.model.id
        ),
        "lineage_figure": registry_figures.lineage(
            checkpoints, state.champion.id if state.champion else None
        )
        if checkpoints
        else None,
    }
    return render(request, "registry/model.html", context)


def _rollback_form(
    request: Request,
    viewer: auth.Viewer,
    session: Session,
    links: Links,
    model: str,
    alert_id: int | None,
    error: str | None = None,
) -> HTMLResponse:
    """The confirmation form (an alert's rollback link lands here), with the alert's summary."""
    project_id = viewer.principal.project_id
    state = registry.model_state(session, project_id, model, alert_id)
    alert = (
        alerts.alert_out(alerts.get_alert(session, project_id, alert_id), links)
        if alert_id
        else None
    )
    observed = signals.format_value(alert.signal, alert.observed) if alert else None
    context = {
        "viewer": viewer,
        "state": state,
        "alert": alert,
        "observed": observed,
        "error": error,
    }
    return render(request, "registry/rollback.html", context, status_code=422 if error else 200)


@router.get("/models/{model}/rollback", response_class=HTMLResponse)
def rollback_page(
    request: Request,
    model: PageText,
    viewer: ViewerDep,
    session: SessionDep,
    links: LinksDep,
    alert_id: Annotated[int | None, Query(ge=1)] = None,
) -> HTMLResponse:
    return _rollback_form(request, viewer, session, links, model, alert_id)


@router.post("/models/{model}/rollback", response_model=None)
def rollback(
    request: Request,
    model: PageText,
    viewer: ViewerDep,
    session: SessionDep,
    links: LinksDep,
    csrf_token: CsrfField,
    reason: Annotated[str, Form(max_length=2000)] = "",
    alert_id: Annotated[int | None, Form(ge=1)] = None,
    champion_id: Annotated[int | None, Form(ge=1)] = None,
    target_id: Annotated[int | None, Form(ge=1)] = None,
) -> HTMLResponse | RedirectResponse:
    """Rolls back as the form showed it: from `champion_id` to `target_id` (both hidden
    fields), 409 when either changed since."""
    auth.check_csrf(request, csrf_token)
    require_role(viewer, Role.write)
    if not reason.strip():
        return _rollback_form(request, viewer, session, links, model, alert_id, "Write a reason.")
    registry.rollback(
        session,
        viewer.principal,
        links,
        model,
        None,
        reason.strip(),
        alert_id=alert_id,
        reviewed=(champion_id, target_id) if champion_id and target_id else None,
    )
    return redirect(f"/models/{quote(model, safe='')}?rolled_back=1")


@router.get("/checkpoints/{checkpoint_id}", response_class=HTMLResponse)
def checkpoint_page(
    request: Request, checkpoint_id: int, viewer: ViewerDep, session: SessionDep
) -> HTMLResponse:
    project_id = viewer.principal.project_id
    checkpoint = registry.get_checkpoint(session, project_id, checkpoint_id)
    model = registry_queries.model_by_id(session, checkpoint.model_id)
    parent_ids = {checkpoint.parent_id} if checkpoint.parent_id else set()
    context = {
        "viewer": viewer,
        "checkpoint": checkpoint,
        "model": model,
        "parent_version": registry_queries.versions_by_id(session, project_id, parent_ids).get(
            checkpoint.parent_id or 0
        ),
        "children": registry_queries.checkpoint_children(session, project_id, checkpoint.id),
        "runs": run_queries.runs_for_checkpoints(session, project_id, [checkpoint.id]),
        "gates": gate_queries.gates_for_checkpoints(session, project_id, [checkpoint.id]),
    }
    return render(request, "registry/checkpoint.html", context)
