"""Evaluate one dataset row against a whole suite, as the run worker does."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from plumbline.evals.base import EvalResult, Evaluator, Sample


def evaluate_row(
    evaluators: Sequence[Evaluator[Any]],
    row: Mapping[str, Any],
    output_record: Mapping[str, Any],
) -> list[EvalResult]:
    """One result per evaluator, in suite order. Missing keys count as None, and a bad
    row yields failed results rather than an exception, so a run never stops mid-way."""
    sample = Sample(
        input=row.get("input"),
        expected=row.get("expected"),
        context=row.get("context"),
        expected_behavior=row.get("expected_behavior"),
        label=row.get("label"),
        metadata=row.get("metadata"),
        output=output_record.get("output"),
        trajectory=output_record.get("trajectory"),
        probability=output_record.get("probability"),
        latency_ms=output_record.get("latency_ms"),
    )
    return [evaluator.evaluate_sample(sample) for evaluator in evaluators]
