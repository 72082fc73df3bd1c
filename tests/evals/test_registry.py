"""Registry, suites, spec round trips and third-party entry points."""

from __future__ import annotations

import json
import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from plumbline.evals import (
    ENTRY_POINT_GROUP,
    EvaluatorConfigError,
    ExactMatch,
    Sample,
    UnknownEvaluator,
    available_evaluators,
    build_suite,
    get_evaluator,
)

BUILTIN_NAMES = {
    "groundedness",
    "json_validation",
    "task_completion",
    "is_compliant",
    "refusal",
    "exact_match",
    "contains",
    "regex",
    "similarity",
    "classification",
    "latency_budget",
    "length_budget",
    "llm_judge",
}

# Non-default params for every built-in, so a round trip that dropped one would show.
CONFIGURED: dict[str, dict[str, Any]] = {
    "groundedness": {"support_threshold": 0.75},
    "json_validation": {"schema": {"type": "object", "required": ["a"]}, "allow_code_fence": True},
    "task_completion": {
        "expected_tools": [{"name": "search"}, {"name": "book", "arguments": {"city": "Oslo"}}],
        "order": "strict",
        "success": {"output_regex": "booked", "final_tool": "book"},
        "max_steps": 5,
    },
    "is_compliant": {
        "pii": ["email", "ssn"],
        "banned_terms": ["guaranteed"],
        "required_disclaimers": ["not advice"],
    },
    "refusal": {"extra_patterns": ["je ne peux pas"], "scan_chars": 50},
    "exact_match": {"case_sensitive": False, "strip": False, "normalize_whitespace": True},
    "contains": {"substrings": ["a", "b"], "mode": "any", "case_sensitive": False},
    "regex": {"pattern": "^[0-9]+$", "mode": "fullmatch", "ignore_case": True},
    "similarity": {"metric": "rouge_l"},
    "classification": {"positive_label": "spam"},
    "latency_budget": {"max_ms": 250},
    "length_budget": {"max_chars": 100, "max_tokens": 20, "min_chars": 3},
    "llm_judge": {
        "base_url": "http://127.0.0.1:9/v1",
        "model": "judge-1",
        "api_key_env": "JUDGE_KEY",
        "rubric": "Is it polite?",
        "timeout_s": 3,
        "max_retries": 1,
        "backoff_s": 0,
    },
}

SAMPLE = Sample(
    input="book a flight",
    output="Booked. Mail a@b.co, not advice. 42",
    expected="booked",
    context="Booked flight to Oslo.",
    trajectory=[{"name": "search"}, {"name": "book", "arguments": {"city": "Oslo"}}],
    probability=0.9,
    label="spam",
    expected_behavior="answer",
    latency_ms=300,
)


def test_every_builtin_is_registered_under_its_name() -> None:
    registry = available_evaluators()
    assert set(registry) >= BUILTIN_NAMES
    assert all(registry[name].name == name for name in BUILTIN_NAMES)


def test_available_evaluators_returns_a_copy() -> None:
    available_evaluators().clear()
    assert "exact_match" in available_evaluators()


def test_configured_params_cover_every_builtin() -> None:
    assert set(CONFIGURED) == BUILTIN_NAMES


@pytest.mark.parametrize("name", sorted(BUILTIN_NAMES))
def test_spec_round_trips_through_json_and_get_evaluator(name: str) -> None:
    original = get_evaluator(name, threshold=0.42, params=CONFIGURED[name])
    spec = json.loads(json.dumps(original.spec()))
    rebuilt = get_evaluator(**spec)
    assert rebuilt.spec() == original.spec()
    assert spec["threshold"] == 0.42
    assert _is_subset(CONFIGURED[name], spec["params"])
    if name != "llm_judge":  # the judge would need a server; its spec is what matters here
        assert rebuilt.evaluate_sample(SAMPLE) == original.evaluate_sample(SAMPLE)


def _is_subset(configured: Any, actual: Any) -> bool:
    """Every configured value survives in the spec, which may add defaults around it."""
    if isinstance(configured, dict):
        return isinstance(actual, dict) and all(
            key in actual and _is_subset(value, actual[key]) for key, value in configured.items()
        )
    if isinstance(configured, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(configured)
            and all(map(_is_subset, configured, actual))
        )
    return bool(configured == actual)


def test_task_completion_accepts_bare_tool_names() -> None:
    spec = get_evaluator("task_completion", params={"expected_tools": ["search"]}).spec()
    assert spec["params"]["expected_tools"] == [{"name": "search", "arguments": {}}]


