"""The signals Plumbline computes per day and cohort, and how each one is shown.

The bottom of the drift package: rollup, monitors, alerts, queries and figures all import
these names, and this module imports nothing of theirs (so no cycle can form through it).
A rate signal is a count of events meeting its numerator condition over those meeting its
denominator condition, evaluated per event row `e` in SQL."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

COLUMN_DIMENSIONS = ("route", "prompt_version", "user_segment")
# signal -> (numerator condition, denominator condition), evaluated per event row `e`.
RATE_SIGNALS: dict[str, tuple[str, str]] = {
    "eval_fail_rate": ("NOT e.eval_passed", "e.eval_passed IS NOT NULL"),
    "fallback_rate": ("e.fallback", "e.fallback IS NOT NULL"),
    "refusal_rate": ("e.refusal", "e.refusal IS NOT NULL"),
    "thumbs_down_rate": ("e.feedback = -1", "e.feedback IS NOT NULL"),
    "over_refusal_rate": (
        "e.refusal AND NOT e.should_refuse",
        "e.refusal IS NOT NULL AND NOT e.should_refuse",
    ),
    "under_refusal_rate": (
        "NOT e.refusal AND e.should_refuse",
        "e.refusal IS NOT NULL AND e.should_refuse",
    ),
}
# Feedback is one user's rating of a trace, and ingest copies it onto every call of the
# trace that took it, so an agent trace of six calls rated down carries six ratings. Per-trace
# signals count each rated trace once. The daily scan counts them on carrier events
# (DAILY_RATE_SIGNALS): ingest and POST /feedback keep, per trace and checkpoint, the rating
# on one event (`carried_feedback`), the trace's latest rated served call there, so the scan
# stays a plain hash aggregate over one more column; a trace is counted on that call's day
# and cohorts, once per checkpoint that served rated calls of it (docs/statistics.md §8.10).
# Counting rated traces in the scan itself (COUNT DISTINCT trace_id) stopped PostgreSQL
# hash-aggregating (2.8x to 8.4x a bare GROUP BY, bench/drift.py). The canaries rank a
# window's rated calls themselves and count each trace once on the arm of its last rated call
# (app/canaries/queries.py), reading RATE_SIGNALS' per-call `feedback` on that one row: the
# same call as the carrier when one checkpoint served the trace's rated calls.
PER_TRACE_SIGNALS = frozenset({"thumbs_down_rate"})


# The daily scan's definitions: RATE_SIGNALS', but a per-trace signal read on its carrier
# events only (`carried_feedback`, NULL on every other event), so each rated trace counts once
# per checkpoint, with the same aggregates as a per-call signal (COUNT(column) and one test).
DAILY_RATE_SIGNALS: dict[str, tuple[str, str]] = {
    **RATE_SIGNALS,
    "thumbs_down_rate": ("e.carried_feedback = -1", "e.carried_feedback IS NOT NULL"),
}


def rate_counts(
    signal: str,
    within: str | None = None,
    definitions: dict[str, tuple[str, str]] = RATE_SIGNALS,
) -> tuple[str, str]:
    """SQL aggregates counting a rate signal's numerator and denominator over event rows `e`
    of a group (only rows meeting `within`, when given), as `definitions` reads the signal
    (DAILY_RATE_SIGNALS for the daily scan). A bare `IS NOT NULL` is counted as
    COUNT(column), which is cheaper."""

    def count(condition: str) -> str:
        if within is not None:
            condition = f"({within}) AND ({condition})"
        bare = re.fullmatch(r"(e\.\w+) IS NOT NULL", condition)
        return f"COUNT({bare.group(1)})" if bare else f"COUNT(*) FILTER (WHERE {condition})"

    numerator, denominator = definitions[signal]
    return count(numerator), count(denominator)


CALIBRATION_SIGNALS = ("brier_score", "ece")
# Continuous, skewed per-event values: metric -> (SQL expression of x > 0, condition for the
# event to carry one), per event row `e`; tokens as 1 + total tokens, so a zero-token answer
# has a log. Judged on the log scale.
_HAS_TOKENS = "(e.input_tokens IS NOT NULL OR e.output_tokens IS NOT NULL)"
CONTINUOUS_METRICS: dict[str, tuple[str, str]] = {
    "latency": ("e.latency_ms", "e.latency_ms > 0"),
    # In double precision: two int4 counts near their bound (ingest allows 2**31 - 1 each)
    # would overflow int4 addition and fail the day's whole scan on PostgreSQL.
    "tokens": (
        "1 + CAST(COALESCE(e.input_tokens, 0) AS DOUBLE PRECISION) + COALESCE(e.output_tokens, 0)",
        _HAS_TOKENS,
    ),
    # The call's cost in nano-dollars (1000 x USD per million tokens x tokens), plus one so
    # that a zero-cost call has a log: one nano-dollar is negligible next to any real call
    # (300 tokens at $0.02 per million cost 6,000), so the +1 flattens no shift. From the
    # checkpoint's prices, row `p` of PRICES_JOIN; calls of an unpriced checkpoint carry none.
    "cost": (
        "1 + 1000 * (COALESCE(p.usd_per_million_input_tokens * e.input_tokens, 0)"
        " + COALESCE(p.usd_per_million_output_tokens * e.output_tokens, 0))",
        f"p.usd_per_million_input_tokens IS NOT NULL AND {_HAS_TOKENS}",
    ),
}
PRICES_JOIN = "LEFT JOIN checkpoints p ON p.project_id = :project_id AND p.id = e.checkpoint_id"
"""What the cost metric's SQL needs beside the event row `e`: its checkpoint's prices."""
PRICED_METRICS = ("cost",)
# x as shown = (exp(log x) - offset) x scale: tokens and cost are logged as 1 + x, and cost
# is logged in nano-dollars but shown in dollars.
_SHOWN_FROM_LOG: dict[str, tuple[float, float]] = {
    "latency": (0.0, 1.0),
    "tokens": (1.0, 1.0),
    "cost": (1.0, 1e-9),
}
QUANTILES = ("p50", "p95")
# latency_p50, latency_p95, tokens_p50, tokens_p95, cost_p50, cost_p95
CONTINUOUS_SIGNALS = tuple(f"{m}_{q}" for m in CONTINUOUS_METRICS for q in QUANTILES)
PRICED_SIGNALS = tuple(f"{m}_{q}" for m in PRICED_METRICS for q in QUANTILES)
ALL_SIGNALS = (*RATE_SIGNALS, *CALIBRATION_SIGNALS, *CONTINUOUS_SIGNALS)
# Monitored by default on every model, without configuration: every signal, each alerting in
# its harmful direction (all of them: up) against the model's frozen reference.
DEFAULT_SIGNALS = ALL_SIGNALS
# The seed's four headline rates: the overview's glance at every model.
HEADLINE_SIGNALS = ("eval_fail_rate", "fallback_rate", "refusal_rate", "thumbs_down_rate")
SIGNAL_LABELS = {
    "eval_fail_rate": "Eval failure rate",
    "fallback_rate": "Fallback rate",
    "refusal_rate": "Refusal rate",
    "thumbs_down_rate": "Thumbs-down rate",
    "over_refusal_rate": "Over-refusal rate",
    "under_refusal_rate": "Under-refusal rate",
    "brier_score": "Brier score",
    "ece": "Calibration error (debiased)",
    "latency_p50": "Latency p50 (ms)",
    "latency_p95": "Latency p95 (ms)",
    "tokens_p50": "Tokens p50",
    "tokens_p95": "Tokens p95",
    "cost_p50": "Cost per call p50 (USD)",
    "cost_p95": "Cost per call p95 (USD)",
}


def signal_label(signal: str) -> str:
    return SIGNAL_LABELS.get(signal, signal)


def shown_from_log(signal: str, log_value: float) -> float:
    """A latency, token or cost signal's log-scale value (what the judge and the rollup's
    log-normal fit work on) on the scale the signal is shown in: ms, tokens, USD.

    A band edge can lie beyond a double's range (e^709.78) when the reference days were wild
    (latencies of 1e-300 ms next to seconds): it is shown as e^709, past any real value,
    instead of failing the day with an OverflowError."""
    offset, scale = _SHOWN_FROM_LOG[signal.rsplit("_", 1)[0]]
    return (math.exp(min(log_value, _LARGEST_LOG)) - offset) * scale


_LARGEST_LOG = 709.0


@dataclass(frozen=True)
class SignalRow:
    model_id: int
    checkpoint_id: int
    signal: str
    dimension: str
    value: str
    numerator: float
    denominator: int
    rate: float | None
    extra: dict[str, Any] | None = None


def format_dollars(value: float) -> str:
    """Three significant digits in fixed point ($0.000195, $0.00000600, $1.50): a call costs
    a fraction of a cent, and an exponent would hide how small."""
    decimals = 2 if value <= 0 else max(2, 2 - math.floor(math.log10(value)))
    return f"${value:,.{decimals}f}"


def format_value(signal: str, value: float | None) -> str:
    """A signal's value as the pages show it: a percentage for rates, milliseconds, tokens or
    dollars (three significant digits) for latency, token and cost signals, three decimals
    for calibration."""
    if value is None:
        return "n/a"
    if signal in RATE_SIGNALS:
        return f"{value:.1%}"
    if signal.startswith("latency_"):
        return f"{value:,.0f} ms"
    if signal.startswith("tokens_"):
        return f"{value:,.0f} tokens"
    if signal.startswith("cost_"):
        return format_dollars(value)
    return f"{value:.3f}"
