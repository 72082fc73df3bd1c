"""A third-party evaluator for the gate tests, installed through the `plumbline.evaluators`
entry point (tests/gates/conftest.py): it scores a row with the `probability` uploaded with its
output, so a test can give the gate graded scores it knows exactly. On the output UNJUDGED it
cannot reach a verdict, as a judge that is down cannot: the result is an error, not a fail."""

from __future__ import annotations

from plumbline.evals import EvaluationError, Evaluator, Sample, Score, require_number
from plumbline.evals.base import NoParams

UNJUDGED = "no verdict: the judge is down"


class StatedScore(Evaluator[NoParams]):
    name = "stated_score"

    def _score(self, sample: Sample) -> Score:
        if sample.output == UNJUDGED:
            raise EvaluationError("the judge is down")
        return require_number("probability", sample.probability), "the stated score", {}
