"""The dashboard's chart toolkit: one look (template, palette) and one way to hand a Plotly
figure to the page as JSON (rendered by static/js/app.js). Each noun's figures.py builds on it.

Every chart has axis titles with units and hover text with the numbers behind the point, so a
chart answers "how much, out of how many" without a second query."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from typing import TYPE_CHECKING

from app.stats.lazy import LazyModule

# Plotly loads when the first figure is built, not when the app starts: a process that only
# ingests never needs it (see app/stats/lazy.py). Every figures.py takes `go` from here.
if TYPE_CHECKING:
    import plotly.graph_objects as go
    import plotly.subplots as plotly_subplots
else:
    go = LazyModule("plotly.graph_objects")
    plotly_subplots = LazyModule("plotly.subplots")

__all__ = [
    "PALETTE",
    "digits_apart",
    "go",
    "palette_cycle",
    "percent_text",
    "plotly_subplots",
    "to_json",
    "translucent",
]

PALETTE = ("#2563eb", "#d97706", "#059669", "#dc2626", "#7c3aed", "#0891b2", "#be185d", "#4d7c0f")


_FONT = {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12}


# A plain dict, so importing this module builds no plotly object; _template() makes it one.
_TEMPLATE = {
    "layout": {
        "font": _FONT,
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "xaxis": {"gridcolor": "#e5e7eb", "zerolinecolor": "#cbd5e1", "automargin": True},
        "yaxis": {"gridcolor": "#e5e7eb", "zerolinecolor": "#cbd5e1", "automargin": True},
        "hoverlabel": {"font": _FONT},
        "legend": {"orientation": "h", "y": -0.2},
        "colorway": list(PALETTE),
    }
}


@cache
def _template() -> go.layout.Template:
    """The look, built once on the first figure. Given a Template, update_layout replaces the
    figure's template; given a plain dict it merges it into plotly's default "plotly" template
    instead, which put ~6 KB of that template (and its title and shape defaults) into every
    figure and cost ~20 ms of validation per figure."""
    return go.layout.Template(_TEMPLATE)


def to_json(figure: go.Figure, height: int = 320) -> str:
    figure.update_layout(
        template=_template(), height=height, margin={"l": 56, "r": 16, "t": 36, "b": 48}
    )
    return str(figure.to_json())


def palette_cycle(n: int) -> list[str]:
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def translucent(hex_color: str) -> str:
    red, green, blue = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({red},{green},{blue},0.15)"


def digits_apart(
    value: float, others: Sequence[float | None], fewest: int, most: int, kind: str
) -> int:
    """The fewest decimals (`fewest` to `most`) at which `value`, formatted as `kind` ("%" or
    "f"), reads apart from each of `others` it differs from: a number that decides something
    must not read equal to the limit it crossed."""
    differing = [other for other in others if other is not None and other != value]
    return next(
        (
            digits
            for digits in range(fewest, most + 1)
            if all(f"{o:.{digits}{kind}}" != f"{value:.{digits}{kind}}" for o in differing)
        ),
        most,
    )


def percent_text(value: float, digits: int = 1) -> str:
    """A share as text with `digits` decimals, or more (up to 4) where rounding would make it
    read 0% or 100% when it is neither: 99.96% pass is not "100.0%", and the one failure a
    cohort has is exactly what the reader looks for."""
    return f"{value:.{digits_apart(value, (0.0, 1.0), digits, 4, '%')}%}"
