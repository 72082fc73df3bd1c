from __future__ import annotations

import itertools
import json
import random
from typing import Any

import pytest

from plumbline.evals import TaskCompletion

BOOKING = [
    {"name": "search_flights", "arguments": {"from": "OSL", "to": "LHR"}},
    {"name": "check_seat", "arguments": {"flight": "BA763"}},
    {"name": "book_flight", "arguments": {"flight": "BA763", "seat": "12A"}, "output": "PNR X1"},
]
EXPECTED = [
    "search_flights",
    {"name": "book_flight", "arguments": {"flight": "BA763"}},
]


def _components(result: Any) -> dict[str, float]:
    return dict(result.details["components"])


def test_trajectory_making_every_expected_call_scores_one() -> None:
    result = TaskCompletion(expected_tools=EXPECTED, order="strict").evaluate(trajectory=BOOKING)
    assert result.score == 1.0
    assert _components(result) == {"recall": 1.0, "arguments": 1.0, "order": 1.0}
    assert result.details["missing"] == []
    assert result.details["extra"] == [{"tool": "check_seat", "index": 1}]


def test_missing_call_lowers_recall_and_is_named() -> None:
    result = TaskCompletion(expected_tools=EXPECTED).evaluate(trajectory=BOOKING[:2])
    assert _components(result) == {"recall": 0.5, "arguments": 0.0}
    assert result.score == 0.25
    assert result.details["missing"] == ["book_flight"]
    assert "missing: book_flight" in result.reason


def test_wrong_arguments_are_reported_per_key() -> None:
    trajectory = [BOOKING[0], {"name": "book_flight", "arguments": {"flight": "LH900"}}]
    result = TaskCompletion(expected_tools=EXPECTED).evaluate(trajectory=trajectory)
    assert _components(result) == {"recall": 1.0, "arguments": 0.0}
    [mismatch] = result.details["argument_mismatches"]
    assert mismatch["tool"] == "book_flight"
    assert mismatch["mismatched"] == {"flight": {"expected": "BA763", "actual": '"LH900"'}}


def test_arguments_given_as_json_string_are_compared_as_objects() -> None:
    trajectory = [
        {"tool": "search_flights"},
        {"tool": "book_flight", "args": json.dumps({"seat": "1C", "flight": "BA763"})},
    ]
    result = TaskCompletion(expected_tools=EXPECTED).evaluate(trajectory=trajectory)
    assert result.score == 1.0


def test_matching_prefers_the_call_with_the_right_arguments() -> None:
    trajectory = [
        {"name": "book_flight", "arguments": {"flight": "WRONG"}},
        {"name": "book_flight", "arguments": {"flight": "BA763"}},
    ]
    expected = [{"name": "book_flight", "arguments": {"flight": "BA763"}}]
    result = TaskCompletion(expected_tools=expected).evaluate(trajectory=trajectory)
    assert result.score == 1.0
    assert result.details["extra"] == [{"tool": "book_flight", "index": 0}]


def test_any_order_scores_the_same_calls_the_same_whatever_their_order() -> None:
    evaluator = TaskCompletion(
        expected_tools=["search", {"name": "search", "arguments": {"q": "refund policy"}}]
    )
    calls = [
        {"name": "search", "arguments": {"q": "refund policy"}},
        {"name": "search", "arguments": {"q": "refund window"}},
    ]
    # A greedy pairing let the bare "search" take the refund-policy call in this order,
    # leaving the expectation with arguments only the wrong one.
    given_order = evaluator.evaluate(trajectory=calls, output="done")
    reversed_order = evaluator.evaluate(trajectory=calls[::-1], output="done")
    assert given_order.score == reversed_order.score == 1.0
    assert given_order.details["argument_mismatches"] == []


def test_a_bare_tool_name_does_not_take_the_only_call_an_argument_set_fits() -> None:
    expected = ["book_flight", {"name": "book_flight", "arguments": {"flight": "BA763"}}]
    trajectory = [{"name": "book_flight", "arguments": {"flight": "BA763"}}]
    result = TaskCompletion(expected_tools=expected).evaluate(trajectory=trajectory)
    assert _components(result) == {"recall": 0.5, "arguments": 1.0}
    assert result.details["missing"] == ["book_flight"]


