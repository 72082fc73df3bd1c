"""The deploy gate's public contract: policies, requests and stored decisions."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    AliasPath,
    BaseModel,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from app.core.schemas import CohortRef, OrmModel, StrictModel
from app.models.datasets import Risk
from app.models.gates import GateVerdict
from app.stats.policy import GatePolicy as StatsPolicy

# One source of truth for the statistical defaults: the stats package argues them.
_STATS = StatsPolicy()

EvaluatorName = Annotated[str, StringConstraints(min_length=1, max_length=100)]


class GatePolicySpec(StrictModel):
    """What a candidate must show against the baseline, per guarded cohort.

    Cohorts whose risk is in `block_risks` (and the whole population when
    `guard_population`) block the deploy; those in `warn_risks` only warn."""

    metric: Literal["pass_rate", "mean_score"] = Field(
        default=_STATS.metric, description="The guarded metric of every evaluator."
    )
    margin: float = Field(
        default=_STATS.margin, gt=0, lt=1, description="Largest tolerated drop of the metric."
    )
    alpha: float = Field(default=_STATS.alpha, gt=0, le=0.5)
    power: float = Field(default=_STATS.power, gt=0, lt=1)
    min_effect: float | None = Field(
        default=_STATS.min_effect,
        gt=0,
        le=1,
        description="Effect the rows-needed calculation targets; default: the margin.",
    )
    min_rows: int | None = Field(
        default=_STATS.min_n,
        ge=2,
        le=10_000_000,
        description="Rows before non-inferiority may be claimed; default derived from margin.",
    )
    floor: float | None = Field(
        default=None, ge=0, le=1, description="Hard floor of the metric in every cohort."
    )
    floors: dict[EvaluatorName, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict, max_length=200, description="Per-evaluator hard floors."
    )
    correction: Literal["holm", "bh"] = _STATS.correction
    block_risks: list[Risk] = Field(default_factory=lambda: [Risk.high], max_length=3)
    warn_risks: list[Risk] = Field(default_factory=lambda: [Risk.medium, Risk.low], max_length=3)
    guard_population: bool = Field(
        default=True, description="The whole population (all/all) always blocks."
    )
    allow_inconclusive: bool = Field(
        default=False, description="An inconclusive gate may still promote."
    )
    accept_canary: bool = Field(
        default=True,
        description="A canary that decided 'promote' counts as a passing gate for promotion.",
    )
    bootstrap_resamples: int = Field(default=_STATS.n_resamples, ge=100, le=20_000)
    seed: int = Field(default=_STATS.seed, ge=0, le=2**32 - 1)

    @model_validator(mode="after")
    def _risks_are_disjoint(self) -> GatePolicySpec:
        both = set(self.block_risks) & set(self.warn_risks)
        if both:
            raise ValueError(
                f"block_risks and warn_risks overlap on {sorted(r.value for r in both)}"
            )
        return self


class GatePolicyOut(OrmModel):
    """Read from a PolicyState: the model, the stored version (if any) and the effective spec."""

    model: str = Field(validation_alias=AliasPath("model", "name"))
    version: int | None = Field(
        default=None,
        validation_alias=AliasPath("stored", "version"),
        description="None: the built-in default, never stored.",
    )
    policy: GatePolicySpec = Field(validation_alias=AliasChoices("spec", "policy"))
    actor: str | None = Field(default=None, validation_alias=AliasPath("stored", "actor"))
    created_at: datetime | None = Field(
        default=None, validation_alias=AliasPath("stored", "created_at")
    )


class GateIn(StrictModel):
    candidate_run_id: int
    baseline_run_id: int | None = Field(
        default=None,
        description="Default: the champion's latest succeeded run on the same dataset version.",
    )
    policy: GatePolicySpec | None = Field(
        default=None,
        description="Overrides the model's stored policy; only the fields given are replaced.",
    )


class ComparisonOut(BaseModel):
    evaluator: str
    cohort: CohortRef
    dimension: str
    value: str
    risk: Risk
    role: Literal["block", "warn", "report"]
    guarded: bool
    n: int
    metric: str
    baseline: float | None
    candidate: float | None
    delta: float | None
    ci_low: float | None
    ci_high: float | None
    p_value: float
    p_adjusted: float | None
    regressed: bool
    below_floor: bool
    status: str
    reason: str
    underpowered: bool
    required_n: int | None
    floor: float | None
    scores: dict[str, float | None]
    pass_rates: dict[str, float | int | None]


class ReasonOut(BaseModel):
    severity: Literal["block", "warn", "inconclusive", "info"]
    message: str
    evaluator: str | None = None
    dimension: str | None = None
    value: str | None = None
    n: int | None = None
    required_n: int | None = None


class GateSummaryOut(OrmModel):
    id: int
    verdict: GateVerdict
    model: str = Field(validation_alias=AliasPath("model", "name"))
    checkpoint_id: int
    candidate_run_id: int
    baseline_run_id: int
    policy_version: int | None
    reasons: list[ReasonOut]
    notes: list[str]
    created_at: datetime

    @field_validator("notes", mode="before")
    @classmethod
    def _messages(cls, notes: Any) -> Any:
        """Stored as {"messages": [...]} on the gate row."""
        return notes.get("messages", []) if isinstance(notes, dict) else notes


class GateOut(GateSummaryOut):
    policy: dict[str, Any]
    comparisons: list[ComparisonOut]
