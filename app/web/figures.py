"""Plotly figures built in Python and handed to the page as JSON (rendered by static/js/app.js).

Every chart has axis titles with units and hover text with the numbers behind the point, so a
chart answers "how much, out of how many" without a second query."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.models import Checkpoint
from app.services.monitors import _PSEUDO_COUNT, DEFAULT_BAND
from app.stats.calibration import (
    BinStatistics,
    brier_decomposition,
    expected_calibration_error,
    reliability_diagram,
)
from app.stats.rates import rate_band
from app.web.queries import CalibrationBin, CohortCell, SignalPoint

PALETTE = ("#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0891b2", "#be185d", "#4d7c0f")
KIND_COLORS = {
    "base": "#64748b",
    "full": "#2563eb",
    "lora": "#059669",
    "rlhf": "#7c3aed",
    "quantized": "#d97706",
    "api": "#0891b2",
}
_FONT = {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12}
_TEMPLATE = go.layout.Template(
    layout={
        "font": _FONT,
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "xaxis": {"gridcolor": "#e5e7eb", "zerolinecolor": "#cbd5e1", "automargin": True},
        "yaxis": {"gridcolor": "#e5e7eb", "zerolinecolor": "#cbd5e1", "automargin": True},
        "hoverlabel": {"font": _FONT},
        "legend": {"orientation": "h", "y": -0.2},
        "colorway": list(PALETTE),
    }
)
SIGNAL_LABELS = {
    "eval_fail_rate": "Eval failure rate",
    "fallback_rate": "Fallback rate",
    "refusal_rate": "Refusal rate",
    "thumbs_down_rate": "Thumbs-down rate",
    "over_refusal_rate": "Over-refusal rate",
    "under_refusal_rate": "Under-refusal rate",
    "brier_score": "Brier score",
    "ece": "Expected calibration error",
}


def to_json(figure: go.Figure, height: int = 320) -> str:
    figure.update_layout(
        template=_TEMPLATE, height=height, margin={"l": 56, "r": 16, "t": 36, "b": 48}
    )
    return str(figure.to_json())


def signal_label(signal: str) -> str:
    return SIGNAL_LABELS.get(signal, signal)


def _is_rate(signal: str) -> bool:
    return signal.endswith("_rate")


def _hover(signal: str) -> str:
    value = "%{y:.1%}" if _is_rate(signal) else "%{y:.4f}"
    counts = "%{customdata[0]:,.0f} of %{customdata[1]:,} calls"
    return f"%{{x|%Y-%m-%d}}<br>{value}<br>{counts}<extra>%{{fullData.name}}</extra>"


def small_multiples(points: Sequence[SignalPoint], signals: Sequence[str]) -> str:
    """One panel per seed signal, one line per model: the overview's glance at last month."""
    figure = make_subplots(
        rows=2, cols=2, subplot_titles=[signal_label(s) for s in signals], vertical_spacing=0.18
    )
    models = sorted({p.model for p in points})
    for index, signal in enumerate(signals):
        row, col = divmod(index, 2)
        for color, model in zip(PALETTE, models, strict=False):
            chosen = [p for p in points if p.signal == signal and p.model == model]
            for series in series_of(chosen, signal, banded=False):
                figure.add_trace(
                    go.Scatter(
                        x=series.days,
                        y=series.rates,
                        customdata=series.counts,
                        mode="lines",
                        name=model,
                        legendgroup=model,
                        showlegend=index == 0,
                        line={"color": color, "width": 2},
                        hovertemplate=_hover(signal),
                    ),
                    row=row + 1,
                    col=col + 1,
                )
        figure.update_yaxes(tickformat=".0%", rangemode="tozero", row=row + 1, col=col + 1)
    figure.update_layout(hovermode="x unified")
    return to_json(figure, height=420)


