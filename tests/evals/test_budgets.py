from __future__ import annotations

import unicodedata

import pytest

from plumbline.evals import LatencyBudget, LengthBudget


@pytest.mark.parametrize(
    ("latency", "score"),
    [(0, 1.0), (200, 1.0), (250, 0.75), (300, 0.5), (400, 0.0), (10_000, 0.0)],
)
def test_latency_decays_linearly_to_zero_at_twice_the_budget(latency: float, score: float) -> None:
    result = LatencyBudget(max_ms=200).evaluate(latency_ms=latency)
    assert result.score == pytest.approx(score)
    assert result.passed is (latency <= 200)


def test_latency_threshold_can_tolerate_some_overrun() -> None:
    assert LatencyBudget(0.5, max_ms=200).evaluate(latency_ms=300).passed


@pytest.mark.parametrize(
    ("latency", "message"),
    [
        (None, "latency_ms must be a finite number, got None"),
        ("120", "latency_ms must be a finite number, got str"),
        (True, "latency_ms must be a finite number, got bool"),
        (float("inf"), "latency_ms must be a finite number, got float"),
        (-5, "latency_ms must not be negative, got -5.0"),
    ],
)
def test_bad_latency_fails_the_row(latency: object, message: str) -> None:
    result = LatencyBudget(max_ms=100).evaluate(latency_ms=latency)
    assert (result.score, result.details["error"]) == (0.0, message)


def test_length_budget_takes_the_worst_limit() -> None:
    evaluator = LengthBudget(max_chars=10, max_tokens=2)
    result = evaluator.evaluate(output="one two three")  # 13 chars, 3 tokens
    assert result.details["limit_scores"] == {"max_chars": pytest.approx(0.7), "max_tokens": 0.5}
    assert result.score == 0.5
    assert result.reason == "outside max_chars, max_tokens"


def test_min_chars_scores_the_share_reached() -> None:
    assert LengthBudget(min_chars=10).evaluate(output="abcd").score == pytest.approx(0.4)
    assert LengthBudget(min_chars=10).evaluate(output="").score == 0.0
    assert LengthBudget(min_chars=1, max_chars=5).evaluate(output="abc").score == 1.0


def test_tokens_count_cjk_characters_and_ignore_emoji() -> None:
    result = LengthBudget(max_tokens=100).evaluate(output="東京は首都 🎉 ok")
    assert result.details["tokens"] == 6


def test_tokens_are_counted_the_same_for_composed_and_decomposed_accents() -> None:
    text = "naïve façade"  # decomposed, "ï" would split "naïve" in two
    budget = LengthBudget(max_tokens=100)
    assert budget.evaluate(output=text).details["tokens"] == 2
    assert budget.evaluate(output=unicodedata.normalize("NFD", text)).details["tokens"] == 2


def test_huge_output_is_measured() -> None:
    result = LengthBudget(max_chars=500_000).evaluate(output="a" * 1_000_000)
    assert (result.score, result.details["chars"]) == (0.0, 1_000_000)
