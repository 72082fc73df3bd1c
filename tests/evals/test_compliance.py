from __future__ import annotations

import json
from typing import Any

import pytest

from plumbline.evals import IsCompliant
from plumbline.evals.compliance import iban_valid, luhn_valid

ALL_PII = ["email", "phone", "credit_card", "ssn", "iban"]


def _types(text: str, **params: Any) -> list[str]:
    result = IsCompliant(**params).evaluate(output=text)
    return [violation["type"] for violation in result.details["violations"]]


def test_clean_text_is_compliant() -> None:
    result = IsCompliant(pii=ALL_PII).evaluate(output="Your order ships on 2024-05-01 (ref 12345).")
    assert (result.score, result.passed, result.details["violations"]) == (1.0, True, [])


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("write to jane.doe+news@mail.example.co.uk today", "pii.email"),
        ("call (555) 123-4567 now", "pii.phone"),
        ("call 555.123.4567 now", "pii.phone"),
        ("ring +44 20 7946 0958 please", "pii.phone"),
        ("card 4111 1111 1111 1111 on file", "pii.credit_card"),
        ("card 5500-0000-0000-0004 on file", "pii.credit_card"),
        ("card 378282246310005 on file", "pii.credit_card"),
    ],
)
def test_default_pii_kinds_are_detected(text: str, kind: str) -> None:
    assert _types(text) == [kind]


@pytest.mark.parametrize(
    "text",
    [
        "card 4111 1111 1111 1112",  # fails the Luhn check
        "order 20240501123456",  # long number, not a card
        "ssn 123-45-6789",  # SSN is opt-in
        "IBAN DE89 3704 0044 0532 0130 00",  # IBAN is opt-in
        "version 1.2.3 released 2024-05-01",
        "user@localhost has no domain suffix",
    ],
)
def test_default_policy_does_not_flag_lookalikes(text: str) -> None:
    assert _types(text) == []


def test_opt_in_ssn_and_iban_are_detected_and_checksummed() -> None:
    text = "SSN 123-45-6789, IBAN DE89 3704 0044 0532 0130 00, bad IBAN DE00 3704 0044 0532 0130 00"
    assert _types(text, pii=["ssn", "iban"]) == ["pii.ssn", "pii.iban"]
    assert _types("SSN 000-12-3456", pii=["ssn"]) == []


def test_violation_spans_locate_the_data_without_copying_it() -> None:
    text = "Reach me at bob@example.org or 4111-1111-1111-1111."
    result = IsCompliant().evaluate(output=text)
    spans = [violation["span"] for violation in result.details["violations"]]
    assert [text[start:end] for start, end in spans] == ["bob@example.org", "4111-1111-1111-1111"]
    serialized = json.dumps(result.details)
    assert "bob@example.org" not in serialized
    assert "4111" not in serialized


def test_banned_terms_match_whole_words_case_insensitively() -> None:
    evaluator = IsCompliant(pii=[], banned_terms=["guaranteed returns", "scam"])
    result = evaluator.evaluate(output="GUARANTEED\n  Returns, no Scam. Scampi is fine.")
    assert result.score == 0.0
    assert [v["text"] for v in result.details["violations"]] == ["GUARANTEED\n  Returns", "Scam"]
    assert result.details["counts"] == {"banned_term": 2}


def test_required_disclaimers_must_be_present() -> None:
    evaluator = IsCompliant(pii=[], required_disclaimers=["Not financial advice", "Past results"])
    result = evaluator.evaluate(output="Buy low. NOT  financial advice.")
    assert result.details["violations"] == [
        {"type": "missing_disclaimer", "span": None, "disclaimer": "Past results"}
    ]
    assert "1 missing_disclaimer" in result.reason


def test_all_violation_kinds_are_reported_together() -> None:
    evaluator = IsCompliant(banned_terms=["cheap"], required_disclaimers=["terms apply"])
    result = evaluator.evaluate(output="Cheap deal! Mail a@b.io")
    assert result.details["counts"] == {"pii.email": 1, "banned_term": 1, "missing_disclaimer": 1}


def test_unicode_output_is_scanned() -> None:
    text = "联系 ✉️ 李雷 li.lei@例子.com או support@example.com 🎉 ‏שלום‏"
    assert _types(text) == ["pii.email"]


def test_huge_output_reports_a_bounded_list() -> None:
    text = "contact a@b.co now. " * 50_000
    result = IsCompliant().evaluate(output=text)
    assert result.details["violation_count"] == 50_000
    assert len(result.details["violations"]) == 50


@pytest.mark.parametrize(
    ("digits", "valid"),
    [("4111111111111111", True), ("4111111111111112", False), ("79927398713", True)],
)
def test_luhn(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid


@pytest.mark.parametrize(
    ("iban", "valid"),
    [
        ("GB82 WEST 1234 5698 7654 32", True),
        ("GB82 WEST 1234 5698 7654 33", False),
        ("DE89370400440532013000", True),
        ("DE8937", False),
    ],
)
def test_iban(iban: str, valid: bool) -> None:
    assert iban_valid(iban) is valid
