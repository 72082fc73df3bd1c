"""A third-party evaluator for the gate tests, installed through the `plumbline.evaluators`
entry point (tests/gates/conftest.py): it scores a row with the `probability` uploaded with its
output, so a test can give the gate graded scores it knows exactly."""

from __future__ import annotations

from plumbline.evals import Evaluator, Sample, Score, require_number
from plumbline.evals.base import NoParams


class StatedScore(Evaluator[NoParams]):
    name = "stated_score"

    def _score(self, sample: Sample) -> Score:
        return require_number("probability", sample.probability), "the stated score", {}
