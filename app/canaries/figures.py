"""The canary page's charts: per guarded signal, each comparison's confidence sequence over
time, with the margin the decision is taken against."""

from __future__ import annotations

import math

from app.canaries.service import History
from app.drift.signals import signal_label
from app.web.figures import PALETTE, go, to_json, translucent

_LABELS = {"served": "served share", "shadow": "shadow pairs"}


def interval_over_time(history: History, signal: str, cohort: int) -> str | None:
    """The band between the lower and upper bound of candidate - champion after each time
    bucket, the estimate inside it, and the margin: the canary rolls back once a band's
    lower edge is above the margin and may promote once every upper edge is below it.
    None when no comparison has a bound yet on this signal and cohort."""
    figure = go.Figure()
    margin = history.plan.margin(signal)
    shown: list[float] = []
    estimates: list[float] = []
    for color, bounds in zip(PALETTE, history.bounds, strict=False):
        if signal not in bounds.signals:
            continue
        s = bounds.signals.index(signal)
        # A bound of -1 or 1 says nothing yet; leave a gap instead of stretching the axis.
        lower = [None if v <= -1.0 else float(v) for v in bounds.lower[:, cohort, s]]
        upper = [None if v >= 1.0 else float(v) for v in bounds.upper[:, cohort, s]]
        estimate = [None if math.isnan(v) else float(v) for v in bounds.difference[:, cohort, s]]
        if all(v is None for v in (*lower, *upper)):
            continue  # no bound yet on this comparison: no empty legend entries
        shown += [v for v in (*lower, *upper, *estimate) if v is not None]
        estimates += [abs(v) for v in estimate if v is not None]
        name = _LABELS[bounds.comparison]
        hover = (
            f"{name}<br>%{{x|%Y-%m-%d %H:%M}} UTC<br>%{{y:+.4f}}<extra>%{{fullData.name}}</extra>"
        )
        figure.add_trace(
            go.Scatter(
                x=history.times,
                y=upper,
                mode="lines",
                line={"color": color, "width": 1},
                name=f"{name}: upper bound",
                legendgroup=name,
                hovertemplate=hover,
            )
        )
        figure.add_trace(
            go.Scatter(
                x=history.times,
                y=lower,
                mode="lines",
                line={"color": color, "width": 1},
                fill="tonexty",
                fillcolor=translucent(color),
                name=f"{name}: lower bound",
                legendgroup=name,
                hovertemplate=hover,
            )
        )
        figure.add_trace(
            go.Scatter(
                x=history.times,
                y=estimate,
                mode="lines",
                line={"color": color, "width": 2, "dash": "dot"},
                name=f"{name}: candidate - champion",
                legendgroup=name,
                hovertemplate=hover,
            )
        )
    if not shown:
        return None
    figure.add_hline(
        y=margin,
        line={"color": "#dc2626", "dash": "dash"},
        annotation_text=f"margin {margin:+g}",  # a margin of 0.0004 is not +0.000
        annotation_position="top left",
    )
    figure.add_hline(y=0, line={"color": "#111827", "width": 1})
    # Early bounds are wide: the axis keeps the estimates and the margin in view and cuts
    # the rest of the band off instead of squashing them.
    span = max(8 * margin, 2 * max(estimates, default=0.0))
    low, high = max(min(shown), -span), min(max(max(shown), 2 * margin), span)
    figure.update_yaxes(
        title="candidate - champion (rate)",
        range=[low - margin / 2, high + margin / 2],
        tickformat="+.3f",
    )
    figure.update_layout(title={"text": signal_label(signal), "font": {"size": 14}})
    return to_json(figure, height=300)
