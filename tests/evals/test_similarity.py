from __future__ import annotations

import random
import unicodedata

import pytest

from plumbline.evals import Similarity
from plumbline.evals.text import lcs_length


def _reference_lcs(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = (
                table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
            )
    return table[-1][-1]


def test_bit_parallel_lcs_agrees_with_the_textbook_table() -> None:
    rng = random.Random(7)
    for _ in range(300):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 40))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 90))]
        assert lcs_length(a, b) == _reference_lcs(a, b)


def test_identical_texts_score_one_and_disjoint_zero() -> None:
    assert Similarity().evaluate(output="The cat sat.", expected="the CAT sat").score == 1.0
    assert Similarity().evaluate(output="dogs bark", expected="cats purr").score == 0.0


def test_known_values_for_both_metrics() -> None:
    # 6 vs 6 tokens, 5 shared; LCS "the cat on the mat" = 5 -> both 5/6
    result = Similarity().evaluate(
        output="the cat sat on the mat", expected="the cat is on the mat"
    )
    assert result.score == pytest.approx(5 / 6)
    assert result.details["rouge_l"] == pytest.approx(5 / 6, abs=1e-4)


def test_word_order_changes_rouge_l_but_not_f1() -> None:
    f1 = Similarity(metric="f1").evaluate(output="c b a", expected="a b c")
    rouge = Similarity(metric="rouge_l").evaluate(output="c b a", expected="a b c")
    assert f1.score == 1.0
    assert rouge.score == pytest.approx(1 / 3)
    assert f1.details["rouge_l"] == rouge.details["rouge_l"]


def test_best_of_several_references_counts() -> None:
    result = Similarity().evaluate(output="New York City", expected=["Paris", "new york city"])
    assert (result.score, result.details["best_reference"]) == (1.0, 1)


@pytest.mark.parametrize(
    ("output", "expected", "score"),
    [("", "", 1.0), ("", "Paris", 0.0), ("Paris", "", 0.0), ("!!!", "...", 1.0)],
)
def test_empty_texts(output: str, expected: str, score: float) -> None:
    assert Similarity().evaluate(output=output, expected=expected).score == score


def test_cjk_is_compared_per_character() -> None:
    result = Similarity().evaluate(output="東京は首都", expected="東京は日本の首都")
    assert result.score == pytest.approx(2 * 1.0 * (5 / 8) / (1.0 + 5 / 8))


def test_canonically_equal_texts_score_one() -> None:
    composed = "Café crème in Zürich"
    decomposed = unicodedata.normalize("NFD", composed)
    assert composed != decomposed
    for metric in ("f1", "rouge_l"):
        result = Similarity(metric=metric).evaluate(output=composed, expected=decomposed)
        assert result.score == 1.0


def test_huge_output_against_short_reference() -> None:
    result = Similarity(metric="rouge_l").evaluate(
        output="filler " * 150_000 + "the answer is 42", expected="the answer is 42"
    )
    assert result.details["rouge_l"] > 0
    assert result.score < 0.001