def lineage(checkpoints: Sequence[Checkpoint], champion_id: int | None) -> str:
    """Checkpoints as a left-to-right tree: generation on x, siblings stacked on y."""
    by_id = {c.id: c for c in checkpoints}
    depth: dict[int, int] = {}
    for checkpoint in checkpoints:  # ids ascend, so a parent is placed before its children
        parent = checkpoint.parent_id
        depth[checkpoint.id] = depth.get(parent, -1) + 1 if parent in by_id else 0
    rows_used: dict[int, int] = defaultdict(int)
    position: dict[int, tuple[int, int]] = {}
    for checkpoint in checkpoints:
        level = depth[checkpoint.id]
        position[checkpoint.id] = (level, -rows_used[level])
        rows_used[level] += 1
    figure = go.Figure()
    edge_x: list[float | None] = []
    edge_y: list[float | None] = []
    for checkpoint in checkpoints:
        if checkpoint.parent_id in position:
            px, py = position[checkpoint.parent_id]
            cx, cy = position[checkpoint.id]
            edge_x += [px, cx, None]
            edge_y += [py, cy, None]
    figure.add_trace(
        go.Scatter(
            x=edge_x,
            y=edge_y,
            mode="lines",
            line={"color": "#94a3b8"},
            hoverinfo="skip",
            showlegend=False,
        )
    )
    for kind in sorted({c.kind.value for c in checkpoints}):
        members = [c for c in checkpoints if c.kind.value == kind]
        figure.add_trace(
            go.Scatter(
                x=[position[c.id][0] for c in members],
                y=[position[c.id][1] for c in members],
                mode="markers+text",
                name=kind,
                text=[c.version for c in members],
                textposition="top center",
                marker={
                    "size": [22 if c.id == champion_id else 14 for c in members],
                    "color": KIND_COLORS.get(kind, "#334155"),
                    "line": {
                        "width": [3 if c.id == champion_id else 1 for c in members],
                        "color": "#111827",
                    },
                },
                customdata=[[c.id, c.status.value, _training_text(c.training)] for c in members],
                hovertemplate=(
                    "<b>%{text}</b> (" + kind + ")<br>checkpoint %{customdata[0]}"
                    "<br>status %{customdata[1]}<br>%{customdata[2]}<extra></extra>"
                ),
            )
        )
    generations = max(depth.values(), default=0) + 1
    figure.update_xaxes(
        title="generation (parent → child)",
        tickvals=list(range(generations)),
        showgrid=False,
        zeroline=False,
        range=[-0.5, generations - 0.5],
    )
    figure.update_yaxes(visible=False, range=[-max(rows_used.values(), default=1), 1])
    figure.update_layout(legend={"title": {"text": "kind"}})
    return to_json(figure, height=260 + 40 * max(rows_used.values(), default=1))


def _training_text(training: dict[str, Any]) -> str:
    shown = ("optimizer", "learning_rate", "batch_size", "epochs")
    return ", ".join(f"{k}={training[k]}" for k in shown if k in training) or "no training metadata"


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


def forest(comparisons: Sequence[dict[str, Any]], margin: float | None, metric: str) -> str:
    """Per-cohort change with its interval; regressed red, underpowered hollow grey."""
    labels = [f"{c.get('evaluator', '?')} · {cohort_name(c)}" for c in comparisons]
    colors = [
        "#dc2626" if c.get("regressed") else "#94a3b8" if c.get("underpowered") else "#2563eb"
        for c in comparisons
    ]
    deltas = [c.get("delta") for c in comparisons]
    figure = go.Figure(
        go.Scatter(
            x=deltas,
            y=labels,
            mode="markers",
            marker={
                "color": colors,
                "size": 11,
                "symbol": [
                    "circle-open" if c.get("underpowered") else "circle" for c in comparisons
                ],
            },
            error_x={
                "type": "data",
                "symmetric": False,
                "array": [_gap(c.get("ci_high"), c.get("delta")) for c in comparisons],
                "arrayminus": [_gap(c.get("delta"), c.get("ci_low")) for c in comparisons],
                "color": "#475569",
            },
            customdata=[
                [
                    c.get("baseline"),
                    c.get("candidate"),
                    c.get("ci_low"),
                    c.get("ci_high"),
                    c.get("n"),
                ]
                for c in comparisons
            ],
            hovertemplate=(
                "%{y}<br>Δ %{x:+.3f} [%{customdata[2]:+.3f}, %{customdata[3]:+.3f}]"
                "<br>baseline %{customdata[0]:.3f} → candidate %{customdata[1]:.3f}"
                "<br>n=%{customdata[4]}<extra></extra>"
            ),
            showlegend=False,
        )
    )
    figure.add_vline(x=0, line={"color": "#111827", "width": 1})
    if margin:
        figure.add_vline(
            x=-abs(margin),
            line={"color": "#dc2626", "dash": "dash"},
            annotation_text="non-inferiority margin",
            annotation_position="top",
        )
    figure.update_xaxes(
        title=f"candidate - baseline ({metric.replace('_', ' ')}, with interval)", zeroline=False
    )
    figure.update_yaxes(autorange="reversed")
    return to_json(figure, height=140 + 30 * max(len(comparisons), 1))


