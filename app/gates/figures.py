"""The gate page's forest plot: one interval per evaluator x cohort against the margin."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.web.figures import go, to_json


def forest(comparisons: Sequence[dict[str, Any]], policy: dict[str, Any]) -> str:
    """Per-cohort change with its interval; regressed red, underpowered hollow grey; a red
    tick at each comparison's own margin."""
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
    # Each comparison is decided at its own margin (a cohort's override, its risk level's,
    # or the policy's): a mark per row, so a drop beyond a stricter margin is never drawn
    # inside a looser one.
    margins = [margin_of(c, policy) for c in comparisons]
    marked = [(label, m) for label, m in zip(labels, margins, strict=True) if m is not None]
    if marked:
        figure.add_trace(
            go.Scatter(
                x=[-m for _, m in marked],
                y=[label for label, _ in marked],
                mode="markers",
                name="margin",
                marker={"color": "#dc2626", "size": 18, "symbol": "line-ns-open"},
                hovertemplate="%{y}<br>non-inferiority margin %{x:+.3f}<extra></extra>",
                showlegend=False,
            )
        )
    metric = str(policy.get("metric", "pass_rate"))
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


def margin_of(comparison: dict[str, Any], policy: dict[str, Any]) -> float | None:
    """The margin the comparison was decided at; gates stored before comparisons carried
    it fall back to the policy's, by the cohort's risk level first."""
    if comparison.get("margin") is not None:
        return float(comparison["margin"])
    by_risk = policy.get("risk_margins") or {}
    margin = by_risk.get(comparison.get("risk"), policy.get("margin"))
    return abs(float(margin)) if margin else None


def bound_digits(comparison: dict[str, Any], margin: float | None) -> int:
    """Decimals (three to six) that read each bound of the change apart from -margin, the
    line it is judged against: at three, a lower bound of -0.0204 (beyond a 0.02 margin) and
    one of -0.0196 (inside it) both read -0.020. Rounding is monotone, so bounds read apart
    also read in the right order."""
    if margin is None:
        return 3
    line = -abs(margin)
    bounds = [
        float(b)
        for b in (comparison.get("ci_low"), comparison.get("ci_high"))
        if b is not None and float(b) != line
    ]
    return next((d for d in range(3, 7) if all(f"{b:.{d}f}" != f"{line:.{d}f}" for b in bounds)), 6)


def _gap(high: Any, low: Any) -> float:
    return float(high) - float(low) if high is not None and low is not None else 0.0
