"""The chart toolkit's one look (every figure carries exactly the dashboard's template), and
where the drift chart puts its markers."""

from __future__ import annotations

import json
from datetime import date, timedelta

from app.drift.figures import AlertMark, drift
from app.drift.queries import SignalPoint
from app.evaluations.figures import HeatmapCell, cohort_heatmap
from app.web.figures import PALETTE, digits_apart, go, percent_text, to_json
from app.web.rendering import templates


def test_a_figure_carries_only_the_dashboard_template_not_plotlys_default() -> None:
    figure = go.Figure(go.Scatter(x=[1, 2], y=[0.1, 0.2]))
    figure.update_layout(title={"text": "a title"})
    template = json.loads(to_json(figure, height=200))["layout"]["template"]
    # Merged into plotly's default template, the figure would also carry its trace defaults
    # ("data") and its layout defaults, such as a left-aligned title and shape colours.
    assert set(template) == {"layout"}
    assert template["layout"]["colorway"] == list(PALETTE)
    assert "title" not in template["layout"]
    assert "shapedefaults" not in template["layout"]


def test_each_figure_gets_its_own_copy_of_the_template() -> None:
    first, second = go.Figure(), go.Figure()
    to_json(first)
    first.layout.template.layout.paper_bgcolor = "#000000"
    layout = json.loads(to_json(second))["layout"]
    assert layout["template"]["layout"]["paper_bgcolor"] == "#ffffff"


def test_an_alert_opened_on_a_day_at_zero_is_marked_at_zero_not_at_its_observed_value() -> None:
    """A lower-side alert can open on a day whose rate is 0: its marker sits on that point,
    where 0 used to count as "no point" and the marker jumped to the alert's stored value."""
    opened = date(2026, 11, 20)
    points = [
        SignalPoint("m", "refusal_rate", "all", opened - timedelta(days=1), 0.05, 5, 100),
        SignalPoint("m", "refusal_rate", "all", opened, 0.0, 0, 100),
    ]
    figure = json.loads(drift(points, "refusal_rate", [AlertMark(1, "all", opened, 0.3, None)], []))
    [marker] = [trace for trace in figure["data"] if trace.get("name") == "alert opened"]
    assert marker["y"] == [0.0]


def test_a_deciding_number_takes_the_decimals_it_needs_to_read_apart_from_its_limit() -> None:
    """A CUSUM at 5.004 past h = 4.998 read "S = 5.00 against h = 5.00" at two decimals."""
    assert digits_apart(5.004, (4.998, 2.499), 2, 6, "f") == 3
    assert digits_apart(9.0, (6.4, 3.2), 2, 6, "f") == 2
    assert digits_apart(0.0496, (None, 0.0495), 1, 4, "%") == 2
    assert digits_apart(0.05, (0.05,), 1, 4, "%") == 1  # equal values stay as few as asked


def test_a_share_that_is_not_all_or_none_never_reads_100_or_0_percent() -> None:
    """A cohort with one failure in 2,500 rows read "100.0%" pass in the tables and "100%" in
    the heatmap: the one failure is what the reader looks for."""
    assert percent_text(0.9996) == "99.96%"
    assert percent_text(0.99996) == "99.996%"
    assert percent_text(0.0004) == "0.04%"
    assert percent_text(1.0) == "100.0%"
    assert percent_text(0.0) == "0.0%"
    assert percent_text(0.5) == "50.0%"
    assert percent_text(0.996, 0) == "99.6%"
    assert templates.env.filters["percent"](0.9996) == "99.96%"
    assert templates.env.filters["percent"](None) == "\u2013"


def test_heatmap_cells_round_like_the_tables() -> None:
    cells = [
        HeatmapCell("exact", "all", 0.996, 0.996, 250, 250, 0),
        HeatmapCell("exact", "route=a", 1.0, 1.0, 10, 10, 0),
        HeatmapCell("exact", "route=b", None, None, 3, 3, 3),
    ]
    [heatmap] = json.loads(cohort_heatmap(cells, "pass_rate"))["data"]
    assert heatmap["text"] == [["99.6%", "100%", None]]
    assert heatmap["texttemplate"] == "%{text}"
