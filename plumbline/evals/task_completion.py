"""Task completion: did an agent make the expected tool calls, efficiently, and finish?"""

from __future__ import annotations

import bisect
import json
import re
from collections import deque
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, BeforeValidator, Field, model_validator

from plumbline.evals.base import PARAMS_CONFIG, Evaluator, InvalidInput, RegexPattern, Sample, Score
from plumbline.evals.scoring import budget_score
from plumbline.evals.text import canonical, clip
from plumbline.evals.trajectory import Step, final_output, parse_trajectory

MAX_LISTED = 20


class ExpectedCall(BaseModel):
    model_config = PARAMS_CONFIG

    name: str = Field(min_length=1)
    arguments: dict[str, Any] = {}
    """Must be a subset of the actual call's arguments; extra actual arguments are fine."""


def _call_from_name(value: object) -> object:
    """A bare tool name is shorthand for a call with any arguments."""
    return {"name": value} if isinstance(value, str) else value


class SuccessCondition(BaseModel):
    """Every condition given must hold."""

    model_config = PARAMS_CONFIG

    output_contains: str | None = Field(default=None, min_length=1)
    output_regex: RegexPattern | None = None
    final_tool: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _has_a_condition(self) -> Self:
        if self.output_contains is None and self.output_regex is None and self.final_tool is None:
            raise ValueError("needs at least one of output_contains, output_regex, final_tool")
        return self


class TaskCompletionParams(BaseModel):
    model_config = PARAMS_CONFIG

    expected_tools: list[Annotated[ExpectedCall, BeforeValidator(_call_from_name)]] = []
    """Tool names or {name, arguments} objects."""
    order: Literal["strict", "any"] = "any"
    success: SuccessCondition | None = None
    max_steps: int | None = Field(default=None, ge=1)


@dataclass(frozen=True, slots=True)
class _Verdict:
    """One scored component and what to say about it."""

    score: float
    details: dict[str, Any]
    summary: str


class TaskCompletion(Evaluator[TaskCompletionParams]):
    """Score = mean of the components that apply: tool recall, argument match, order,
    success and step budget. Unconfigured, it checks that the agent ended with an answer.
    """

    name = "task_completion"
    default_threshold = 0.7
    params_model = TaskCompletionParams

    def _prepare(self) -> None:
        regex = self.params.success.output_regex if self.params.success else None
        self._success_regex = re.compile(canonical(regex)) if regex is not None else None
        self._checks_success = self.params.success is not None or (
            not self.params.expected_tools and self.params.max_steps is None
        )

    def _score(self, sample: Sample) -> Score:
        if sample.trajectory is None:
            raise InvalidInput("trajectory is required (a list of steps)")
        steps = parse_trajectory(sample.trajectory)
        calls = [step for step in steps if step.is_tool_call]
        answer = final_output(sample.output, steps)
        # NFC, as the other text evaluators: an accent typed either way is the same text.
        verdicts = self._verdicts(calls, None if answer is None else canonical(answer))
        loops = _loops(calls)
        details: dict[str, Any] = {
            "tool_calls": len(calls),
            "failed_steps": [step.index for step in steps if step.failed][:MAX_LISTED],
            "loops": loops,
            "components": {name: round(v.score, 4) for name, v in verdicts.items()},
        }
        for verdict in verdicts.values():
            details.update(verdict.details)
        summaries = [v.summary for v in verdicts.values()]
        if loops:
            summaries.append(
                f"repeated identical calls: {', '.join(loop['tool'] for loop in loops)}"
            )
        score = sum(v.score for v in verdicts.values()) / len(verdicts)
        return score, "; ".join(summaries), details

    def _verdicts(self, calls: list[Step], answer: str | None) -> dict[str, _Verdict]:
        expected = self.params.expected_tools
        strict = self.params.order == "strict"
        verdicts: dict[str, _Verdict] = {}
        if expected:
            matches = _match(expected, calls, strict)
            verdicts["recall"] = _recall(expected, calls, matches)
            if any(want.arguments for want in expected):
                verdicts["arguments"] = _arguments(expected, matches)
            if strict and len(expected) > 1:
                verdicts["order"] = _order(matches)
        if self._checks_success:
            verdicts["success"] = self._success(calls, answer)
        if self.params.max_steps is not None:
            verdicts["steps"] = _step_budget(len(calls), self.params.max_steps)
        return verdicts

    def _success(self, calls: list[Step], answer: str | None) -> _Verdict:
        condition = self.params.success
        if condition is None:
            checks = {"final_output_present": bool(answer and answer.strip())}
        else:
            checks = _condition_checks(condition, self._success_regex, calls, answer)
        succeeded = all(checks.values())
        summary = "succeeded" if succeeded else f"not successful ({_failed_names(checks)})"
        return _Verdict(float(succeeded), {"success": checks}, summary)


