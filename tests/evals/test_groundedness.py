from __future__ import annotations

import unicodedata

import pytest

from plumbline.evals import Groundedness

CONTEXT = [
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, France.",
    "It was designed by Gustave Eiffel's company and completed in 1889.",
]


def test_fully_supported_answer_scores_one() -> None:
    answer = "The Eiffel Tower is in Paris. It was completed in 1889 by Eiffel's company."
    result = Groundedness().evaluate(output=answer, context=CONTEXT)
    assert result.score == 1.0
    assert result.passed
    assert result.details["unsupported"] == []


def test_invented_sentence_is_listed_with_its_span() -> None:
    answer = "The tower is in Paris. Napoleon ordered its construction in 1750."
    result = Groundedness().evaluate(output=answer, context=CONTEXT)
    assert result.score == 0.5
    assert not result.passed
    [unsupported] = result.details["unsupported"]
    start, end = unsupported["span"]
    assert answer[start:end] == "Napoleon ordered its construction in 1750."
    assert unsupported["text"] == answer[start:end]
    assert unsupported["support"] == 0.0


def test_a_wrong_number_alone_can_make_a_sentence_unsupported() -> None:
    result = Groundedness(support_threshold=1.0).evaluate(
        output="The tower was completed in 1899.", context=CONTEXT
    )
    assert result.score == 0.0
    assert result.details["unsupported"][0]["support"] == 0.667  # tower, completed; not 1899


def test_support_threshold_decides_partially_supported_sentences() -> None:
    answer = "Gustave Eiffel designed the tower in Lyon."  # 4 of 5 content words supported
    strict = Groundedness(support_threshold=0.9).evaluate(output=answer, context=CONTEXT)
    lenient = Groundedness(support_threshold=0.8).evaluate(output=answer, context=CONTEXT)
    assert (strict.score, lenient.score) == (0.0, 1.0)


def test_context_may_be_a_single_string_and_plurals_fold() -> None:
    result = Groundedness().evaluate(
        output="Profits rose for the companies.", context="The company's profit rose."
    )
    assert result.score == 1.0


def test_sentences_without_content_words_are_not_claims() -> None:
    result = Groundedness().evaluate(output="Sure! It is in Paris.", context=CONTEXT)
    assert result.details["sentences"] == 1
    assert result.score == 1.0


def test_empty_output_makes_no_claim_and_does_not_pass() -> None:
    result = Groundedness().evaluate(output="   ", context=CONTEXT)
    assert (result.score, result.passed) == (0.0, False)
    assert "no checkable statement" in result.reason


def test_empty_context_supports_nothing() -> None:
    result = Groundedness().evaluate(output="Paris is in France.", context=[])
    assert result.score == 0.0


def test_cjk_output_is_checked_character_by_character() -> None:
    context = "東京は日本の首都です。"
    assert Groundedness().evaluate(output="東京は首都です。", context=context).score == 1.0
    assert Groundedness().evaluate(output="大阪は首都です。", context=context).score == 0.0


def test_rtl_and_emoji_text_is_handled() -> None:
    context = "שלום עולם. مرحبا بالعالم"
    result = Groundedness().evaluate(output="שלום עולם 🎉. مرحبا بالعالم!", context=context)
    assert result.score == 1.0


def test_decomposed_accents_in_the_context_still_support_the_answer() -> None:
    context = unicodedata.normalize("NFD", "Die Filiale in Zürich öffnet um neun.")
    result = Groundedness().evaluate(output="Zürich öffnet um neun.", context=context)
    assert result.score == 1.0


def test_huge_output_lists_a_bounded_number_of_unsupported_sentences() -> None:
    answer = "Aliens built pyramids yesterday. " * 30_000  # ~1 MB
    result = Groundedness().evaluate(output=answer, context=CONTEXT)
    assert result.score == 0.0
    assert result.details["unsupported_count"] == 30_000
    assert len(result.details["unsupported"]) == 20


@pytest.mark.parametrize(
    ("context", "message"),
    [
        (None, "context must be a string or a list of strings, got None"),
        (["ok", 3], "context must be a string or a list of strings, got list"),
        ({"doc": "x"}, "context must be a string or a list of strings, got dict"),
    ],
)
def test_bad_context_fails_the_row(context: object, message: str) -> None:
    result = Groundedness().evaluate(output="Paris.", context=context)
    assert (result.score, result.passed, result.details["error"]) == (0.0, False, message)
