"""Small scoring formulas reused across evaluators so they decay and combine the same way."""

from __future__ import annotations


def budget_score(value: float, limit: float) -> float:
    """1 within the limit, falling linearly to 0 at twice the limit."""
    if value <= limit:
        return 1.0
    return max(0.0, 2.0 - value / limit)


def f_measure(overlap: int, predicted: int, reference: int) -> float:
    """Harmonic mean of precision and recall; two empty texts agree perfectly."""
    if predicted == 0 or reference == 0:
        return float(predicted == reference)
    if overlap == 0:
        return 0.0
    precision = overlap / predicted
    recall = overlap / reference
    return 2 * precision * recall / (precision + recall)
