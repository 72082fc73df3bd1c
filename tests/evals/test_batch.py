from __future__ import annotations

from typing import Any

from plumbline.evals import build_suite, evaluate_row

SUITE_SPECS: list[dict[str, Any]] = [
    {"name": "groundedness"},
    {"name": "refusal"},
    {"name": "classification", "params": {"positive_label": "yes"}},
    {"name": "latency_budget", "params": {"max_ms": 1000}},
    {"name": "task_completion", "params": {"expected_tools": ["lookup"]}},
    {"name": "exact_match"},
]


def test_every_row_field_reaches_its_evaluator_in_suite_order() -> None:
    suite = build_suite(SUITE_SPECS)
    row = {
        "input": "Is Oslo the capital of Norway?",
        "expected": "yes",
        "context": "Oslo is the capital of Norway.",
        "expected_behavior": "answer",
        "label": "yes",
        "metadata": {"source": "geo"},
    }
    record = {
        "output": "yes",
        "trajectory": [{"name": "lookup", "arguments": {"q": "Oslo"}}],
        "probability": 0.75,
        "latency_ms": 1500,
    }
    results = evaluate_row(suite, row, record)
    grounded, refusal, classification, latency, task, exact = results
    assert "error" not in grounded.details  # the context arrived
    assert grounded.reason == "output makes no checkable statement"
    assert refusal.details["outcome"] == "correct_answer"
    assert classification.details["brier"] == 0.0625
    assert latency.score == 0.5
    assert task.score == 1.0
    assert exact.passed


def test_missing_keys_become_failed_results_not_exceptions() -> None:
    suite = build_suite(SUITE_SPECS)
    results = evaluate_row(suite, {}, {})
    assert len(results) == len(suite)
    assert all(not r.passed and "error" in r.details for r in results)