def _condition_checks(
    condition: SuccessCondition,
    regex: re.Pattern[str] | None,
    calls: list[Step],
    answer: str | None,
) -> dict[str, bool]:
    checks: dict[str, bool] = {}
    if condition.output_contains is not None:
        wanted = canonical(condition.output_contains)
        checks["output_contains"] = answer is not None and wanted in answer
    if regex is not None:
        checks["output_regex"] = answer is not None and regex.search(answer) is not None
    if condition.final_tool is not None:
        checks["final_tool"] = bool(calls) and calls[-1].name == condition.final_tool
    return checks


def _failed_names(checks: dict[str, bool]) -> str:
    return ", ".join(name for name, ok in checks.items() if not ok)


def _arguments_match(expected: dict[str, Any], actual: Any) -> bool:
    if not expected:
        return True
    return isinstance(actual, dict) and all(
        key in actual and same_json(actual[key], value) for key, value in expected.items()
    )


def same_json(a: Any, b: Any) -> bool:
    """Equality as JSON values: Python's == says True == 1 == 1.0, so `{"confirm": true}`
    would be met by `{"confirm": 1}`; in JSON a boolean is never a number (1 and 1.0 are the
    same number)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[key], b[key]) for key in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _match(expected: list[ExpectedCall], calls: list[Step], strict: bool) -> list[Step | None]:
    """Pair each expected call with at most one actual call and vice versa."""
    return _match_in_order(expected, calls) if strict else _match_any_order(expected, calls)


def _match_in_order(expected: list[ExpectedCall], calls: list[Step]) -> list[Step | None]:
    """Greedy one-to-one pairing in listed order, preferring calls whose arguments match and
    calls after the previous match, so in-order trajectories are recognised as such.
    """
    used: set[int] = set()
    last_index = -1
    matches: list[Step | None] = []
    for want in expected:
        candidates = [c for c in calls if c.name == want.name and c.index not in used]
        chosen = min(
            candidates,
            key=lambda c: (
                not _arguments_match(want.arguments, c.arguments),
                c.index <= last_index,
            ),
            default=None,
        )
        if chosen is not None:
            used.add(chosen.index)
            last_index = chosen.index
        matches.append(chosen)
    return matches


def _match_any_order(expected: list[ExpectedCall], calls: list[Step]) -> list[Step | None]:
    """A pairing with the most expected calls matched and the most argument sets matched,
    so the score does not depend on the order of the calls or of the expectations.

    Greedy pairing is not enough: a bare "search" listed first would take the one search
    call a later {"name": "search", "arguments": ...} needed. So first a maximum bipartite
    matching (augmenting paths) between the expectations that name arguments and the calls
    whose arguments fit them; then every expectation still open, bare or not, takes an
    unused call of its tool. Any expectation of a tool can take any call of it, so filling
    up reaches the largest possible number of matched calls (per tool, the smaller of
    expected and actual count) without undoing an argument match: both components are at
    their maximum together. Ties go to earlier expectations and earlier calls.
    """
    fitting = [
        [
            position
            for position, call in enumerate(calls)
            if call.name == want.name and _arguments_match(want.arguments, call.arguments)
        ]
        if want.arguments
        else []
        for want in expected
    ]
    call_of: dict[int, int] = {}  # expectation -> position of its call
    owner: dict[int, int] = {}  # position of a call -> its expectation
    for start in range(len(expected)):
        _augment(start, fitting, call_of, owner)
    unused = [call for position, call in enumerate(calls) if position not in owner]
    matches: list[Step | None] = []
    for number, want in enumerate(expected):
        if number in call_of:
            matches.append(calls[call_of[number]])
            continue
        chosen = next((call for call in unused if call.name == want.name), None)
        if chosen is not None:
            unused.remove(chosen)
        matches.append(chosen)
    return matches


def _augment(
    start: int, edges: list[list[int]], call_of: dict[int, int], owner: dict[int, int]
) -> bool:
    """Match expectation `start` along a shortest augmenting path (breadth-first, so no
    recursion however many calls there are); False when none exists.
    """
    reached_from: dict[int, int] = {}  # call position -> expectation it was reached from
    queue = deque([start])
    while queue:
        expectation = queue.popleft()
        for position in edges[expectation]:
            if position in reached_from:
                continue
            reached_from[position] = expectation
            if position in owner:
                queue.append(owner[position])
                continue
            while True:  # flip the path back to start
                expectation = reached_from[position]
                previous = call_of.get(expectation)
                call_of[expectation] = position
                owner[position] = expectation
                if previous is None:
                    return True
                position = previous
    return False


def _recall(
    expected: list[ExpectedCall], calls: list[Step], matches: list[Step | None]
) -> _Verdict:
    missing = [want.name for want, match in zip(expected, matches, strict=True) if match is None]
    matched_indices = {match.index for match in matches if match is not None}
    extra = [c for c in calls if c.index not in matched_indices]
    found = len(expected) - len(missing)
    details = {
        "expected_calls": len(expected),
        "matched_calls": found,
        "missing": missing,
        "extra_count": len(extra),
        "extra": [{"tool": c.name, "index": c.index} for c in extra[:MAX_LISTED]],
    }
    summary = f"{found}/{len(expected)} expected calls made"
    if missing:
        summary += f" (missing: {', '.join(missing)})"
    return _Verdict(found / len(expected), details, summary)


def _arguments(expected: list[ExpectedCall], matches: list[Step | None]) -> _Verdict:
    constrained = [(w, m) for w, m in zip(expected, matches, strict=True) if w.arguments]
    mismatches = [
        {"tool": want.name, "index": match.index, "mismatched": _mismatched(want, match)}
        for want, match in constrained
        if match is not None and not _arguments_match(want.arguments, match.arguments)
    ]
    good = sum(m is not None and _arguments_match(w.arguments, m.arguments) for w, m in constrained)
    details = {"argument_mismatches": mismatches[:MAX_LISTED]}
    return _Verdict(
        good / len(constrained), details, f"{good}/{len(constrained)} argument sets match"
    )


def _mismatched(want: ExpectedCall, match: Step) -> dict[str, Any]:
    actual = match.arguments if isinstance(match.arguments, dict) else {}
    return {
        key: {"expected": value, "actual": clip(json.dumps(actual.get(key), default=str))}
        for key, value in want.arguments.items()
        if key not in actual or not same_json(actual[key], value)
    }


def _order(matches: list[Step | None]) -> _Verdict:
    positions = [match.index for match in matches if match is not None]
    in_order = _longest_increasing_subsequence(positions)
    score = in_order / len(positions) if positions else 0.0
    summary = "calls in expected order" if score == 1.0 else "calls out of expected order"
    return _Verdict(score, {"in_order": score == 1.0}, summary)


def _longest_increasing_subsequence(values: list[int]) -> int:
    """Length of the longest increasing subsequence (patience sorting)."""
    tails: list[int] = []
    for value in values:
        slot = bisect.bisect_left(tails, value)
        tails[slot : slot + 1] = [value]
    return len(tails)


def _step_budget(steps: int, max_steps: int) -> _Verdict:
    summary = f"{steps} steps" + (f" exceeds max {max_steps}" if steps > max_steps else "")
    return _Verdict(budget_score(steps, max_steps), {"max_steps": max_steps}, summary)


def _loops(calls: list[Step]) -> list[dict[str, Any]]:
    """Identical calls (same tool, same arguments) repeated: the classic stuck agent."""
    seen: dict[tuple[str, str], list[int]] = {}
    for call in calls:
        seen.setdefault(call.identity, []).append(call.index)
    return [
        {
            "tool": name,
            "arguments": clip(arguments),
            "count": len(indices),
            "indices": indices[:MAX_LISTED],
        }
        for (name, arguments), indices in seen.items()
        if len(indices) > 1
    ][:MAX_LISTED]
