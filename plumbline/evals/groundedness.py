"""Groundedness: how much of an answer the retrieved context actually backs."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from plumbline.evals.base import (
    PARAMS_CONFIG,
    Evaluator,
    Sample,
    Score,
    require_text,
    require_texts,
)
from plumbline.evals.text import Sentence, clip, content_terms, sentences

MAX_LISTED_SENTENCES = 20


class GroundednessParams(BaseModel):
    model_config = PARAMS_CONFIG

    support_threshold: float = Field(default=0.6, gt=0.0, le=1.0)
    """Share of a sentence's content words that must occur in the context."""


class Groundedness(Evaluator[GroundednessParams]):
    """Lexical support per sentence: cheap and deterministic, so it can gate every row.

    It catches invented entities, numbers and names; it cannot catch a sentence that
    reuses the context's words to say something the context does not.
    """

    name = "groundedness"
    default_threshold = 0.8
    params_model = GroundednessParams

    def _score(self, sample: Sample) -> Score:
        output = require_text("output", sample.output)
        context_terms = set().union(*map(content_terms, require_texts("context", sample.context)))
        claims = [(s, terms) for s in sentences(output) if (terms := content_terms(s.text))]
        if not claims:
            return 0.0, "output makes no checkable statement", _details(0, [], self.params)
        unsupported = [
            (sentence, support)
            for sentence, terms in claims
            if (support := len(terms & context_terms) / len(terms)) < self.params.support_threshold
        ]
        supported = len(claims) - len(unsupported)
        reason = f"{supported}/{len(claims)} sentences supported by the context"
        return supported / len(claims), reason, _details(len(claims), unsupported, self.params)


def _details(
    claims: int, unsupported: list[tuple[Sentence, float]], params: GroundednessParams
) -> dict[str, Any]:
    return {
        "sentences": claims,
        "supported": claims - len(unsupported),
        "unsupported_count": len(unsupported),
        "unsupported": [
            {"text": clip(s.text), "span": [s.start, s.end], "support": round(support, 3)}
            for s, support in unsupported[:MAX_LISTED_SENTENCES]
        ],
        "support_threshold": params.support_threshold,
    }
