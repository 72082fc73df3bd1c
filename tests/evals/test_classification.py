from __future__ import annotations

import pytest

from plumbline.evals import Classification


@pytest.mark.parametrize(
    ("output", "label", "score"),
    [
        ("positive", "positive", 1.0),
        (" Positive\n", "positive", 1.0),
        ("negative", "positive", 0.0),
    ],
)
def test_accuracy_per_row(output: str, label: str, score: float) -> None:
    result = Classification().evaluate(output=output, label=label)
    assert (result.score, result.passed, result.details["correct"]) == (
        score,
        score == 1,
        score == 1,
    )


def test_label_wins_over_expected_and_ints_are_labels() -> None:
    evaluator = Classification()
    assert evaluator.evaluate(output="1", label=1, expected="0").score == 1.0
    assert evaluator.evaluate(output="spam", expected="spam").score == 1.0


def test_wrong_prediction_names_both_labels() -> None:
    result = Classification().evaluate(output="ham", label="spam")
    assert result.reason == "predicted 'ham', expected 'spam'"


def test_brier_for_binary_task_uses_probability_of_the_positive_class() -> None:
    evaluator = Classification(positive_label="Spam")
    hit = evaluator.evaluate(output="spam", label="spam", probability=0.9)
    miss = evaluator.evaluate(output="spam", label="ham", probability=0.9)
    assert hit.details["brier"] == pytest.approx(0.01)
    assert miss.details["brier"] == pytest.approx(0.81)
    assert (hit.score, miss.score) == (1.0, 0.0)


def test_brier_without_positive_label_scores_confidence_in_the_prediction() -> None:
    evaluator = Classification()
    confident_wrong = evaluator.evaluate(output="cat", label="dog", probability=0.8)
    assert confident_wrong.details["brier"] == pytest.approx(0.64)
    assert "brier" not in evaluator.evaluate(output="cat", label="cat").details


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"output": "a", "label": "a", "probability": 1.5},
            "probability must be a number between 0 and 1, got 1.5",
        ),
        (
            {"output": "a", "label": "a", "probability": "0.5"},
            "probability must be a number between 0 and 1, got '0.5'",
        ),
        ({"output": "a", "label": "a", "probability": float("nan")}, "got nan"),
        ({"output": "a"}, "expected must be a string or an integer label, got None"),
        ({"output": None, "label": "a"}, "output must be a string or an integer label, got None"),
        ({"output": "a", "label": True}, "label must be a string or an integer label, got bool"),
    ],
)
def test_bad_rows_fail_cleanly(kwargs: dict[str, object], message: str) -> None:
    result = Classification().evaluate(**kwargs)
    assert (result.score, result.passed) == (0.0, False)
    assert message in result.details["error"]


def test_huge_prediction_is_clipped_in_details() -> None:
    result = Classification().evaluate(output="x" * 1_000_000, label="x")
    assert result.score == 0.0
    assert len(result.details["predicted"]) == 100
    assert len(result.reason) < 300
