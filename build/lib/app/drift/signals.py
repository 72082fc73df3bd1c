"""The signals Plumbline computes per day and cohort, and how each one is shown.

The bottom of the drift package: rollup, monitors, alerts, queries and figures all import
these names, and this module imports nothing of theirs (so no cycle can form through it).
A rate signal is a count of events meeting its numerator condition over those meeting its
denominator condition, evaluated per event row `e` in SQL."""

from __future__ import annotations

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
CALIBRATION_SIGNALS = ("brier_score", "ece")
ALL_SIGNALS = (*RATE_SIGNALS, *CALIBRATION_SIGNALS)
# Monitored by default on every model, without configuration (the seed's four).
DEFAULT_SIGNALS = ("eval_fail_rate", "fallback_rate", "refusal_rate", "thumbs_down_rate")
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


def signal_label(signal: str) -> str:
    return SIGNAL_LABELS.get(signal, signal)


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