def cohort_name(comparison: dict[str, Any]) -> str:
    cohort = comparison.get("cohort")
    if isinstance(cohort, dict):
        return f"{cohort.get('dimension')}={cohort.get('value')}"
    return str(cohort if cohort is not None else comparison.get("cohort_name", "all"))


def _gap(high: Any, low: Any) -> float:
    return float(high) - float(low) if high is not None and low is not None else 0.0


@dataclass(frozen=True)
class Series:
    """One cohort's daily points as arrays: plotly serialises numpy arrays compactly (typed
    base64) and skips its per-element validation, which dominates with a year of days."""

    value: str
    days: npt.NDArray[np.datetime64]
    rates: npt.NDArray[np.float64]
    counts: npt.NDArray[np.float64]  # (n, 2): numerator, denominator
    band_low: npt.NDArray[np.float64] | None
    band_high: npt.NDArray[np.float64] | None


def series_of(points: Sequence[SignalPoint], signal: str, banded: bool = True) -> list[Series]:
    """Points grouped by cohort value (`all` first), each with its trailing band."""
    grouped: dict[str, list[SignalPoint]] = defaultdict(list)
    for point in points:
        grouped[point.value].append(point)
    result = []
    for value in sorted(grouped, key=lambda v: (v != "all", v)):
        members = grouped[value]
        numerators = np.array([p.numerator for p in members], dtype=float)
        denominators = np.array([p.denominator for p in members], dtype=float)
        rates = np.array([np.nan if p.rate is None else p.rate for p in members], dtype=float)
        low, high = (
            trailing_band(numerators, denominators) if banded and _is_rate(signal) else (None, None)
        )
        result.append(
            Series(
                value,
                np.array([p.day for p in members], dtype="datetime64[D]"),
                rates,
                np.column_stack([numerators, denominators]),
                low,
                high,
            )
        )
    return result


def trailing_band(
    numerators: npt.NDArray[np.float64], denominators: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64] | None, npt.NDArray[np.float64] | None]:
    """Each day's band: the range of rates expected at that day's volume if the cohort's rate
    over its previous `window_days` days with data still held (the default monitor's band
    settings, without its split of alpha over the cohorts judged that day). Rollups do not
    store the band, so the chart recomputes it from the same sums. The first `window_days`
    days have no band (NaN)."""
    window = int(DEFAULT_BAND["window_days"])
    if len(numerators) <= window:
        return None, None
    cumulative_num = np.concatenate([[0.0], np.cumsum(numerators)])
    cumulative_den = np.concatenate([[0.0], np.cumsum(denominators)])
    idx = np.arange(window, len(numerators))
    baseline = (cumulative_num[idx] - cumulative_num[idx - window] + _PSEUDO_COUNT) / (
        cumulative_den[idx] - cumulative_den[idx - window] + 1
    )
    low, high = rate_band(baseline, denominators[idx], 1.0 - float(DEFAULT_BAND["alpha"]))
    padding = np.full(window, np.nan)
    return np.concatenate([padding, low]), np.concatenate([padding, high])


def drift(
    points: Sequence[SignalPoint],
    signal: str,
    alert_days: Sequence[tuple[date, str, float, int]],
    changes: Sequence[tuple[str, datetime, str, str]],
    title: str | None = None,
    banded: bool = True,
) -> str:
    """One line per cohort value, its band shaded, alert markers, and a dotted vertical line
    wherever the champion changed."""
    figure = go.Figure()
    all_series = series_of(points, signal, banded)
    for color, series in zip(_cycle(len(all_series)), all_series, strict=True):
        if series.band_low is not None and series.band_high is not None:
            has_band = ~np.isnan(series.band_low)
            figure.add_trace(
                go.Scatter(
                    x=np.concatenate([series.days[has_band], series.days[has_band][::-1]]),
                    y=np.concatenate([series.band_high[has_band], series.band_low[has_band][::-1]]),
                    fill="toself",
                    fillcolor=_translucent(color),
                    line={"width": 0},
                    hoverinfo="skip",
                    name=f"{series.value} band",
                    legendgroup=series.value,
                    showlegend=False,
                )
            )
        figure.add_trace(
            go.Scatter(
                x=series.days,
                y=series.rates,
                customdata=series.counts,
                mode="lines+markers",
                marker={"size": 4},
                line={"color": color, "width": 2},
                name=series.value,
                legendgroup=series.value,
                hovertemplate=_hover(signal),
            )
        )
    if alert_days:
        figure.add_trace(
            go.Scatter(
                x=[day for day, _value, _observed, _id in alert_days],
                y=[observed for _day, _value, observed, _id in alert_days],
                mode="markers",
                marker={"symbol": "x", "size": 13, "color": "#dc2626", "line": {"width": 2}},
                name="alert",
                customdata=[[value, alert_id] for _d, value, _o, alert_id in alert_days],
                hovertemplate=(
                    "alert %{customdata[1]} on %{customdata[0]}<br>%{x|%Y-%m-%d}<extra></extra>"
                ),
            )
        )
    figure.update_layout(
        shapes=[_change_line(when, action) for _model, when, action, _version in changes],
        annotations=[
            {
                "x": when.isoformat(),
                "xref": "x",
                "y": 1,
                "yref": "paper",
                "text": f"{action} {version}",
                "showarrow": False,
                "xanchor": "right",
                "yanchor": "top",
                "font": {"size": 10},
            }
            for _model, when, action, version in changes[:5]
        ],
    )
    figure.update_yaxes(
        title=signal_label(signal) + (" (% of calls)" if _is_rate(signal) else ""),
        tickformat=".1%" if _is_rate(signal) else ".3f",
        rangemode="tozero",
    )
    figure.update_xaxes(title="day (UTC)", type="date")
    figure.update_layout(hovermode="closest", title={"text": title or signal_label(signal)})
    return to_json(figure, height=360)


