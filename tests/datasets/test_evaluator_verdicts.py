"""Verdicts of `plumbline.evals` evaluators on rough agent data, as a pipeline computes
them locally and the server's worker computes them for a run (the same code)."""

from __future__ import annotations

from typing import Any

import pytest

from plumbline.evals import TaskCompletion


@pytest.mark.parametrize(
    ("expected", "actual", "matches"),
    [
        ({"confirm": True}, {"confirm": 1}, False),
        ({"confirm": False}, {"confirm": 0}, False),
        ({"quantity": 1}, {"quantity": True}, False),
        ({"ids": [1, 2]}, {"ids": [True, 2]}, False),
        ({"filter": {"active": True}}, {"filter": {"active": 1}}, False),
        ({"quantity": 1}, {"quantity": 1.0}, True),
        ({"filter": {"active": True}}, {"filter": {"active": True}}, True),
        ({"ids": [1, 2]}, {"ids": [1, 2], "extra": None}, True),
    ],
)
def test_tool_arguments_compare_as_json_values(
    expected: dict[str, Any], actual: dict[str, Any], matches: bool
) -> None:
    evaluator = TaskCompletion(expected_tools=[{"name": "refund", "arguments": expected}])
    result = evaluator.evaluate(trajectory=[{"name": "refund", "arguments": actual}], output="done")
    assert result.details["components"]["arguments"] == (1.0 if matches else 0.0)
    assert bool(result.details["argument_mismatches"]) is not matches
