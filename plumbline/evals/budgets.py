"""Budgets: a slightly late or long answer scores a little lower instead of falling off a cliff."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, Field, model_validator

from plumbline.evals.base import (
    PARAMS_CONFIG,
    Evaluator,
    InvalidInput,
    Sample,
    Score,
    require_number,
    require_text,
)
from plumbline.evals.scoring import budget_score
from plumbline.evals.text import canonical, count_tokens


class LatencyBudgetParams(BaseModel):
    model_config = PARAMS_CONFIG

    max_ms: float = Field(gt=0)


class LatencyBudget(Evaluator[LatencyBudgetParams]):
    """1 within max_ms, linearly down to 0 at twice max_ms; passes only within budget."""

    name = "latency_budget"
    default_threshold = 1.0
    params_model = LatencyBudgetParams

    def _score(self, sample: Sample) -> Score:
        latency = require_number("latency_ms", sample.latency_ms)
        if latency < 0:
            raise InvalidInput(f"latency_ms must not be negative, got {latency}")
        score = budget_score(latency, self.params.max_ms)
        details = {"latency_ms": latency, "max_ms": self.params.max_ms}
        return score, f"{latency:g} ms against a {self.params.max_ms:g} ms budget", details


class LengthBudgetParams(BaseModel):
    model_config = PARAMS_CONFIG

    max_chars: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    """Word tokens (CJK characters count one each), not the model tokenizer's tokens."""
    min_chars: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _has_a_limit(self) -> Self:
        if self.max_chars is None and self.max_tokens is None and self.min_chars is None:
            raise ValueError("needs at least one of max_chars, max_tokens, min_chars")
        if self.max_chars is not None and (self.min_chars or 0) > self.max_chars:
            raise ValueError("min_chars must not exceed max_chars")
        return self


class LengthBudget(Evaluator[LengthBudgetParams]):
    """The score is the worst of the configured limits; maxima decay like latency, a
    minimum scores the share of it that was reached.
    """

    name = "length_budget"
    default_threshold = 1.0
    params_model = LengthBudgetParams

    def _score(self, sample: Sample) -> Score:
        # Characters as written, not code points: in NFC a decomposed "é" (e + combining
        # accent) counts one, as its precomposed spelling does.
        output = canonical(require_text("output", sample.output))
        params = self.params
        measured: dict[str, Any] = {"chars": len(output)}
        scores: dict[str, float] = {}
        if params.max_chars is not None:
            scores["max_chars"] = budget_score(len(output), params.max_chars)
        if params.min_chars is not None:
            scores["min_chars"] = min(1.0, len(output) / params.min_chars)
        if params.max_tokens is not None:
            measured["tokens"] = count_tokens(output)
            scores["max_tokens"] = budget_score(measured["tokens"], params.max_tokens)
        broken = [limit for limit, score in scores.items() if score < 1.0]
        reason = f"outside {', '.join(broken)}" if broken else "within all limits"
        return min(scores.values()), reason, measured | {"limit_scores": scores}
