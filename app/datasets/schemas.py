"""Datasets, their immutable versions and rows, and saved evaluator suites."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, Field, StringConstraints, field_validator

from app.core.schemas import OrmModel, StrictModel, nfc
from app.models.datasets import ExpectedBehavior, Risk
from app.registry.schemas import Name

RowKey = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Dimension = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[^\s]+$")]
DimensionValue = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Note = Annotated[str, StringConstraints(max_length=2000)]
CohortRisk = dict[Dimension, dict[DimensionValue, Risk]]
COHORT_RISK_DOC = (
    "Declared risk of cohorts, {dimension: {value: level}}, e.g. "
    '{"route": {"billing": "high"}}: the gate guards the whole population, the risk=<level> '
    "cohorts of its policy's block_risks, and the cohorts declared at those levels. A slice "
    "does not inherit risk from its rows. Each declared cohort must have rows in the version."
)


class DatasetIn(StrictModel):
    name: Name
    description: Note | None = None


class DatasetOut(OrmModel):
    id: int
    name: str
    description: str | None
    latest_version: int | None
    created_at: datetime


class RowIn(StrictModel):
    """One golden row. `cohort` holds free dimensions (route, prompt_version, user_segment...);
    the run summary is sliced by each of them."""

    key: RowKey
    input: Any = Field(description="What the model is given: text, chat messages or an object.")
    expected: Any = None
    context: Any = Field(default=None, description="Retrieved context, for groundedness.")
    cohort: dict[Dimension, DimensionValue] = Field(default_factory=dict, max_length=50)
    risk: Risk = Risk.medium
    expected_behavior: ExpectedBehavior | None = None
    label: Annotated[str, StringConstraints(max_length=200)] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("cohort")
    @classmethod
    def _nfc_cohort(cls, cohort: dict[str, str]) -> dict[str, str]:
        """Dimension names and values in Unicode NFC (`nfc`), as ingest stores events' and
        as a declared `cohort_risk` is stored: they are matched byte for byte (the gate's
        declared cohorts, the drift job's high-risk ones), so "café" typed composed and
        decomposed is one cohort."""
        normalised = {nfc(dimension): nfc(value) for dimension, value in cohort.items()}
        if len(normalised) < len(cohort):
            raise ValueError(
                "two dimensions have the same name once Unicode-normalised (NFC); send one"
            )
        return normalised


class VersionIn(StrictModel):
    """JSON form of a new version; the same endpoint takes a multipart `file` (.jsonl/.csv),
    with `note` and `cohort_risk` (JSON text) as form fields."""

    rows: list[RowIn]
    note: Note | None = None
    cohort_risk: CohortRisk = Field(default_factory=dict, description=COHORT_RISK_DOC)


class VersionOut(OrmModel):
    version: int
    row_count: int
    content_hash: str
    source: str
    note: str | None
    cohort_risk: dict[str, dict[str, str]] = Field(description=COHORT_RISK_DOC)
    created_at: datetime


class VersionCreatedOut(VersionOut):
    created: bool = Field(description="False when the rows equal the latest version's.")


class FromTracesIn(StrictModel):
    trace_ids: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] = Field(
        min_length=1, max_length=10_000
    )
    base_version: int | None = Field(
        default=None, ge=1, description="Rows to start from; default: the latest version."
    )
    risk: Risk = Risk.medium
    note: Note | None = None


class RowOut(OrmModel):
    key: str
    input: Any
    expected: Any
    context: Any
    cohort: dict[str, Any]
    risk: Risk
    expected_behavior: ExpectedBehavior | None
    label: str | None
    metadata: dict[str, Any] = Field(validation_alias=AliasChoices("meta", "metadata"))
    row_hash: str


class DiffOut(BaseModel):
    from_version: int
    to_version: int
    added: list[str]
    removed: list[str]
    changed: list[str]
    counts: dict[str, int]
    truncated: bool = Field(description="True when a key list was cut at `limit`.")


class EvaluatorSpecIn(StrictModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    threshold: float | None = None
    params: dict[str, Any] | None = None


class SuiteIn(StrictModel):
    description: Note | None = None
    evaluators: list[EvaluatorSpecIn] = Field(min_length=1, max_length=100)


class SuiteOut(OrmModel):
    name: str
    description: str | None
    evaluators: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime
