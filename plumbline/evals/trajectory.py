"""Turn agent traces in their common shapes into one list of steps.

Accepted step shapes: plain tool-call dicts (`name`/`tool`/`tool_name` plus `arguments`/
`args`/`input`), OpenAI tool calls (`{"function": {"name", "arguments"}}`), and span dicts
with `attributes` following OpenInference (`openinference.span.kind`, `tool.name`,
`input.value`, `output.value`) or OpenTelemetry GenAI (`gen_ai.tool.name`, ...) naming,
flat ("tool.name") or nested ({"tool": {"name": ...}}).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from plumbline.evals.base import InvalidInput, describe_type
from plumbline.evals.jsontext import parse_json

_SPAN_TOOL_NAME_KEYS = ("tool.name", "gen_ai.tool.name")
_SPAN_ARGUMENT_KEYS = ("tool_call.function.arguments", "gen_ai.tool.call.arguments", "input.value")
_SPAN_OUTPUT_KEYS = ("output.value", "gen_ai.tool.call.result")
_ERROR_STATUSES = frozenset({"ERROR", "STATUS_CODE_ERROR", "2", "FAILED", "FAILURE"})


@dataclass(frozen=True, slots=True)
class Step:
    index: int
    name: str
    arguments: Any
    output: str | None
    is_tool_call: bool
    failed: bool

    @property
    def identity(self) -> tuple[str, str]:
        """Two steps with equal identity are the same call repeated (a loop candidate)."""
        return self.name, json.dumps(self.arguments, sort_keys=True, default=str)


def parse_trajectory(trajectory: object) -> list[Step]:
    if not isinstance(trajectory, list):
        raise InvalidInput(f"trajectory must be a list of steps, got {describe_type(trajectory)}")
    return [_parse_step(index, raw) for index, raw in enumerate(trajectory)]


def final_output(explicit: object, steps: list[Step]) -> str | None:
    """The answer the agent ended with.

    Without an explicit output, the last non-tool span with an output wins: that is the
    final LLM or root agent span whether spans are listed by start or by end time.
    """
    if explicit is not None:
        if not isinstance(explicit, str):
            raise InvalidInput(f"output must be a string, got {describe_type(explicit)}")
        return explicit
    with_output = [step for step in steps if step.output is not None]
    narrative = [step for step in with_output if not step.is_tool_call]
    chosen = narrative or with_output
    return chosen[-1].output if chosen else None


def _parse_step(index: int, raw: object) -> Step:
    if not isinstance(raw, dict):
        raise InvalidInput(f"trajectory[{index}] must be an object, got {describe_type(raw)}")
    if "attributes" in raw:
        return _span_step(index, raw)
    return _call_step(index, raw)


def _call_step(index: int, raw: dict[str, Any]) -> Step:
    function = raw.get("function")
    function = function if isinstance(function, dict) else {}
    name = _first_present(raw, ("name", "tool", "tool_name")) or function.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"trajectory[{index}] has no tool name (name, tool or tool_name)")
    arguments = _first_present(raw, ("arguments", "args", "input")) or function.get("arguments")
    output = _first_present(raw, ("output", "result"))
    return Step(index, name, _decode_arguments(arguments), _text(output), True, _failed(raw))


def _span_step(index: int, raw: dict[str, Any]) -> Step:
    attributes = raw["attributes"]
    if not isinstance(attributes, dict):
        raise InvalidInput(f"trajectory[{index}].attributes must be an object")
    kind = _attribute(attributes, "openinference.span.kind") or raw.get("span_kind")
    tool_name = next(filter(None, (_attribute(attributes, k) for k in _SPAN_TOOL_NAME_KEYS)), None)
    is_tool_call = tool_name is not None or str(kind).upper() == "TOOL"
    name = tool_name or raw.get("name")
    if is_tool_call and (not isinstance(name, str) or not name):
        raise InvalidInput(f"trajectory[{index}] is a tool span without a tool name")
    arguments = next(filter(None, (_attribute(attributes, k) for k in _SPAN_ARGUMENT_KEYS)), None)
    output = next(filter(None, (_attribute(attributes, k) for k in _SPAN_OUTPUT_KEYS)), None)
    return Step(
        index,
        name if isinstance(name, str) else "",
        _decode_arguments(arguments),
        _text(output),
        is_tool_call,
        _failed(raw),
    )


def _first_present(raw: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((raw[key] for key in keys if raw.get(key) is not None), None)


def _attribute(attributes: dict[str, Any], dotted_key: str) -> Any:
    """Span exporters emit either flat dotted keys or nested objects; accept both."""
    if dotted_key in attributes:
        return attributes[dotted_key]
    node: Any = attributes
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _decode_arguments(arguments: Any) -> Any:
    """Tool arguments usually travel as a JSON string; compare them as the object they encode."""
    if arguments is None:
        return {}
    if isinstance(arguments, str):
        try:
            return parse_json(arguments)
        except ValueError:
            return arguments
    return arguments


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _failed(raw: dict[str, Any]) -> bool:
    if raw.get("error"):
        return True
    status = raw.get("status_code", raw.get("status"))
    if isinstance(status, dict):
        status = status.get("code", status.get("status_code"))
    return str(status).upper() in _ERROR_STATUSES
