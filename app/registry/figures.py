"""The lineage figure of a model's checkpoints."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from app.models import Checkpoint
from app.web.figures import go, to_json

KIND_COLORS = {
    "base": "#64748b",
    "full": "#2563eb",
    "lora": "#059669",
    "rlhf": "#7c3aed",
    "quantized": "#d97706",
    "api": "#0891b2",
}


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
