"""Classification: the predicted label is right; with a probability, how calibrated it was."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from plumbline.evals.base import (
    PARAMS_CONFIG,
    Evaluator,
    InvalidInput,
    Sample,
    Score,
    describe_type,
    is_unit_interval,
)
from plumbline.evals.text import clip


class ClassificationParams(BaseModel):
    model_config = PARAMS_CONFIG

    positive_label: str | None = None
    """Binary tasks: `probability` is P(positive_label). Otherwise it is the model's
    confidence in its own prediction, and the Brier score measures that confidence."""


def _label(field_name: str, value: object) -> str:
    """Labels compare trimmed and case-insensitively, and may arrive as ints (0/1)."""
    if isinstance(value, str | int) and not isinstance(value, bool):
        return str(value).strip().casefold()
    raise InvalidInput(
        f"{field_name} must be a string or an integer label, got {describe_type(value)}"
    )


class Classification(Evaluator[ClassificationParams]):
    """Per-row accuracy (1 or 0); averaging over rows gives the run's accuracy. The Brier
    score goes in details so it can be averaged too, without changing the pass rule.
    """

    name = "classification"
    default_threshold = 1.0
    params_model = ClassificationParams

    def _prepare(self) -> None:
        positive = self.params.positive_label
        self._positive = None if positive is None else _label("positive_label", positive)

    def _score(self, sample: Sample) -> Score:
        predicted = _label("output", sample.output)
        if sample.label is not None:
            truth = _label("label", sample.label)
        else:
            truth = _label("expected", sample.expected)
        correct = predicted == truth
        details: dict[str, Any] = {
            "predicted": clip(predicted, 100),
            "label": clip(truth, 100),
            "correct": correct,
        }
        if sample.probability is not None:
            details.update(self._calibration(sample.probability, truth, correct))
        if correct:
            return 1.0, "correct", details
        return 0.0, f"predicted {details['predicted']!r}, expected {details['label']!r}", details

    def _calibration(self, probability: object, truth: str, correct: bool) -> dict[str, Any]:
        if not is_unit_interval(probability):
            shown = clip(repr(probability), 60)
            raise InvalidInput(f"probability must be a number between 0 and 1, got {shown}")
        outcome = truth == self._positive if self._positive is not None else correct
        return {"probability": probability, "brier": round((probability - outcome) ** 2, 6)}
