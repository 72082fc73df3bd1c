"""Drift figures: signal series with the bands the daily job judged them by, the frozen
reference window, where alerts opened and resolved, champion changes; the CUSUM statistics
against their thresholds; the overview's small multiples, and the reliability diagram.

The bands come from the stored verdicts (drift_judgements), never recomputed here, so the
chart shows exactly what the job decided on."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from app.drift.queries import CalibrationBin, JudgementPoint, SignalPoint
from app.drift.signals import CONTINUOUS_SIGNALS, RATE_SIGNALS, format_value, signal_label
from app.stats.calibration import (
    BinStatistics,
    brier_decomposition,
    expected_calibration_error,
    reliability_diagram,
)
from app.web.figures import (
    PALETTE,
    digits_apart,
    go,
    palette_cycle,
    plotly_subplots,
    to_json,
    translucent,
)


def _is_rate(signal: str) -> bool:
    return signal.endswith("_rate")


def _hover(signal: str) -> str:
    if _is_rate(signal):
        value, counts = "%{y:.1%}", "%{customdata[0]:,.0f} of %{customdata[1]:,} calls"
    elif signal in CONTINUOUS_SIGNALS:
        value, counts = f"%{{y:{_tick_format(signal)}}}", "%{customdata[1]:,} calls"
    else:
        value, counts = "%{y:.4f}", "%{customdata[1]:,} scored calls"
    return f"%{{x|%Y-%m-%d}}<br>{value}<br>{counts}<extra>%{{fullData.name}}</extra>"


def _tick_format(signal: str) -> str:
    """d3 format of the signal's values: percent, dollars (cost per call is a fraction of a
    cent, so significant digits), whole ms and tokens, or three decimals."""
    if _is_rate(signal):
        return ".1%"
    if signal.startswith("cost_"):
        return "$.3~g"
    return ",.0f" if signal in CONTINUOUS_SIGNALS else ".3f"


def alert_numbers(
    signal: str, observed: float, low: float | None, high: float | None
) -> tuple[str, str, str]:
    """An alert's observed value and band edges as the tables and the alert page show them.
    A rate takes as many decimals (one to four) as it needs to read apart from each edge it
    differs from: at one decimal an observed 4.96% above a band ending at 4.95% read
    '5.0%' against a band up to '5.0%', an alert that looked in band."""
    if signal not in RATE_SIGNALS:
        return (
            format_value(signal, observed),
            format_value(signal, low),
            format_value(signal, high),
        )
    digits = digits_apart(observed, (low, high), 1, 4, "%")

    def shown(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.{digits}%}"

    return shown(observed), shown(low), shown(high)


BandKey = tuple[str, date]  # (cohort value, day)


def judged_bands(
    verdicts: Sequence[JudgementPoint],
) -> dict[BandKey, tuple[float | None, float | None]]:
    """Each judged day's band by (cohort value, day), from the stored verdicts."""
    return {(v.value, v.day): (v.band_low, v.band_high) for v in verdicts}


