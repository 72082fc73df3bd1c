"""One dataset: its versions, rows and the diff between two versions."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import HTMLResponse

from app.core.deps import SessionDep
from app.core.errors import NotFound
from app.datasets import queries as dataset_queries
from app.evaluations.schemas import MAX_REPEATS
from app.gates.planning import DEFAULT_POLICY, PRIOR_FLIP_RATE, plan_version
from app.web.auth import ViewerDep
from app.web.rendering import (
    PAGE_SIZE,
    PageText,
    render,
    web_router,
)

router = web_router()
# Keys listed per kind of change on the page (the API pages through all of them).
DIFF_KEYS = 500


@router.get("/datasets/{name}", response_class=HTMLResponse)
def dataset_page(
    request: Request,
    name: PageText,
    viewer: ViewerDep,
    session: SessionDep,
    version: Annotated[int | None, Query(ge=1)] = None,
    compare: Annotated[int | None, Query(ge=1)] = None,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
    flip_rate: Annotated[float, Query(ge=0, le=0.5)] = PRIOR_FLIP_RATE,
    margin: Annotated[float, Query(gt=0, lt=0.5)] = DEFAULT_POLICY.margin,
    repeats: Annotated[int, Query(ge=1, le=MAX_REPEATS)] = 1,
) -> HTMLResponse:
    """Versions, the shown version's guarded cohorts with the rows they need (from a stated
    prior flip rate, and from the latest gate's observed discordance), its rows, and a diff."""
    dataset, versions = dataset_queries.dataset_with_versions(
        session, viewer.principal.project_id, name
    )
    by_number = {v.version: v for v in versions}
    shown = by_number.get(version) if version else (versions[0] if versions else None)
    if version and shown is None:
        raise NotFound(f"dataset '{name}' has no version {version}")
    other = by_number.get(compare) if compare else None
    if compare and other is None:
        raise NotFound(f"dataset '{name}' has no version {compare}")
    rows = (
        dataset_queries.dataset_rows(session, shown, (page - 1) * PAGE_SIZE, PAGE_SIZE + 1)
        if shown
        else []
    )
    context = {
        "viewer": viewer,
        "dataset": dataset,
        "versions": versions,
        "shown": shown,
        "other": other,
        "diff": dataset_queries.diff_versions(
            session, viewer.principal.project_id, name, other.version, shown.version, DIFF_KEYS
        )
        if shown and other
        else None,
        "rows": rows[:PAGE_SIZE],
        "has_more": len(rows) > PAGE_SIZE,
        "page": page,
        "diff_keys": DIFF_KEYS,
        "plan": plan_version(session, shown, flip_rate, margin, repeats) if shown else None,
    }
    return render(request, "datasets/dataset.html", context)
