"""The run page's cohort heatmap, drawn from the run's summary (the numbers the API returns)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.web.figures import go, percent_text, to_json


@dataclass(frozen=True)
class HeatmapCell:
    """One evaluator x cohort of the summary: `n` rows, `calls` results, `errors` of them
    with no verdict (left out of the rates, which are None when no call has a verdict)."""

    evaluator: str
    cohort: str
    mean_score: float | None
    pass_rate: float | None
    n: int
    calls: int
    errors: int


def summary_cells(summary: Mapping[str, Any]) -> list[HeatmapCell]:
    """The summary's by_cohort (the whole population as "all") and by_risk entries as cells
    named like the rows filter ("all", "risk=high", "route=billing"). Reading the summary keeps
    the page on the API's numbers: evaluator errors are counted apart, not as fails."""

    def cell(entry: Mapping[str, Any], cohort: str) -> HeatmapCell:
        return HeatmapCell(
            entry["evaluator"],
            cohort,
            entry["mean_score"],
            entry["pass_rate"],
            entry["n"],
            entry.get("calls", entry["n"]),
            entry.get("errors", 0),
        )

    cells = [
        cell(e, "all" if e["dimension"] == "all" else f"{e['dimension']}={e['value']}")
        for e in summary.get("by_cohort", [])
    ]
    cells += [cell(e, f"risk={e['risk']}") for e in summary.get("by_risk", [])]
    return cells


def cohort_heatmap(cells: Sequence[HeatmapCell], metric: str) -> str:
    """Evaluator x cohort; `metric` is "pass_rate" or "mean_score", both in [0, 1]. A cell
    whose calls all errored has no verdict: it stays blank, not a 0 %."""
    evaluators = sorted({c.evaluator for c in cells})
    cohorts = sorted({c.cohort for c in cells}, key=lambda name: (name != "all", name))
    index = {(c.evaluator, c.cohort): c for c in cells}
    z: list[list[float | None]] = []
    counts: list[list[list[int]]] = []
    for evaluator in evaluators:
        row_z: list[float | None] = []
        row_n: list[list[int]] = []
        for cohort in cohorts:
            found = index.get((evaluator, cohort))
            row_z.append(getattr(found, metric) if found else None)
            row_n.append([found.n, found.calls, found.errors] if found else [0, 0, 0])
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
            # Cell text rounds like the tables: 99.6% never reads "100%".
            text=[[None if v is None else percent_text(v, 0) for v in row] for row in z],
            texttemplate="%{text}",
            hovertemplate=(
                "%{y} x %{x}<br>"
                + label
                + " %{z:.1%}<br>%{customdata[0]:,} rows, %{customdata[1]:,} calls"
                + "<br>%{customdata[2]:,} evaluator errors (left out)<extra></extra>"
            ),
        )
    )
    figure.update_xaxes(title="cohort", tickangle=-30)
    figure.update_yaxes(title="evaluator")
    return to_json(figure, height=160 + 44 * max(len(evaluators), 1))
