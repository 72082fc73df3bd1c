"""The Evaluator contract: threshold rule, construction-time validation, never raising."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pytest
from pydantic import BaseModel, Field

from plumbline.evals import (
    PARAMS_CONFIG,
    EvalResult,
    EvaluationError,
    Evaluator,
    EvaluatorConfigError,
    ExactMatch,
    Groundedness,
    JSONValidation,
    Sample,
    Score,
    TaskCompletion,
)


class ScriptedParams(BaseModel):
    model_config = PARAMS_CONFIG

    score: float = Field(default=0.5, ge=0, le=1)


class Scripted(Evaluator[ScriptedParams]):
    """Returns its configured score, so threshold logic can be tested in isolation."""

    name = "scripted"
    default_threshold = 0.6
    params_model = ScriptedParams

    def _score(self, sample: Sample) -> Score:
        return self.params.score, "scripted", {"seen_output": sample.output}


class Returns(Evaluator):
    """Returns whatever the test hands it, to exercise the result guard."""

    name = "returns"

    def __init__(self, value: Any) -> None:
        super().__init__()
        self.value = value

    def _score(self, sample: Sample) -> Score:
        return self.value


class Crashes(Evaluator):
    name = "crashes"

    def _score(self, sample: Sample) -> Score:
        return 1 / 0, "unreachable", {}


class FailsOnPurpose(Evaluator):
    name = "fails_on_purpose"

    def _score(self, sample: Sample) -> Score:
        raise EvaluationError("upstream said no", status=503)


def test_seed_document_usage() -> None:
    answer = "The Eiffel Tower is in Paris. It was completed in 1889."
    retrieved = ["The Eiffel Tower, in Paris, was completed in 1889 for the World's Fair."]
    trace_spans = [
        {
            "name": "search",
            "attributes": {"openinference.span.kind": "TOOL", "tool.name": "search"},
        },
        {"name": "llm", "attributes": {"openinference.span.kind": "LLM", "output.value": answer}},
    ]
    ground = Groundedness().evaluate(output=answer, context=retrieved)
    task = TaskCompletion().evaluate(input="When was it built?", trajectory=trace_spans)
    valid = JSONValidation().evaluate(output='{"ok": true}')
    assert (ground.score, task.score, valid.score) == (1.0, 1.0, 1.0)


def test_eval_result_is_frozen() -> None:
    result = EvalResult(score=1.0, passed=True, reason="ok", details={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.score = 0.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("score", "threshold", "passed"),
    [
        (0.6, None, True),
        (0.59, None, False),
        (0.3, 0.3, True),
        (0.29, 0.3, False),
        (0.0, 0.0, True),
    ],
)
def test_passed_means_score_at_least_threshold(
    score: float, threshold: float | None, passed: bool
) -> None:
    result = Scripted(threshold, score=score).evaluate(output="x")
    assert result.score == score
    assert result.passed is passed


def test_default_threshold_is_used_and_reported_in_spec() -> None:
    assert Scripted().threshold == 0.6
    assert Scripted(0.25).spec()["threshold"] == 0.25


@pytest.mark.parametrize("threshold", [-0.1, 1.01, math.nan, "0.5", True, [0.5]])
def test_bad_threshold_is_rejected_at_construction(threshold: Any) -> None:
    with pytest.raises(EvaluatorConfigError) as caught:
        Scripted(threshold)
    assert caught.value.field == "threshold"
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"nope": 1}, "params.nope: unknown parameter"),
        ({"score": "0.5"}, "params.score: Input should be a valid number"),
        ({"score": 2}, "params.score: Input should be less than or equal to 1"),
    ],
)
def test_bad_params_are_rejected_with_their_path(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match="^" + message):
        Scripted(**params)


def test_spec_is_json_and_contains_defaults() -> None:
    spec = ExactMatch(0.9, case_sensitive=False).spec()
    assert json.loads(json.dumps(spec)) == {
        "name": "exact_match",
        "threshold": 0.9,
        "params": {"case_sensitive": False, "strip": True, "normalize_whitespace": False},
    }


def test_exception_inside_evaluator_becomes_an_error_result(
    caplog: pytest.LogCaptureFixture,
) -> None:
    result = Crashes().evaluate(output="x")
    assert (result.score, result.passed, result.error) == (0.0, False, True)
    assert "ZeroDivisionError" in result.reason
    assert "ZeroDivisionError" in result.details["error"]
    assert "crashes" in caplog.text


def test_evaluation_error_is_an_error_result_with_its_reason_and_details() -> None:
    result = FailsOnPurpose().evaluate(output="x")
    assert result == EvalResult(
        0.0, False, "upstream said no", {"status": 503, "error": "upstream said no"}, error=True
    )


@pytest.mark.parametrize(
    "returned",
    [(1.5, "r", {}), (-0.1, "r", {}), (math.nan, "r", {}), ("1", "r", {}), (1.0, "r", []), 0.7],
)
def test_malformed_evaluator_result_becomes_an_error_result(returned: Any) -> None:
    result = Returns(returned).evaluate(output="x")
    assert (result.score, result.passed, result.error) == (0.0, False, True)
    assert "error" in result.details


def test_wrong_input_type_is_a_fail_naming_the_field_and_type() -> None:
    """The row's own data: a verdict, not an evaluator error."""
    result = ExactMatch().evaluate(output={"answer": 1}, expected="1")
    assert result.error is False
    assert result == EvalResult(
        0.0,
        False,
        "invalid input: output must be a string, got dict",
        {"error": "output must be a string, got dict"},
    )


def test_evaluate_passes_every_field_through_to_the_sample() -> None:
    seen: list[Sample] = []

    class Spy(Evaluator):
        name = "spy"

        def _score(self, sample: Sample) -> Score:
            seen.append(sample)
            return 1.0, "", {}

    fields = {f.name: f"value-{f.name}" for f in dataclasses.fields(Sample)}
    Spy().evaluate(**fields)
    assert dataclasses.asdict(seen[0]) == fields
