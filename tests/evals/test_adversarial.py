"""Every built-in against hostile rows: it must return a sane, storable result, never raise."""

from __future__ import annotations

import json
from typing import Any

import pytest

from plumbline.evals import EvalResult, Evaluator, get_evaluator

# Minimal configuration plus the other row fields each evaluator needs, so that the
# output is the only thing under attack.
SETUPS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "groundedness": ({}, {"context": ["The sky is blue."]}),
    "json_validation": ({"schema": {"type": "object"}}, {}),
    "task_completion": ({"success": {"output_contains": "done"}}, {"trajectory": [{"name": "a"}]}),
    "is_compliant": ({"pii": ["email", "phone", "credit_card", "ssn", "iban"]}, {}),
    "refusal": ({}, {"expected_behavior": "answer"}),
    "exact_match": ({}, {"expected": "blue"}),
    "contains": ({}, {"expected": ["blue", "sky"]}),
    "regex": ({"pattern": r"\bblue\b"}, {}),
    "similarity": ({"metric": "rouge_l"}, {"expected": "the sky is blue"}),
    "classification": ({}, {"label": "blue", "probability": 0.7}),
    "length_budget": ({"max_chars": 1000, "max_tokens": 100}, {}),
    "latency_budget": ({"max_ms": 100}, {"latency_ms": 50}),
}
READS_OUTPUT = sorted(set(SETUPS) - {"latency_budget"})

HUGE = ("The sky is blue. 空は青い。 השמים כחולים. 🌤️ " * 25_000)[:1_000_000]
STRING_OUTPUTS = {
    "empty": "",
    "whitespace": " \n\t ",
    "huge": HUGE,
    "invalid_json": '{"sky": "blue",',
    "emoji": "🔵🔵🔵 👍🏽 🏳️‍🌈",
    "cjk": "天空是蓝色的。空は青い。",
    "rtl": "السماء زرقاء. השמים כחולים.",
    "control_chars": "blue\x00\x1b[31m\u202e",
}
WRONG_TYPES = {"dict": {"answer": "blue"}, "none": None, "int": 42, "list": ["blue"]}
# Not wrong for these: task_completion reads the final answer from the trajectory when
# output is None, and integer class labels are valid predictions.
LEGITIMATE = {("task_completion", "none"), ("classification", "int")}
WRONG_TYPE_CASES = [
    (name, kind)
    for name in [*READS_OUTPUT, "llm_judge"]
    for kind in sorted(WRONG_TYPES)
    if (name, kind) not in LEGITIMATE
]


def _evaluate(name: str, output: Any) -> tuple[Evaluator[Any], EvalResult]:
    params, row = SETUPS[name]
    evaluator = get_evaluator(name, params=params)
    return evaluator, evaluator.evaluate(output=output, **row)


def _assert_sane(evaluator: Evaluator[Any], result: EvalResult) -> None:
    assert isinstance(result, EvalResult)
    assert 0.0 <= result.score <= 1.0
    assert result.passed is (result.score >= evaluator.threshold)
    assert isinstance(result.reason, str) and result.reason
    assert len(json.dumps(result.details)) < 20_000, "details must stay small enough to store"


def test_setups_cover_every_deterministic_builtin() -> None:
    from plumbline.evals import available_evaluators

    assert set(SETUPS) == set(available_evaluators()) - {"llm_judge"}


@pytest.mark.parametrize("kind", sorted(STRING_OUTPUTS))
@pytest.mark.parametrize("name", sorted(SETUPS))
def test_hostile_strings_give_sane_results(name: str, kind: str) -> None:
    evaluator, result = _evaluate(name, STRING_OUTPUTS[kind])
    _assert_sane(evaluator, result)
    assert "error" not in result.details, result.reason


@pytest.mark.parametrize(("name", "kind"), WRONG_TYPE_CASES)
def test_wrong_output_types_fail_the_row_by_name(name: str, kind: str) -> None:
    if name == "llm_judge":
        evaluator = get_evaluator(name, params={"base_url": "http://127.0.0.1:9", "model": "m"})
        result = evaluator.evaluate(output=WRONG_TYPES[kind])
    else:
        evaluator, result = _evaluate(name, WRONG_TYPES[kind])
    _assert_sane(evaluator, result)
    assert (result.score, result.passed) == (0.0, False)
    assert "output must be" in result.details["error"]
    assert "output must be" in result.reason


@pytest.mark.parametrize("name", sorted(SETUPS))
def test_a_row_missing_everything_fails_cleanly(name: str) -> None:
    evaluator = get_evaluator(name, params=SETUPS[name][0])
    result = evaluator.evaluate()
    _assert_sane(evaluator, result)
    assert (result.score, result.passed) == (0.0, False)
    assert "error" in result.details


@pytest.mark.parametrize(
    ("name", "field", "value"),
    [
        ("groundedness", "context", 3.14),
        ("exact_match", "expected", {"a": 1}),
        ("contains", "expected", [1, 2]),
        ("similarity", "expected", None),
        ("classification", "label", ["blue"]),
        ("classification", "probability", "high"),
        ("refusal", "expected_behavior", {"x": 1}),
        ("task_completion", "trajectory", "search, then answer"),
        ("task_completion", "trajectory", [None]),
        ("latency_budget", "latency_ms", [50]),
    ],
)
def test_wrong_types_in_other_fields_fail_the_row(name: str, field: str, value: Any) -> None:
    params, row = SETUPS[name]
    evaluator = get_evaluator(name, params=params)
    result = evaluator.evaluate(output="The sky is blue.", **{**row, field: value})
    assert (result.score, result.passed) == (0.0, False)
    assert result.details["error"].startswith(field)
