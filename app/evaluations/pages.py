"""The run page: cohort heatmaps and the per-row results, filtered and paged."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import HTMLResponse

from app.core.deps import SessionDep
from app.core.errors import Unprocessable
from app.evaluations import figures as run_figures
from app.evaluations import queries as run_queries
from app.evaluations import service as runs
from app.evaluations.summary import compute_summary
from app.web.auth import ViewerDep
from app.web.rendering import (
    PAGE_SIZE,
    OptionalText,
    render,
    web_router,
)

router = web_router()


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(
    request: Request,
    run_id: int,
    viewer: ViewerDep,
    session: SessionDep,
    cohort: OptionalText = None,
    evaluator: OptionalText = None,
    failures: bool = False,
    page: Annotated[int, Query(ge=1, le=10_000)] = 1,
) -> HTMLResponse:
    project_id = viewer.principal.project_id
    run = runs.owned_run(session, project_id, run_id)
    summary = run_queries.run_summary(session, project_id, run_id)
    cohort_filter = _parse_cohort(cohort)
    # A finished run's stored summary, or while it runs the same summary of the results so far.
    figures_summary = run.summary or compute_summary(
        session, project_id, run.id, run.dataset_version_id, run.repeats
    )
    cells = run_figures.summary_cells(figures_summary)
    rows = run_queries.run_result_rows(
        session, run, cohort_filter, evaluator, failures, (page - 1) * PAGE_SIZE, PAGE_SIZE + 1
    )
    context = {
        "viewer": viewer,
        "run": run,
        "summary": summary,
        "live": summary.status in ("queued", "running"),
        "cohorts": sorted({c.cohort for c in cells}),
        "evaluators": sorted({c.evaluator for c in cells}),
        "rows": rows[:PAGE_SIZE],
        "has_more": len(rows) > PAGE_SIZE,
        "filters": {"cohort": cohort, "evaluator": evaluator, "failures": failures, "page": page},
        "comparable_runs": run_queries.comparable_runs(session, project_id, run),
        "pass_figure": run_figures.cohort_heatmap(cells, "pass_rate") if cells else None,
        "score_figure": run_figures.cohort_heatmap(cells, "mean_score") if cells else None,
    }
    return render(request, "evaluations/run.html", context)


def _parse_cohort(cohort: str | None) -> tuple[str, str] | None:
    if not cohort:
        return None
    if cohort == "all":
        return ("all", "all")
    dimension, sep, value = cohort.partition("=")
    if not sep or not dimension:
        raise Unprocessable(
            "cohort: expected dimension=value, e.g. user_segment=free", field="cohort"
        )
    return dimension, value
