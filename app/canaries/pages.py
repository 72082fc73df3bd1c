"""The canary page (its evidence, each guarded signal's interval over time, promote / stop /
roll back), and the rollback confirmation page a `canary.decided` webhook links to."""

from __future__ import annotations

from typing import Annotated

from fastapi import Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from sqlalchemy.orm import Session

from app.canaries import figures as canary_figures
from app.canaries import service as canaries
from app.canaries.schemas import MAX_COHORTS
from app.core.deps import LinksDep, SessionDep
from app.core.errors import Unprocessable
from app.core.links import Links
from app.models.project import Role
from app.registry import queries as registry_queries
from app.registry import service as registry
from app.web import auth
from app.web.auth import ViewerDep
from app.web.rendering import CsrfField, redirect, render, require_role, web_router

router = web_router()

ReasonField = Annotated[str, Form(max_length=2000)]
# The evidence table leads with what decides: harm first, unmeasured comparisons last.
_VERDICT_ORDER = {"worse": 0, "undecided": 1, "non_inferior": 2, "unmeasured": 3}


@router.get("/canaries/{canary_id}", response_class=HTMLResponse)
def canary_page(
    request: Request,
    canary_id: int,
    viewer: ViewerDep,
    session: SessionDep,
    links: LinksDep,
    cohort: Annotated[int, Query(ge=0, le=MAX_COHORTS)] = 0,
) -> HTMLResponse:
    """Looking evaluates a running canary (as the API's read does): the page is current.
    `cohort` picks the charts' cohort by its place in the canary's list (0: everyone)."""
    canary = canaries.get_canary(session, viewer.principal.project_id, canary_id)
    canary = canaries.evaluate(session, links, canary, "read")
    out = canaries.canary_out(session, canary, links)
    history = canaries.history(session, canary)
    if cohort >= len(history.plan.cohorts):
        raise Unprocessable(f"cohort: this canary guards {len(history.plan.cohorts)} cohorts")
    charts = [
        (signal, canary_figures.interval_over_time(history, signal, cohort))
        for signal in history.plan.signals
    ]
    context = {
        "viewer": viewer,
        "canary": out,
        "cohorts": [f"{d}={v}" for d, v in history.plan.labels],
        "chosen": cohort,
        "charts": charts,
        "comparisons": sorted(
            out.evidence.comparisons if out.evidence else [],
            key=lambda c: _VERDICT_ORDER[c.verdict],
        ),
    }
    return render(request, "canaries/canary.html", context)


@router.post("/canaries/{canary_id}/stop")
def stop_canary(
    request: Request,
    canary_id: int,
    viewer: ViewerDep,
    session: SessionDep,
    csrf_token: CsrfField,
    reason: ReasonField = "",
) -> RedirectResponse:
    auth.check_csrf(request, csrf_token)
    require_role(viewer, Role.write)
    canaries.stop(
        session, viewer.principal, canary_id, reason.strip() or "stopped on the dashboard"
    )
    return redirect(f"/canaries/{canary_id}")


@router.post("/canaries/{canary_id}/promote")
def promote_candidate(
    request: Request,
    canary_id: int,
    viewer: ViewerDep,
    session: SessionDep,
    links: LinksDep,
    csrf_token: CsrfField,
) -> RedirectResponse:
    """Promotes the candidate with the canary standing in for a passing gate (the registry
    checks the decision and the model's policy, and audits it)."""
    auth.check_csrf(request, csrf_token)
    require_role(viewer, Role.write)
    canary = canaries.get_canary(session, viewer.principal.project_id, canary_id)
    model = registry_queries.model_by_id(session, canary.model_id)
    registry.promote(
        session,
        viewer.principal,
        links,
        model.name,
        canary.checkpoint_id,
        gate_id=None,
        force=False,
        reason=None,
        canary_id=canary.id,
    )
    return redirect(f"/canaries/{canary_id}?promoted=1")


def _rollback_form(
    request: Request,
    viewer: auth.Viewer,
    session: Session,
    links: Links,
    canary_id: int,
    error: str | None = None,
) -> HTMLResponse:
    """The confirmation form (a rollback decision's webhook links here)."""
    canary = canaries.get_canary(session, viewer.principal.project_id, canary_id)
    context = {
        "viewer": viewer,
        "canary": canaries.canary_out(session, canary, links),
        "error": error,
    }
    return render(request, "canaries/rollback.html", context, status_code=422 if error else 200)


@router.get("/canaries/{canary_id}/rollback", response_class=HTMLResponse)
def rollback_page(
    request: Request, canary_id: int, viewer: ViewerDep, session: SessionDep, links: LinksDep
) -> HTMLResponse:
    return _rollback_form(request, viewer, session, links, canary_id)


@router.post("/canaries/{canary_id}/rollback", response_model=None)
def roll_back(
    request: Request,
    canary_id: int,
    viewer: ViewerDep,
    session: SessionDep,
    links: LinksDep,
    csrf_token: CsrfField,
    reason: ReasonField = "",
) -> HTMLResponse | RedirectResponse:
    auth.check_csrf(request, csrf_token)
    require_role(viewer, Role.write)
    if not reason.strip():
        return _rollback_form(request, viewer, session, links, canary_id, "Write a reason.")
    canaries.roll_back(session, viewer.principal, links, canary_id, reason.strip())
    return redirect(f"/canaries/{canary_id}?rolled_back=1")
