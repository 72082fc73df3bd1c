"""Compliance: no personal data, no banned terms, every required disclaimer present."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel

from plumbline.evals.base import PARAMS_CONFIG, Evaluator, Phrase, Sample, Score, require_text
from plumbline.evals.text import canonical, phrase_pattern

MAX_LISTED_VIOLATIONS = 50

PiiKind = Literal["email", "phone", "credit_card", "ssn", "iban"]


def luhn_valid(digits: str) -> bool:
    """Card numbers carry a Luhn check digit; requiring it keeps order ids from matching."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    """ISO 13616 mod-97 check."""
    compact = candidate.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


_DIGIT_GROUP_RE = re.compile(r"\d+")


def _digits(text: str) -> str:
    return "".join(char for char in text if char.isdigit())


def _card_valid(text: str) -> bool:
    digits = _digits(text)
    return 13 <= len(digits) <= 19 and luhn_valid(digits)


def _card_span(text: str) -> tuple[int, int] | None:
    """Where in a card candidate the card number is: the whole candidate, else its longest
    run of whole digit groups that is one (leftmost first). The pattern reads up to 19
    digits, so a card written next to other numbers, "4111 1111 1111 1111 12/26" (its
    expiry), is one 18-digit candidate that fails Luhn while its first four groups are the
    card. A run of digits without separators is taken whole, as before."""
    groups = [(m.start(), m.end()) for m in _DIGIT_GROUP_RE.finditer(text)]
    for size in range(len(groups), 0, -1):
        for first in range(len(groups) - size + 1):
            start, end = groups[first][0], groups[first + size - 1][1]
            if _card_valid(text[start:end]):
                return start, end
    return None


def _phone_valid(text: str) -> bool:
    return 7 <= len(_digits(text)) <= 15


def _always(_: str) -> bool:
    return True


# Listed in priority order: at one position the first kind that matches wins, so a
# card number is reported as a card, not as a phone number.
_PII_DETECTORS: dict[str, tuple[str, Callable[[str], bool]]] = {
    "credit_card": (r"(?<![\d-])\d(?:[ -]?\d){12,18}(?!\d)", _card_valid),
    "iban": (r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b", iban_valid),
    "ssn": (r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])", _always),
    "email": (
        r"(?<![\w.%+-])[\w.%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])",
        _always,
    ),
    "phone": (
        r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"
        r"|(?:\(\d{3}\) ?|\d{3}[ .-])\d{3}[ .-]\d{4})(?!\w)",
        _phone_valid,
    ),
}


class IsCompliantParams(BaseModel):
    model_config = PARAMS_CONFIG

    pii: list[PiiKind] = ["email", "phone", "credit_card"]
    banned_terms: list[Phrase] = []
    required_disclaimers: list[Phrase] = []


class IsCompliant(Evaluator[IsCompliantParams]):
    """Binary: any violation fails the row. Details carry spans, never the matched personal
    data itself, so results do not become a second copy of the leak.
    """

    name = "is_compliant"
    default_threshold = 1.0
    params_model = IsCompliantParams

    def _prepare(self) -> None:
        self._pii_res = [
            (kind, re.compile(pattern), valid)
            for kind, (pattern, valid) in _PII_DETECTORS.items()
            if kind in self.params.pii
        ]
        terms = sorted(map(canonical, self.params.banned_terms), key=len, reverse=True)
        banned_body = "|".join(phrase_pattern(term) for term in terms)
        self._banned_re = (
            re.compile(rf"(?<!\w)(?:{banned_body})(?!\w)", re.IGNORECASE) if terms else None
        )
        self._disclaimers = [
            (text, re.compile(phrase_pattern(canonical(text)), re.IGNORECASE))
            for text in self.params.required_disclaimers
        ]

    def _score(self, sample: Sample) -> Score:
        # NFC, as the other text evaluators: "médico" typed with a combining accent is the
        # same word, so it neither evades a banned term nor misses a disclaimer. Spans are
        # positions in the NFC text (the same as the output's unless it was decomposed).
        output = canonical(require_text("output", sample.output))
        violations = [*self._pii(output), *self._banned(output), *self._missing(output)]
        counts = Counter(violation["type"] for violation in violations)
        details = {
            "violation_count": len(violations),
            "counts": dict(counts),
            "violations": violations[:MAX_LISTED_VIOLATIONS],
        }
        if not violations:
            return 1.0, "no violations", details
        summary = ", ".join(f"{count} {kind}" for kind, count in counts.items())
        return 0.0, f"{len(violations)} violation(s): {summary}", details

    def _pii(self, output: str) -> list[dict[str, Any]]:
        """Each kind is searched on its own and only its valid candidates are kept; then
        the leftmost wins, and at one position the kind listed first. One alternation of
        all kinds would let a candidate that fails its check (two phone numbers or SSNs in
        a row read as one 18-digit "card" failing Luhn) consume the text, hiding the real
        personal data inside it."""
        candidates = sorted(
            (match.start() + span[0], priority, match.start() + span[1], kind)
            for priority, (kind, pattern, valid) in enumerate(self._pii_res)
            for match in pattern.finditer(output)
            if (span := _valid_span(kind, match.group(), valid)) is not None
        )
        violations: list[dict[str, Any]] = []
        covered_until = 0
        for start, _priority, end, kind in candidates:
            if start >= covered_until:
                violations.append({"type": f"pii.{kind}", "span": [start, end]})
                covered_until = end
        return violations

    def _banned(self, output: str) -> list[dict[str, Any]]:
        if self._banned_re is None:
            return []
        return [
            {"type": "banned_term", "span": [match.start(), match.end()], "text": match.group()}
            for match in self._banned_re.finditer(output)
        ]

    def _missing(self, output: str) -> list[dict[str, Any]]:
        return [
            {"type": "missing_disclaimer", "span": None, "disclaimer": text}
            for text, pattern in self._disclaimers
            if pattern.search(output) is None
        ]


def _valid_span(kind: str, text: str, valid: Callable[[str], bool]) -> tuple[int, int] | None:
    """The part of a candidate that is personal data of `kind`, None when no part is."""
    if kind == "credit_card":
        return _card_span(text)
    return (0, len(text)) if valid(text) else None
