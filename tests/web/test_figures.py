"""The chart toolkit's one look: every figure carries exactly the dashboard's template."""

from __future__ import annotations

import json

from app.web.figures import PALETTE, go, to_json


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
