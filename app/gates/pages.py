"""The gate page and the compare page (any two runs decided as a gate would, nothing stored)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import HTMLResponse

from app.core.deps import SessionDep
from app.gates import figures as gate_figures
from app.gates import service as gates
from app.registry import queries as registry_queries
from app.web.auth import ViewerDep
from app.web.rendering import (
    render,
    web_router,
)

router = web_router()


@router.get("/gates/{gate_id}", response_class=HTMLResponse)
def gate_page(
    request: Request, gate_id: int, viewer: ViewerDep, session: SessionDep
) -> HTMLResponse:
    gate = gates.get_gate(session, viewer.principal.project_id, gate_id)
    model = registry_queries.model_by_id(session, gate.model_id)
    context = {
        "viewer": viewer,
        "gate": gate,
        "model": model,
        "versions": registry_queries.versions_by_id(session, gate.project_id, {gate.checkpoint_id}),
        "notes": gate.notes.get("messages", []),
        **_cohort_changes(gate.comparisons, gate.policy),
    }
    return render(request, "gates/gate.html", context)


def _cohort_changes(comparisons: list[dict[str, Any]], policy: dict[str, Any]) -> dict[str, Any]:
    """The forest plot and table rows of a decision: blocks first, then the other guarded
    comparisons, then warnings, then the rest."""
    ordered = sorted(
        comparisons,
        key=lambda c: (
            not c.get("regressed"),
            not c.get("guarded"),
            c.get("status") != "warn",
            str(c.get("evaluator")),
            gate_figures.cohort_name(c),
        ),
    )
    return {
        "comparisons": [
            (
                c,
                gate_figures.cohort_name(c),
                margin,
                gate_figures.bound_digits(c, margin),
            )
            for c in ordered
            for margin in [gate_figures.margin_of(c, policy)]
        ],
        "forest_figure": gate_figures.forest(ordered, policy) if ordered else None,
    }


@router.get("/compare", response_class=HTMLResponse)
def compare_page(
    request: Request,
    viewer: ViewerDep,
    session: SessionDep,
    baseline_run: Annotated[int, Query(ge=1)],
    candidate_run: Annotated[int, Query(ge=1)],
) -> HTMLResponse:
    """Any two runs of one dataset, decided as a gate would under the candidate model's
    current policy, without storing a gate or changing any checkpoint."""
    compared = gates.compare_runs(session, viewer.principal.project_id, candidate_run, baseline_run)
    context = {
        "viewer": viewer,
        "compared": compared,
        "verdict": compared.decision.verdict.value,
        "reasons": compared.decision.reasons,
        **_cohort_changes(compared.decision.comparisons, compared.spec.as_stored()),
    }
    return render(request, "gates/compare.html", context)
