"""Drift figures: signal series with their bands, alert marks and champion changes,
the overview's small multiples, and the reliability diagram."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from app.drift.monitors import DEFAULT_BAND
from app.drift.queries import CalibrationBin, SignalPoint
from app.drift.signals import signal_label
from app.stats.calibration import (
    BinStatistics,
    brier_decomposition,
    expected_calibration_error,
    reliability_diagram,
)
from app.stats.rates import rate_band, smoothed_rate
from app.web.figures import PALETTE, go, palette_cycle, plotly_subplots, to_json, translucent


def _is_rate(signal: str) -> bool:
    return signal.endswith("_rate")


def _hover(signal: str) -> str:
    value = "%{y:.1%}" if _is_rate(signal) else "%{y:.4f}"
    counts = "%{customdata[0]:,.0f} of %{customdata[1]:,} calls"
    return f"%{{x|%Y-%m-%d}}<br>{value}<br>{counts}<extra>%{{fullData.name}}</extra>"


def small_multiples(points: Sequence[SignalPoint], signals: Sequence[str]) -> str:
    """One panel per seed signal, one line per model: the overview's glance at last month."""
    figure = plotly_subplots.make_subplots(
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
    baseline = smoothed_rate(
        cumulative_num[idx] - cumulative_num[idx - window],
        cumulative_den[idx] - cumulative_den[idx - window],
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
