"""Verdicts of `plumbline.evals` evaluators on rough agent data, as a pipeline computes
them locally and the server's worker computes them for a run (the same code)."""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest

from plumbline.evals import IsCompliant, LengthBudget, Refusal, TaskCompletion


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


@pytest.mark.parametrize(
    ("output", "counts"),
    [
        ("Call 415-555-0132 415-555-0199 today", {"pii.phone": 2}),
        ("SSNs: 123-45-6789 234-56-7890", {"pii.ssn": 2}),
        ("Call 415-555-0132 or 415-555-0199", {"pii.phone": 2}),
        ("card 4111 1111 1111 1111 and 415-555-0132", {"pii.credit_card": 1, "pii.phone": 1}),
        ("order 1234 5678 9012 3456, mail a@b.com", {"pii.email": 1}),
    ],
)
def test_personal_data_is_found_next_to_a_number_that_is_not_a_card(
    output: str, counts: dict[str, int]
) -> None:
    result = IsCompliant(pii=["email", "phone", "credit_card", "ssn", "iban"]).evaluate(
        output=output
    )
    assert result.details["counts"] == counts
    assert result.passed is False


@pytest.mark.parametrize("form", ["NFC", "NFD"])
def test_compliance_reads_an_accent_typed_either_way_as_the_same_word(form: str) -> None:
    evaluator = IsCompliant(
        pii=[], banned_terms=["café"], required_disclaimers=["consulte a su médico"]
    )
    output = unicodedata.normalize(form, "Consulte a su médico. Visite el café.")
    result = evaluator.evaluate(output=output)
    assert [v["type"] for v in result.details["violations"]] == ["banned_term"]
    assert result.details["violations"][0]["text"] == "café"


@pytest.mark.parametrize("form", ["NFC", "NFD"])
def test_refusal_and_task_success_read_an_accent_typed_either_way_alike(form: str) -> None:
    output = unicodedata.normalize(form, "Lo siento, no podré ayudarle con el café.")
    refusal = Refusal(extra_patterns=[r"no podré ayudar"])
    assert refusal.evaluate(output=output).details["refused"] is True
    for success in ({"output_contains": "el café"}, {"output_regex": r"caf[eé]\.$"}):
        completion = TaskCompletion(success=success)
        result = completion.evaluate(trajectory=[], output=output)
        assert result.details["success"] == {next(iter(success)): True}


@pytest.mark.parametrize("form", ["NFC", "NFD"])
def test_length_budget_counts_an_accented_letter_once_however_it_is_typed(form: str) -> None:
    output = unicodedata.normalize(form, "Sí, el café está listo.")  # 23 characters
    result = LengthBudget(max_chars=23, min_chars=23).evaluate(output=output)
    assert result.details["chars"] == 23
    assert result.passed is True


@pytest.mark.parametrize(
    ("output", "span"),
    [
        ("Card: 4111 1111 1111 1111 12/26 CVV 123", [6, 25]),  # followed by its expiry
        ("ref 12 4111-1111-1111-1111", [7, 26]),  # after another number
        ("Card 4111111111111111 exp 12/26", [5, 21]),
    ],
)
def test_a_card_number_written_next_to_other_numbers_is_found(output: str, span: list[int]) -> None:
    result = IsCompliant().evaluate(output=output)
    assert result.details["violations"] == [{"type": "pii.credit_card", "span": span}]
