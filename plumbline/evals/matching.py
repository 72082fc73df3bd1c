"""String checks against the row's expected answer: exact match, containment, regex."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from plumbline.evals.base import (
    PARAMS_CONFIG,
    Evaluator,
    InvalidInput,
    Phrase,
    RegexPattern,
    Sample,
    Score,
    require_text,
    require_texts,
)
from plumbline.evals.text import canonical, clip, collapse_whitespace, fold_case

MAX_LISTED = 20


class ExactMatchParams(BaseModel):
    model_config = PARAMS_CONFIG

    case_sensitive: bool = True
    strip: bool = True
    normalize_whitespace: bool = False


class ExactMatch(Evaluator[ExactMatchParams]):
    """`expected` may list several acceptable answers; matching any one scores 1.

    Texts are compared in NFC, so an accent typed precomposed or as a combining mark is the
    same answer (see `text.canonical` for why not NFKC).
    """

    name = "exact_match"
    default_threshold = 1.0
    params_model = ExactMatchParams

    def _normalize(self, text: str) -> str:
        if self.params.normalize_whitespace:
            text = collapse_whitespace(text)
        elif self.params.strip:
            text = text.strip()
        return canonical(text) if self.params.case_sensitive else fold_case(text)

    def _score(self, sample: Sample) -> Score:
        output = self._normalize(require_text("output", sample.output))
        references = require_texts("expected", sample.expected)
        index = next(
            (i for i, ref in enumerate(references) if self._normalize(ref) == output), None
        )
        details = {"matched_reference": index, "output": clip(output, 100)}
        if index is None:
            return 0.0, "output differs from every expected answer", details
        return 1.0, "output matches the expected answer", details


class ContainsParams(BaseModel):
    model_config = PARAMS_CONFIG

    substrings: Annotated[list[Phrase], Field(min_length=1)] | None = None
    """When omitted, the row's expected text(s) are the substrings."""
    mode: Literal["all", "any"] = "all"
    case_sensitive: bool = True


class Contains(Evaluator[ContainsParams]):
    """Mode all: score is the share of substrings found. Mode any: 1 if one is found.

    Output and substrings are compared in NFC (case-folded when case-insensitive). A blank
    substring would be found in every output, so the row's `expected` must not hold one:
    such a row fails as invalid input instead of passing.
    """

    name = "contains"
    default_threshold = 1.0
    params_model = ContainsParams

    def _fold(self, text: str) -> str:
        return canonical(text) if self.params.case_sensitive else fold_case(text)

    def _prepare(self) -> None:
        configured = self.params.substrings
        self._needles = None if configured is None else [self._fold(s) for s in configured]

    def _score(self, sample: Sample) -> Score:
        haystack = self._fold(require_text("output", sample.output))
        needles = self._needles
        if needles is None:
            needles = [self._fold(s) for s in _row_substrings(sample.expected)]
        found = [needle in haystack for needle in needles]
        hits = sum(found)
        missing = [clip(needle, 100) for needle, ok in zip(needles, found, strict=True) if not ok]
        details = {"found": hits, "total": len(needles), "missing": missing[:MAX_LISTED]}
        if self.params.mode == "any":
            return float(hits > 0), f"{hits}/{len(needles)} substrings found (any)", details
        return hits / len(needles), f"{hits}/{len(needles)} substrings found", details


def _row_substrings(expected: object) -> list[str]:
    """The row's expected text(s), held to the rule params.substrings follow (`Phrase`)."""
    substrings = require_texts("expected", expected)
    if not substrings:
        raise InvalidInput("expected must hold at least one substring to look for")
    if any(not substring.strip() for substring in substrings):
        raise InvalidInput(
            "expected must not be empty or only whitespace (it would be found in any output)"
        )
    return substrings


class RegexParams(BaseModel):
    model_config = PARAMS_CONFIG

    pattern: RegexPattern
    mode: Literal["search", "fullmatch"] = "search"
    ignore_case: bool = False


class Regex(Evaluator[RegexParams]):
    """Binary. Patterns run on every row, so avoid nested quantifiers on huge outputs."""

    name = "regex"
    default_threshold = 1.0
    params_model = RegexParams

    def _prepare(self) -> None:
        compiled = re.compile(self.params.pattern, re.IGNORECASE if self.params.ignore_case else 0)
        self._find = compiled.fullmatch if self.params.mode == "fullmatch" else compiled.search

    def _score(self, sample: Sample) -> Score:
        match = self._find(require_text("output", sample.output))
        if match is None:
            return 0.0, f"no {self.params.mode} match", {"matched": False, "span": None}
        details = {
            "matched": True,
            "span": [match.start(), match.end()],
            "match": clip(match.group()),
        }
        return 1.0, f"{self.params.mode} match", details