def _best_any_order_score(expected: list[Any], calls: list[dict[str, Any]]) -> float:
    """Exhaustive search over every one-to-one pairing of expectations with same-name calls."""
    wants = [{"name": w, "arguments": {}} if isinstance(w, str) else w for w in expected]
    constrained = sum(1 for want in wants if want["arguments"])
    best = 0.0
    for pairing in itertools.product([None, *range(len(calls))], repeat=len(wants)):
        used = [position for position in pairing if position is not None]
        if len(used) != len(set(used)) or any(
            position is not None and calls[position]["name"] != want["name"]
            for want, position in zip(wants, pairing, strict=True)
        ):
            continue
        fitting = sum(
            position is not None
            and bool(want["arguments"])
            and want["arguments"].items() <= calls[position]["arguments"].items()
            for want, position in zip(wants, pairing, strict=True)
        )
        components = [len(used) / len(wants)] + ([fitting / constrained] if constrained else [])
        best = max(best, sum(components) / len(components))
    return best


def test_any_order_matching_is_optimal_and_independent_of_both_orders() -> None:
    rng = random.Random(11)
    for _ in range(150):
        expected: list[Any] = [
            tool if rng.random() < 0.4 else {"name": tool, "arguments": {"q": rng.choice("xyz")}}
            for tool in rng.choices("ab", k=rng.randint(1, 4))
        ]
        calls = [
            {"name": rng.choice("ab"), "arguments": {"q": rng.choice("xyz")}}
            for _ in range(rng.randint(0, 5))
        ]
        score = TaskCompletion(expected_tools=expected).evaluate(trajectory=calls).score
        assert score == pytest.approx(_best_any_order_score(expected, calls))
        shuffled_expected = rng.sample(expected, len(expected))
        shuffled_calls = rng.sample(calls, len(calls))
        shuffled = TaskCompletion(expected_tools=shuffled_expected).evaluate(
            trajectory=shuffled_calls
        )
        assert shuffled.score == pytest.approx(score)


def test_order_counts_only_in_strict_mode() -> None:
    reversed_trajectory = list(reversed(BOOKING))
    strict = TaskCompletion(expected_tools=EXPECTED, order="strict").evaluate(
        trajectory=reversed_trajectory
    )
    relaxed = TaskCompletion(expected_tools=EXPECTED, order="any").evaluate(
        trajectory=reversed_trajectory
    )
    assert _components(strict)["order"] == 0.5
    assert strict.details["in_order"] is False
    assert "order" not in _components(relaxed)
    assert relaxed.score == 1.0
    assert strict.score == pytest.approx(2.5 / 3)


def test_success_conditions_all_have_to_hold() -> None:
    evaluator = TaskCompletion(
        success={"output_contains": "PNR", "output_regex": r"X\d", "final_tool": "book_flight"}
    )
    assert evaluator.evaluate(trajectory=BOOKING, output="Booked, PNR X1").score == 1.0
    failed = evaluator.evaluate(trajectory=BOOKING[:2], output="Booked, PNR pending")
    assert failed.score == 0.0
    assert failed.details["success"] == {
        "output_contains": True,
        "output_regex": False,
        "final_tool": False,
    }
    assert "output_regex, final_tool" in failed.reason


def test_final_output_falls_back_to_the_last_step_output() -> None:
    evaluator = TaskCompletion(success={"output_contains": "PNR X1"})
    assert evaluator.evaluate(trajectory=BOOKING).score == 1.0


def test_loops_are_reported_and_penalised_over_max_steps() -> None:
    stuck = [BOOKING[0]] + [{"name": "check_seat", "arguments": {"flight": "BA763"}}] * 9
    result = TaskCompletion(expected_tools=["search_flights"], max_steps=5).evaluate(
        trajectory=stuck
    )
    [loop] = result.details["loops"]
    assert (loop["tool"], loop["count"], loop["indices"][:3]) == ("check_seat", 9, [1, 2, 3])
    assert _components(result) == {"recall": 1.0, "steps": 0.0}
    assert result.score == 0.5
    assert "repeated identical calls: check_seat" in result.reason


def test_step_budget_decays_linearly() -> None:
    calls = [{"name": f"tool_{n}"} for n in range(7)]
    result = TaskCompletion(max_steps=5).evaluate(trajectory=calls)
    assert result.score == pytest.approx(0.6)


