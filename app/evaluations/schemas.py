"""Evaluation runs (`add_evaluation`), their per-row results, and saved suites' specs."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Self

from pydantic import (
    AliasChoices,
    AliasPath,
    BaseModel,
    Field,
    StringConstraints,
    computed_field,
    model_validator,
)

from app.core.schemas import OrmModel, StrictModel
from app.datasets.schemas import EvaluatorSpecIn, RowKey
from app.models.runs import RunStatus

# Calls per row one run may make: enough to measure flips and cut their noise by an order
# of magnitude, few enough that an endpoint run stays a bounded job.
MAX_REPEATS = 20


class OutputIn(StrictModel):
    key: RowKey
    repeat: int | None = Field(
        default=None,
        ge=0,
        lt=MAX_REPEATS,
        description="Which call of the row this output is, 0..repeats-1; required when "
        "repeats > 1 (every key needs every repeat).",
    )
    output: Any = Field(
        default=None,
        description="The answer. Null (or left out) with no trajectory, probability nor "
        "latency_ms: the call has no output (it failed or timed out), as an endpoint's "
        "completion with neither content nor tool calls: every evaluator fails it, and a gate "
        "leaves it out of the baseline's side.",
    )
    trajectory: Any = None
    probability: float | None = Field(default=None, ge=0, le=1)
    latency_ms: float | None = Field(default=None, ge=0)


class EvaluationIn(StrictModel):
    """`evaluators` or a saved `suite`; `outputs` (or a multipart JSONL `outputs` file) unless
    the checkpoint has an endpoint the worker can call."""

    checkpoint_id: int
    dataset_version: int | None = Field(default=None, ge=1, description="Default: the latest.")
    evaluators: list[EvaluatorSpecIn] | None = Field(default=None, min_length=1, max_length=100)
    suite: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    repeats: int = Field(
        default=1,
        ge=1,
        le=MAX_REPEATS,
        description="Calls per row: the endpoint is called this many times per row, or the "
        "outputs carry repeat 0..repeats-1 for every key. The gate compares per-row mean pass "
        "rates, and the summary reports each evaluator's flip rate.",
    )
    outputs: list[OutputIn] | None = None

    @model_validator(mode="after")
    def _one_source_of_evaluators(self) -> Self:
        if (self.evaluators is None) == (self.suite is None):
            raise ValueError("give exactly one of evaluators or suite")
        return self


class RunCreatedOut(BaseModel):
    run_id: int
    status: RunStatus


class Progress(BaseModel):
    done: int
    total: int


class RunOut(OrmModel):
    id: int
    status: RunStatus
    checkpoint_id: int
    dataset: str = Field(validation_alias=AliasPath("dataset_version", "dataset", "name"))
    dataset_version: int = Field(
        validation_alias=AliasChoices(AliasPath("dataset_version", "version"), "dataset_version")
    )
    suite: str | None = Field(validation_alias=AliasChoices("suite_name", "suite"))
    evaluators: list[dict[str, Any]]
    output_source: str
    repeats: int
    progress_done: int = Field(exclude=True)
    progress_total: int = Field(exclude=True)
    summary: dict[str, Any] | None = Field(
        description="by_evaluator, by_risk and by_cohort: {n (rows), calls, errors, mean_score, "
        "pass_rate} each, rates over the calls with a verdict (errors are results whose "
        "evaluator could not judge; null rates when every call errored); by_cohort includes "
        "the whole population as dimension 'all', value 'all'. by_evaluator adds flip_rate "
        "and flip_rate_se: how often two calls of the same row get different verdicts (null "
        "with one call per row)."
    )
    error: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def progress(self) -> Progress:
        return Progress(done=self.progress_done, total=self.progress_total)


class ResultOut(OrmModel):
    key: str
    repeat: int
    evaluator: str
    score: float
    passed: bool
    error: bool = Field(
        description="The evaluator could not reach a verdict (details.error says why): score "
        "0 and passed false, but no fail; the summary counts it apart and a gate leaves it out."
    )
    reason: str | None
    details: dict[str, Any] | None
