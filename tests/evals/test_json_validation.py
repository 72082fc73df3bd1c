from __future__ import annotations

import json

import pytest

from plumbline.evals import JSONValidation

SCHEMA = {
    "type": "object",
    "required": ["name", "items"],
    "properties": {
        "name": {"type": "string"},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id"],
                "properties": {"id": {"type": "integer"}},
            },
        },
    },
}


@pytest.mark.parametrize("text", ['{"a": 1}', "[1, 2]", '"just a string"', "null", " 3.5 "])
def test_any_valid_json_passes_without_schema(text: str) -> None:
    result = JSONValidation().evaluate(output=text)
    assert (result.score, result.passed, result.details["valid_json"]) == (1.0, True, True)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "Expecting value at line 1 column 1"),
        ("{'a': 1}", "Expecting property name enclosed in double quotes"),
        ('{"a": 1,}', "at line 1 column 9"),
        ('{"a": NaN}', "NaN is not valid JSON"),
        ("[Infinity]", "Infinity is not valid JSON"),
        ('{"a": 1} trailing', "Extra data"),
        ("[" * 200_000, "nesting too deep"),
    ],
)
def test_invalid_json_fails_with_the_parse_error(text: str, problem: str) -> None:
    result = JSONValidation().evaluate(output=text)
    assert (result.score, result.passed) == (0.0, False)
    assert result.details["valid_json"] is False
    assert problem in result.details["parse_error"]


def test_schema_errors_are_listed_with_json_paths() -> None:
    document = {"name": 7, "items": [{"id": 1}, {"id": "two"}, {}]}
    result = JSONValidation(schema=SCHEMA).evaluate(output=json.dumps(document))
    assert (result.score, result.passed) == (0.0, False)
    paths = [error["path"] for error in result.details["schema_errors"]]
    assert paths == ["$.items[1].id", "$.items[2]", "$.name"]
    assert result.details["schema_error_count"] == 3
    assert "'two' is not of type 'integer'" in result.details["schema_errors"][0]["message"]


def test_document_matching_the_schema_passes() -> None:
    document = {"name": "ok", "items": [{"id": 1}]}
    result = JSONValidation(schema=SCHEMA).evaluate(output=json.dumps(document))
    assert (result.score, result.details["schema_errors"]) == (1.0, [])


def test_code_fence_is_accepted_only_when_allowed() -> None:
    fenced = '```json\n{"a": 1}\n```'
    assert JSONValidation().evaluate(output=fenced).score == 0.0
    assert JSONValidation(allow_code_fence=True).evaluate(output=fenced).score == 1.0
    prose = 'Here you go: ```json\n{"a": 1}\n```'
    assert JSONValidation(allow_code_fence=True).evaluate(output=prose).score == 0.0


@pytest.mark.parametrize(
    "fenced",
    ['```json\r\n{"refund": true}\r\n```', '```\r\n{"refund": true}\r\n```\r\n'],
)
def test_a_code_fence_with_crlf_line_endings_is_accepted(fenced: str) -> None:
    result = JSONValidation(allow_code_fence=True).evaluate(output=fenced)
    assert result.passed, result.reason


def test_invalid_schema_is_rejected_at_construction() -> None:
    with pytest.raises(ValueError, match=r"params.schema: invalid JSON Schema"):
        JSONValidation(schema={"type": "object", "required": "name"})


def test_huge_valid_document_and_unicode_pass() -> None:
    document = [{"text": "雪 🎉 שלום", "n": n} for n in range(40_000)]
    text = json.dumps(document, ensure_ascii=False)
    assert len(text.encode()) > 1_000_000
    assert JSONValidation(schema={"type": "array"}).evaluate(output=text).score == 1.0


def test_many_schema_errors_are_counted_but_listing_is_bounded() -> None:
    schema = {"type": "array", "items": {"type": "integer"}}
    result = JSONValidation(schema=schema).evaluate(output=json.dumps(["x"] * 500))
    assert result.details["schema_error_count"] == 500
    assert len(result.details["schema_errors"]) == 20