def _change_line(when: datetime, action: str) -> dict[str, Any]:
    """A dotted vertical line across the plot at a champion change (one layout shape: much
    cheaper than `add_vline`, which validates and copies the layout per call)."""
    return {
        "type": "line",
        "xref": "x",
        "yref": "paper",
        "x0": when.isoformat(),
        "x1": when.isoformat(),
        "y0": 0,
        "y1": 1,
        "line": {"color": "#7c3aed" if action == "promote" else "#dc2626", "dash": "dot"},
    }


def per_signal(
    points: Sequence[SignalPoint],
    axis_signal: str,
    changes: Sequence[Any],
    title: str,
    banded: bool = True,
) -> str:
    """Several signals of the whole population on one chart, one line per signal."""
    relabelled = [replace(p, value=signal_label(p.signal), signal=axis_signal) for p in points]
    return drift(relabelled, axis_signal, [], changes, title, banded)


def reliability(bins: Sequence[CalibrationBin], title: str) -> str:
    """Mean predicted probability against observed frequency per bin, one line per cohort
    value, with the diagonal a calibrated model would follow; the legend carries each
    value's Brier score and ECE over the pooled bins."""
    grouped: dict[str, list[CalibrationBin]] = defaultdict(list)
    for item in bins:
        grouped[item.value].append(item)
    figure = go.Figure(
        go.Scatter(
            x=[0, 1],
            y=[0, 1],
            mode="lines",
            line={"color": "#94a3b8", "dash": "dash", "width": 1},
            name="perfectly calibrated",
            hoverinfo="skip",
        )
    )
    values = sorted(grouped, key=lambda v: (v != "all", v))
    for color, value in zip(_cycle(len(values)), values, strict=True):
        members = grouped[value]
        stats = BinStatistics.from_sums(
            *(
                [getattr(m, name) for m in members]
                for name in ("n", "sum_prob", "sum_label", "sum_prob_sq", "sum_prob_label")
            )
        )
        points = reliability_diagram(stats)
        brier = brier_decomposition(stats).brier
        ece = expected_calibration_error(stats)
        figure.add_trace(
            go.Scatter(
                x=[p.mean_prob for p in points],
                y=[p.observed_freq for p in points],
                customdata=[p.count for p in points],
                mode="lines+markers",
                line={"color": color, "width": 2},
                marker={"size": 7},
                name=f"{value} (Brier {brier:.3f}, ECE {ece:.3f})",
                hovertemplate=(
                    "mean predicted %{x:.3f}<br>observed %{y:.3f}<br>%{customdata:,} events"
                    "<extra>%{fullData.name}</extra>"
                ),
            )
        )
    figure.update_xaxes(title="mean predicted probability", range=[0, 1], tickformat=".1f")
    figure.update_yaxes(
        title="observed frequency (share labelled 1)", range=[0, 1], tickformat=".1f"
    )
    figure.update_layout(hovermode="closest", title={"text": title})
    return to_json(figure, height=380)


def _cycle(n: int) -> list[str]:
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def _translucent(hex_color: str) -> str:
    red, green, blue = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},0.15)"