def test_unknown_evaluator_is_a_value_error_listing_the_known_names() -> None:
    with pytest.raises(UnknownEvaluator, match=r"unknown evaluator 'bleu'.*exact_match"):
        get_evaluator("bleu")
    assert issubclass(UnknownEvaluator, ValueError)


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("groundedness", {"support_threshold": 0}, "params.support_threshold"),
        ("json_validation", {"schema": {"type": "no-such-type"}}, "params.schema"),
        ("json_validation", {"schema": "{}"}, "params.schema"),
        ("task_completion", {"order": "sorted"}, "params.order"),
        ("task_completion", {"success": {}}, "params.success"),
        ("task_completion", {"max_steps": 0}, "params.max_steps"),
        (
            "task_completion",
            {"expected_tools": [{"arguments": {}}]},
            "params.expected_tools.0.name",
        ),
        ("task_completion", {"success": {"output_regex": "("}}, "params.success.output_regex"),
        ("is_compliant", {"pii": ["passport"]}, "params.pii.0"),
        ("is_compliant", {"banned_terms": ["  "]}, "params.banned_terms.0"),
        ("refusal", {"extra_patterns": ["[unclosed"]}, "params.extra_patterns.0"),
        ("refusal", {"scan_chars": 0}, "params.scan_chars"),
        ("exact_match", {"case_sensitive": "no"}, "params.case_sensitive"),
        ("contains", {"substrings": []}, "params.substrings"),
        ("contains", {"mode": "most"}, "params.mode"),
        ("regex", {}, "params.pattern"),
        ("regex", {"pattern": "a(b"}, "params.pattern"),
        ("similarity", {"metric": "bleu"}, "params.metric"),
        ("classification", {"positive_label": 1}, "params.positive_label"),
        ("latency_budget", {"max_ms": 0}, "params.max_ms"),
        ("latency_budget", {}, "params.max_ms"),
        ("length_budget", {}, "params"),
        ("length_budget", {"max_chars": 5, "min_chars": 10}, "params"),
        ("llm_judge", {"model": "m"}, "params.base_url"),
        ("llm_judge", {"base_url": "ftp://x", "model": "m"}, "params.base_url"),
        (
            "llm_judge",
            {"base_url": "http://x", "model": "m", "api_key_env": "sk-abc"},
            "params.api_key_env",
        ),
        (
            "llm_judge",
            {"base_url": "http://x", "model": "m", "max_retries": -1},
            "params.max_retries",
        ),
        ("exact_match", {"threshold": 0.5}, "params.threshold"),
        ("exact_match", [("strip", True)], "params"),
    ],
)
def test_bad_params_are_rejected_naming_the_field(name: str, params: Any, field: str) -> None:
    with pytest.raises(EvaluatorConfigError) as caught:
        get_evaluator(name, params=params)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_build_suite_builds_evaluators_in_order() -> None:
    suite = build_suite(
        [{"name": "exact_match"}, {"name": "regex", "threshold": 0.5, "params": {"pattern": "x"}}]
    )
    assert [e.name for e in suite] == ["exact_match", "regex"]
    assert suite[1].threshold == 0.5


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ({"name": "exact_match"}, "specs: must be a list, got dict"),
        ([{"name": "exact_match"}, "regex"], "specs[1]: must be an object, got str"),
        ([{"name": "exact_match", "tresh": 1}], "specs[0].tresh: unknown field"),
        ([{"threshold": 1}], "specs[0].name: is required"),
        ([{"name": 3}], "specs[0].name: must be a string, got int"),
        ([{"name": "exact_match"}, {"name": "nope"}], "specs[1].name: unknown evaluator 'nope'"),
        ([{"name": "exact_match", "threshold": 2}], "specs[0].threshold: must be a number"),
        (
            [{"name": "regex", "params": {"pattern": "("}}],
            "specs[0].params.pattern: invalid regular",
        ),
        ([{"name": "regex", "params": "x"}], "specs[0].params: must be an object, got str"),
    ],
)
def test_build_suite_names_index_and_field_of_first_bad_spec(specs: Any, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        build_suite(specs)
    assert str(caught.value).startswith(message)


def test_build_suite_keeps_unknown_evaluator_type() -> None:
    with pytest.raises(UnknownEvaluator):
        build_suite([{"name": "nope"}])


PLUGIN_MODULE = """
from pydantic import BaseModel

from plumbline.evals import PARAMS_CONFIG, Evaluator, Sample, Score, require_text


class WordCountParams(BaseModel):
    model_config = PARAMS_CONFIG

    target: int = 3


class WordCount(Evaluator[WordCountParams]):
    name = "word_count"
    default_threshold = 1.0
    params_model = WordCountParams

    def _score(self, sample: Sample) -> Score:
        words = len(require_text("output", sample.output).split())
        return float(words == self.params.target), f"{words} words", {"words": words}


class Picky(WordCount):
    name = "picky"

    def __init__(self, threshold: float | None = None, **params: object) -> None:
        if "mode" in params:
            raise KeyError("mode is not a thing here")
        super().__init__(threshold, **params)


class Shadow(WordCount):
    name = "exact_match"


class Misnamed(WordCount):
    name = "something_else"


class NotSnake(WordCount):
    name = "NotSnake"


NOT_AN_EVALUATOR = object()
"""

ENTRY_POINTS = f"""
[{ENTRY_POINT_GROUP}]
word_count = plumbline_test_plugin:WordCount
picky = plumbline_test_plugin:Picky
exact_match = plumbline_test_plugin:Shadow
misnamed = plumbline_test_plugin:Misnamed
NotSnake = plumbline_test_plugin:NotSnake
not_a_class = plumbline_test_plugin:NOT_AN_EVALUATOR
explodes = plumbline_test_explodes:Anything
absent = plumbline_test_absent_module:Anything

[some.other.group]
word_count_elsewhere = plumbline_test_plugin:WordCount
"""


@pytest.fixture
def installed_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A real installed distribution (dist-info on sys.path) declaring evaluator plugins."""
    (tmp_path / "plumbline_test_plugin.py").write_text(PLUGIN_MODULE)
    (tmp_path / "plumbline_test_explodes.py").write_text("raise RuntimeError('boom at import')\n")
    dist_info = tmp_path / "plumbline_test_plugins-1.0.dist-info"
    dist_info.mkdir()
    metadata = "Metadata-Version: 2.1\nName: plumbline-test-plugins\nVersion: 1.0\n"
    (dist_info / "METADATA").write_text(metadata)
    (dist_info / "entry_points.txt").write_text(textwrap.dedent(ENTRY_POINTS))
    monkeypatch.syspath_prepend(str(tmp_path))
    available_evaluators(refresh=True)
    yield
    monkeypatch.undo()
    for module in ("plumbline_test_plugin", "plumbline_test_explodes"):
        sys.modules.pop(module, None)
    available_evaluators(refresh=True)


@pytest.mark.usefixtures("installed_plugins")
def test_entry_point_plugin_is_registered_and_usable() -> None:
    evaluator = get_evaluator("word_count", params={"target": 2})
    assert evaluator.evaluate(output="two words").passed
    assert not evaluator.evaluate(output="now three words").passed
    assert get_evaluator(**evaluator.spec()).spec() == {
        "name": "word_count",
        "threshold": 1.0,
        "params": {"target": 2},
    }
    with pytest.raises(ValueError, match=r"params\.target"):
        build_suite([{"name": "word_count", "params": {"target": "2"}}])


@pytest.mark.usefixtures("installed_plugins")
def test_a_plugin_refusing_its_params_any_way_is_a_config_error_naming_the_spec() -> None:
    """A plugin raising KeyError (not TypeError/ValueError) while being built was a 500 when a
    suite was submitted; it is a refusal of that spec, like any other bad params."""
    with pytest.raises(EvaluatorConfigError, match=r"specs\[1\]\.params.*KeyError.*mode is not"):
        build_suite([{"name": "word_count"}, {"name": "picky", "params": {"mode": 1}}])


@pytest.mark.usefixtures("installed_plugins")
def test_plugins_from_other_groups_are_ignored() -> None:
    with pytest.raises(UnknownEvaluator):
        get_evaluator("word_count_elsewhere")


def test_broken_entry_points_are_logged_and_skipped(
    installed_plugins: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="plumbline.evals.registry"):
        registry = available_evaluators(refresh=True)
    assert registry["exact_match"] is ExactMatch
    assert set(registry) == BUILTIN_NAMES | {"word_count", "picky"}
    for culprit in ("exact_match", "misnamed", "NotSnake", "not_a_class", "explodes", "absent"):
        assert f"'{culprit}'" in caplog.text
    assert "boom at import" in caplog.text
