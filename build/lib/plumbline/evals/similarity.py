"""Similarity to a reference answer: token F1 (bag of words) and ROUGE-L (word order)."""

from __future__ import annotations

from collections import Counter
from typing import Literal

from pydantic import BaseModel

from plumbline.evals.base import (
    PARAMS_CONFIG,
    Evaluator,
    Sample,
    Score,
    require_text,
    require_texts,
)
from plumbline.evals.scoring import f_measure
from plumbline.evals.text import lcs_length, tokens


class SimilarityParams(BaseModel):
    model_config = PARAMS_CONFIG

    metric: Literal["f1", "rouge_l"] = "f1"


def token_f1(predicted: list[str], reference: list[str]) -> float:
    """SQuAD-style: overlap of token multisets."""
    overlap = sum((Counter(predicted) & Counter(reference)).values())
    return f_measure(overlap, len(predicted), len(reference))


def rouge_l(predicted: list[str], reference: list[str]) -> float:
    """F-measure of the longest common subsequence (ROUGE-L, beta = 1)."""
    return f_measure(lcs_length(predicted, reference), len(predicted), len(reference))


class Similarity(Evaluator[SimilarityParams]):
    """Several expected answers: the best-matching one counts, as in SQuAD."""

    name = "similarity"
    default_threshold = 0.5
    params_model = SimilarityParams

    def _score(self, sample: Sample) -> Score:
        predicted = tokens(require_text("output", sample.output))
        references = [tokens(text) for text in require_texts("expected", sample.expected)]
        scored = [
            {"f1": token_f1(predicted, ref), "rouge_l": rouge_l(predicted, ref)}
            for ref in references
        ]
        if not scored:
            return 0.0, "no expected answer to compare with", {"f1": 0.0, "rouge_l": 0.0}
        metric = self.params.metric
        best_index, best = max(enumerate(scored), key=lambda pair: pair[1][metric])
        details = {
            "f1": round(best["f1"], 4),
            "rouge_l": round(best["rouge_l"], 4),
            "best_reference": best_index,
        }
        return best[metric], f"{metric} = {best[metric]:.2f}", details