def test_repeated_calls_with_different_arguments_are_not_a_loop() -> None:
    pages = [{"name": "read_page", "arguments": {"page": n}} for n in range(5)]
    result = TaskCompletion(max_steps=5).evaluate(trajectory=pages)
    assert result.details["loops"] == []
    assert result.score == 1.0


def test_loop_within_budget_is_reported_but_not_penalised() -> None:
    twice = [{"name": "search"}, {"name": "search"}]
    result = TaskCompletion(max_steps=3).evaluate(trajectory=twice)
    assert result.details["loops"][0]["count"] == 2
    assert result.score == 1.0


OPENINFERENCE_TRACE = [
    {
        "name": "agent",
        "parent_id": None,
        "attributes": {"openinference.span.kind": "AGENT", "input.value": "Weather in Oslo?"},
    },
    {
        "name": "ChatCompletion",
        "attributes": {"openinference.span.kind": "LLM", "output.value": "calling a tool"},
    },
    {
        "name": "get_weather",
        "attributes": {
            "openinference.span.kind": "TOOL",
            "tool.name": "get_weather",
            "input.value": '{"city": "Oslo"}',
            "output.value": "-3C",
        },
    },
    {
        "name": "ChatCompletion",
        "status_code": "OK",
        "attributes": {"openinference": {"span": {"kind": "LLM"}}, "output": {"value": "-3C now"}},
    },
]


def test_openinference_spans_are_understood() -> None:
    evaluator = TaskCompletion(
        expected_tools=[{"name": "get_weather", "arguments": {"city": "Oslo"}}],
        success={"output_contains": "-3C now"},
    )
    result = evaluator.evaluate(input="Weather in Oslo?", trajectory=OPENINFERENCE_TRACE)
    assert result.score == 1.0
    assert result.details["tool_calls"] == 1


def test_default_configuration_checks_for_a_final_answer() -> None:
    assert TaskCompletion().evaluate(trajectory=OPENINFERENCE_TRACE).score == 1.0
    no_answer = [{"name": "search"}, {"name": "search", "output": "  "}]
    result = TaskCompletion().evaluate(trajectory=no_answer)
    assert result.score == 0.0
    assert result.details["success"] == {"final_output_present": False}


def test_openai_tool_calls_and_error_statuses_are_recognised() -> None:
    trajectory = [
        {"type": "function", "function": {"name": "lookup", "arguments": '{"id": 7}'}},
        {"name": "lookup", "status": {"code": "STATUS_CODE_ERROR"}},
        {"name": "lookup", "error": "timeout"},
        {"name": "notify", "status": "ok"},
    ]
    evaluator = TaskCompletion(expected_tools=[{"name": "lookup", "arguments": {"id": 7}}])
    result = evaluator.evaluate(trajectory=trajectory)
    assert result.score == 1.0
    assert result.details["failed_steps"] == [1, 2]


def test_empty_trajectory_makes_no_expected_call() -> None:
    result = TaskCompletion(expected_tools=["search"]).evaluate(trajectory=[])
    assert (result.score, result.details["missing"]) == (0.0, ["search"])


@pytest.mark.parametrize(
    ("trajectory", "output", "message"),
    [
        (None, None, "trajectory is required"),
        ({"name": "search"}, None, "trajectory must be a list of steps, got dict"),
        ([{"name": "a"}, "b"], None, "trajectory[1] must be an object, got str"),
        ([{"arguments": {}}], None, "trajectory[0] has no tool name"),
        ([{"attributes": {"openinference.span.kind": "TOOL"}}], None, "tool span without"),
        ([{"name": "a", "attributes": []}], None, "trajectory[0].attributes must be an object"),
        ([{"name": "a"}], {"answer": 1}, "output must be a string, got dict"),
    ],
)
def test_malformed_trajectory_fails_the_row(trajectory: Any, output: Any, message: str) -> None:
    result = TaskCompletion().evaluate(trajectory=trajectory, output=output)
    assert (result.score, result.passed) == (0.0, False)
    assert message in result.details["error"]


def test_huge_trajectory_stays_bounded_in_details() -> None:
    trajectory = [{"name": f"t{n % 50}", "arguments": {"n": n % 50}} for n in range(20_000)]
    result = TaskCompletion(expected_tools=["t1"], max_steps=100).evaluate(trajectory=trajectory)
    assert result.details["extra_count"] == 19_999
    assert len(result.details["extra"]) == 20
    assert len(result.details["loops"]) == 20
    assert len(json.dumps(result.details)) < 20_000
