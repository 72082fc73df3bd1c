"""Strict JSON parsing of model text, shared by json_validation and llm_judge."""

from __future__ import annotations

import json
import re
from typing import Any

_FENCE_RE = re.compile(
    r"\A\s*```(?:json)?[ \t]*\r?\n(.*?)(?:\r?\n)?[ \t]*```\s*\Z", re.DOTALL | re.IGNORECASE
)


def unfence(text: str) -> str:
    """Models often wrap JSON in a ```json block; only a block spanning the whole text counts.

    Line breaks may be LF or CRLF (outputs that went through Windows tooling or HTTP bodies).
    """
    match = _FENCE_RE.match(text)
    return match.group(1) if match else text


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(text: str) -> Any:
    """json.loads minus its leniencies (NaN/Infinity); every failure is a ValueError."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise ValueError("nesting too deep") from None