def small_multiples(points: Sequence[SignalPoint], signals: Sequence[str]) -> str:
    """One panel per seed signal, one line per model: the overview's glance at last month."""
    figure = plotly_subplots.make_subplots(
        rows=2, cols=2, subplot_titles=[signal_label(s) for s in signals], vertical_spacing=0.18
    )
    models = sorted({p.model for p in points})
    # Every model gets a line: past the palette its colour repeats with another dash.
    styles = ("solid", "dash", "dot", "dashdot")
    dashes = [styles[(i // len(PALETTE)) % len(styles)] for i in range(len(models))]
    for index, signal in enumerate(signals):
        row, col = divmod(index, 2)
        for color, dash, model in zip(palette_cycle(len(models)), dashes, models, strict=True):
            chosen = [p for p in points if p.signal == signal and p.model == model]
            for series in series_of(chosen, signal):
                figure.add_trace(
                    go.Scatter(
                        x=series.days,
                        y=series.rates,
                        customdata=series.counts,
                        mode="lines",
                        name=model,
                        legendgroup=model,
                        showlegend=index == 0,
                        line={"color": color, "width": 2, "dash": dash},
                        hovertemplate=_hover(signal),
                    ),
                    row=row + 1,
                    col=col + 1,
                )
        figure.update_yaxes(tickformat=".0%", rangemode="tozero", row=row + 1, col=col + 1)
    figure.update_layout(hovermode="x unified")
    return to_json(figure, height=420)


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


def series_of(
    points: Sequence[SignalPoint],
    signal: str,
    bands: dict[BandKey, tuple[float | None, float | None]] | None = None,
) -> list[Series]:
    """Points grouped by cohort value (`all` first), each with the band it was judged by (NaN
    on days not judged, or untested; an open side is drawn to the axis: 0 or the value)."""
    grouped: dict[str, list[SignalPoint]] = defaultdict(list)
    for point in points:
        grouped[point.value].append(point)
    result = []
    for value in sorted(grouped, key=lambda v: (v != "all", v)):
        members = grouped[value]
        numerators = np.array([p.numerator for p in members], dtype=float)
        denominators = np.array([p.denominator for p in members], dtype=float)
        rates = np.array([np.nan if p.rate is None else p.rate for p in members], dtype=float)
        low = high = None
        if bands:
            edges = [bands.get((value, p.day), (None, None)) for p in members]
            if any(e != (None, None) for e in edges):
                known = [e[1] is not None or e[0] is not None for e in edges]
                low = np.array([e[0] if e[0] is not None else 0.0 for e in edges], dtype=float)
                high = np.array(
                    [e[1] if e[1] is not None else r for e, r in zip(edges, rates, strict=True)],
                    dtype=float,
                )
                low[~np.array(known)] = np.nan
                high[~np.array(known)] = np.nan
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


@dataclass(frozen=True)
class ReferenceSpan:
    """A frozen reference's window, as the chart shades it."""

    first_day: date
    last_day: date
    label: str


@dataclass(frozen=True)
class AlertMark:
    """Where an alert opened (and resolved, when it did) on the chart."""

    alert_id: int
    value: str
    opened: date
    observed: float
    resolved: date | None


def drift(
    points: Sequence[SignalPoint],
    signal: str,
    alerts: Sequence[AlertMark],
    changes: Sequence[tuple[str, datetime, str, str]],
    title: str | None = None,
    bands: dict[BandKey, tuple[float | None, float | None]] | None = None,
    references: Sequence[ReferenceSpan] = (),
) -> str:
    """One line per cohort value, the band it was judged by shaded, the frozen reference
    window(s) shaded in grey, alert markers (x where one opened, o where it resolved), and a
    dotted vertical line wherever the champion changed."""
    figure = go.Figure()
    all_series = series_of(points, signal, bands)
    for color, series in zip(palette_cycle(len(all_series)), all_series, strict=True):
        if series.band_low is not None and series.band_high is not None:
            has_band = ~np.isnan(series.band_low)
            figure.add_trace(
                go.Scatter(
                    x=np.concatenate([series.days[has_band], series.days[has_band][::-1]]),
                    y=np.concatenate([series.band_high[has_band], series.band_low[has_band][::-1]]),
                    fill="toself",
                    fillcolor=translucent(color),
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
    if alerts:
        figure.add_trace(
            go.Scatter(
                x=[a.opened for a in alerts],
                y=[_opened_at(all_series, a) for a in alerts],
                mode="markers",
                marker={"symbol": "x", "size": 13, "color": "#dc2626", "line": {"width": 2}},
                name="alert opened",
                customdata=[[a.value, a.alert_id] for a in alerts],
                hovertemplate=(
                    "alert %{customdata[1]} opened on %{customdata[0]}<br>%{x|%Y-%m-%d}"
                    "<extra></extra>"
                ),
            )
        )
    resolved = [(a, _value_on(all_series, a.value, a.resolved)) for a in alerts if a.resolved]
    if resolved:
        figure.add_trace(
            go.Scatter(
                x=[a.resolved for a, _ in resolved],
                y=[y for _, y in resolved],
                mode="markers",
                marker={
                    "symbol": "circle-open",
                    "size": 13,
                    "color": "#16a34a",
                    "line": {"width": 2},
                },
                name="alert resolved",
                customdata=[[a.value, a.alert_id] for a, _ in resolved],
                hovertemplate=(
                    "alert %{customdata[1]} resolved on %{customdata[0]}<br>%{x|%Y-%m-%d}"
                    "<extra></extra>"
                ),
            )
        )
    figure.update_layout(
        shapes=[_reference_rect(r) for r in references]
        + [_change_line(when, action) for _model, when, action, _version in changes],
        annotations=[
            {
                "x": r.first_day.isoformat(),
                "xref": "x",
                "y": 0,
                "yref": "paper",
                "text": r.label,
                "showarrow": False,
                "xanchor": "left",
                "yanchor": "bottom",
                "font": {"size": 10, "color": "#475569"},
            }
            for r in references
        ]
        + [
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
        tickformat=_tick_format(signal),
        rangemode="tozero",
    )
    figure.update_xaxes(title="day (UTC)", type="date")
    figure.update_layout(hovermode="closest", title={"text": title or signal_label(signal)})
    return to_json(figure, height=360)


def _opened_at(all_series: Sequence[Series], alert: AlertMark) -> float:
    """Where an alert's opening marker sits: the cohort's drawn value that day (a rate of 0
    included), else the value the alert observed."""
    drawn = _value_on(all_series, alert.value, alert.opened)
    return alert.observed if drawn is None else drawn


def _value_on(all_series: Sequence[Series], value: str, day: date | None) -> float | None:
    """The cohort's value on a day (None when it has no point that day)."""
    for series in all_series:
        if series.value == value and day is not None:
            hit = np.flatnonzero(series.days == np.datetime64(day, "D"))
            if hit.size:
                return float(series.rates[hit[0]])
    return None


def _reference_rect(reference: ReferenceSpan) -> dict[str, Any]:
    """The frozen reference's days, shaded behind the lines."""
    return {
        "type": "rect",
        "xref": "x",
        "yref": "paper",
        "x0": reference.first_day.isoformat(),
        "x1": reference.last_day.isoformat(),
        "y0": 0,
        "y1": 1,
        "fillcolor": "rgba(100, 116, 139, 0.12)",
        "line": {"width": 0},
        "layer": "below",
    }


def cusum(verdicts: Sequence[JudgementPoint], signal: str, title: str) -> str:
    """Per cohort value, the CUSUM statistic after each judged day and its threshold h
    (dashed; an alert opens above it). Untested days (h unknown) have no threshold point."""
    figure = go.Figure()
    grouped: dict[str, list[JudgementPoint]] = defaultdict(list)
    for verdict in verdicts:
        grouped[verdict.value].append(verdict)
    values = sorted(grouped, key=lambda v: (v != "all", v))
    for color, value in zip(palette_cycle(len(values)), values, strict=True):
        members = grouped[value]
        days = np.array([m.day for m in members], dtype="datetime64[D]")
        figure.add_trace(
            go.Scatter(
                x=days,
                y=np.array([m.cusum for m in members], dtype=float),
                mode="lines+markers",
                marker={"size": 4},
                line={"color": color, "width": 2},
                name=f"{value} CUSUM",
                legendgroup=value,
                hovertemplate="%{x|%Y-%m-%d}<br>S = %{y:.2f}<extra>%{fullData.name}</extra>",
            )
        )
        figure.add_trace(
            go.Scatter(
                x=days,
                y=np.array(
                    [np.nan if m.cusum_h is None else m.cusum_h for m in members], dtype=float
                ),
                mode="lines",
                line={"color": color, "width": 1, "dash": "dash"},
                name=f"{value} threshold",
                legendgroup=value,
                hovertemplate="%{x|%Y-%m-%d}<br>h = %{y:.2f}<extra>%{fullData.name}</extra>",
            )
        )
    figure.update_yaxes(title="CUSUM statistic (predictive SDs)", rangemode="tozero")
    figure.update_xaxes(title="day (UTC)", type="date")
    figure.update_layout(hovermode="closest", title={"text": title})
    return to_json(figure, height=300)


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
) -> str:
    """Several signals of the whole population on one chart, one line per signal."""
    relabelled = [replace(p, value=signal_label(p.signal), signal=axis_signal) for p in points]
    return drift(relabelled, axis_signal, [], changes, title)


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
    for color, value in zip(palette_cycle(len(values)), values, strict=True):
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
