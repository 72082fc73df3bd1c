from __future__ import annotations

import unicodedata

import pytest

from plumbline.evals import Contains, ExactMatch, Regex

COMPOSED = "Café crème in Zürich"  # NFC: what most models emit
DECOMPOSED = unicodedata.normalize("NFD", COMPOSED)  # e.g. a golden row typed on macOS


@pytest.mark.parametrize(
    ("params", "output", "expected", "score"),
    [
        ({}, "Paris", "Paris", 1.0),
        ({}, "  Paris\n", "Paris", 1.0),
        ({}, "paris", "Paris", 0.0),
        ({"case_sensitive": False}, "PARIS", "paris", 1.0),
        ({"strip": False}, " Paris", "Paris", 0.0),
        ({}, "New  York", "New York", 0.0),
        ({"normalize_whitespace": True}, " New \t York\n", "New York", 1.0),
        ({"case_sensitive": False}, "STRASSE", "straße", 1.0),  # casefold, not lower
        ({}, "東京 🎉", "東京 🎉", 1.0),
        ({}, "", "", 1.0),
        ({}, "", "Paris", 0.0),
    ],
)
def test_exact_match(params: dict[str, bool], output: str, expected: str, score: float) -> None:
    assert ExactMatch(**params).evaluate(output=output, expected=expected).score == score


def test_exact_match_accepts_any_of_several_answers() -> None:
    result = ExactMatch().evaluate(output="NYC", expected=["New York", "NYC"])
    assert (result.score, result.details["matched_reference"]) == (1.0, 1)


def test_exact_match_needs_an_expected_answer() -> None:
    result = ExactMatch().evaluate(output="Paris")
    assert result.details["error"] == "expected must be a string or a list of strings, got None"


@pytest.mark.parametrize("params", [{}, {"case_sensitive": False}])
def test_exact_match_treats_canonically_equal_text_as_equal(params: dict[str, bool]) -> None:
    assert COMPOSED != DECOMPOSED
    for output, expected in [(COMPOSED, DECOMPOSED), (DECOMPOSED, COMPOSED)]:
        result = ExactMatch(**params).evaluate(output=output, expected=expected)
        assert result.passed, result.reason


def test_exact_match_does_not_fold_compatibility_characters() -> None:
    """NFC, not NFKC: "x²" is not the answer "x2", nor full-width "H2O" the ASCII one."""
    assert ExactMatch().evaluate(output="x²", expected="x2").score == 0.0
    full_width = "\uff28\uff12\uff2f"
    assert ExactMatch(case_sensitive=False).evaluate(output=full_width, expected="h2o").score == 0.0


def test_contains_all_scores_the_share_found() -> None:
    evaluator = Contains(substrings=["refund", "14 days", "receipt"])
    result = evaluator.evaluate(output="Refunds within 14 days with a receipt.")
    assert result.score == pytest.approx(2 / 3)
    assert not result.passed
    assert result.details == {"found": 2, "total": 3, "missing": ["refund"]}


def test_contains_case_insensitive_and_any_mode() -> None:
    text = "Refunds within 14 days."
    assert Contains(substrings=["REFUND"], case_sensitive=False).evaluate(output=text).score == 1.0
    any_mode = Contains(substrings=["voucher", "14 days"], mode="any")
    assert any_mode.evaluate(output=text).score == 1.0
    assert any_mode.evaluate(output="no match here").score == 0.0


def test_contains_falls_back_to_expected() -> None:
    evaluator = Contains()
    assert evaluator.evaluate(output="The capital is Paris.", expected="Paris").score == 1.0
    assert evaluator.evaluate(output="It is 東京 🎉", expected=["東京", "🎉"]).score == 1.0
    assert evaluator.evaluate(output="Lyon", expected=["Paris", "Lyon"]).score == 0.5


@pytest.mark.parametrize("params", [{}, {"case_sensitive": False}])
def test_contains_finds_canonically_equal_text(params: dict[str, bool]) -> None:
    output = f"Order: {DECOMPOSED}, no sugar."
    assert Contains(**params).evaluate(output=output, expected="Zürich").score == 1.0
    configured = Contains(substrings=[unicodedata.normalize("NFD", "crème")], **params)
    assert configured.evaluate(output=COMPOSED).score == 1.0


@pytest.mark.parametrize(
    ("expected", "problem"),
    [
        ("", "expected must not be empty or only whitespace"),
        ("  \n", "expected must not be empty or only whitespace"),
        (["Paris", ""], "expected must not be empty or only whitespace"),
        ([], "expected must hold at least one substring"),
    ],
)
def test_contains_reports_a_row_whose_expected_has_nothing_to_look_for(
    expected: object, problem: str
) -> None:
    """A blank substring is found in any output: from params it is refused at construction,
    from the row it must fail that row (reported as invalid input), not pass it."""
    for mode in ("all", "any"):
        result = Contains(mode=mode).evaluate(output="a completely wrong answer", expected=expected)
        assert (result.score, result.passed) == (0.0, False)
        assert result.reason.startswith("invalid input: ")
        assert result.details["error"].startswith(problem)


def test_regex_search_and_fullmatch() -> None:
    assert Regex(pattern=r"\d{4}").evaluate(output="built in 1889").score == 1.0
    fullmatch = Regex(pattern=r"\d{4}", mode="fullmatch")
    assert fullmatch.evaluate(output="built in 1889").score == 0.0
    result = fullmatch.evaluate(output="1889")
    assert result.details == {"matched": True, "span": [0, 4], "match": "1889"}


def test_regex_ignore_case_and_unicode() -> None:
    assert Regex(pattern="^yes").evaluate(output="YES").score == 0.0
    assert Regex(pattern="^yes", ignore_case=True).evaluate(output="YES").score == 1.0
    assert Regex(pattern=r"\w+京").evaluate(output="🎉 東京").score == 1.0


def test_invalid_regex_is_rejected_at_construction() -> None:
    with pytest.raises(ValueError, match=r"params.pattern: invalid regular expression"):
        Regex(pattern="(unclosed")
