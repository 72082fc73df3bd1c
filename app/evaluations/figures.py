"""The run page's cohort heatmap."""

from __future__ import annotations

from collections.abc import Sequence

from app.evaluations.queries import CohortCell
from app.web.figures import go, to_json


def cohort_heatmap(cells: Sequence[CohortCell], metric: str) -> str:
    """Evaluator x cohort; `metric` is "pass_rate" or "mean_score", both in [0, 1]."""
    evaluators = sorted({c.evaluator for c in cells})
    cohorts = sorted({c.cohort for c in cells}, key=lambda name: (name != "all", name))
    index = {(c.evaluator, c.cohort): c for c in cells}
    z: list[list[float | None]] = []
    counts: list[list[int]] = []
    for evaluator in evaluators:
        row_z: list[float | None] = []
        row_n: list[int] = []
        for cohort in cohorts:
            cell = index.get((evaluator, cohort))
            row_z.append(getattr(cell, metric) if cell else None)
            row_n.append(cell.n if cell else 0)
        z.append(row_z)
        counts.append(row_n)
    label = "pass rate" if metric == "pass_rate" else "mean score"
    figure = go.Figure(
        go.Heatmap(
            z=z,
            x=cohorts,
            y=evaluators,
            customdata=counts,
            zmin=0,
            zmax=1,
            colorscale="RdYlGn",
            colorbar={"title": {"text": label}, "tickformat": ".0%"},
            texttemplate="%{z:.0%}",
            hovertemplate=(
                "%{y} x %{x}<br>" + label + " %{z:.1%}<br>%{customdata:,} rows<extra></extra>"
            ),
        )
    )
    figure.update_xaxes(title="cohort", tickangle=-30)
    figure.update_yaxes(title="evaluator")
    return to_json(figure, height=160 + 44 * max(len(evaluators), 1))
