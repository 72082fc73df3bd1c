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

from app.core.schemas import CohortRef, OrmModel, StrictModel, nfc
from app.datasets.parsing import RESERVED_DIMENSIONS
from app.datasets.schemas import CohortRisk
from app.models.datasets import Risk
from app.models.gates import GateVerdict
from app.stats.gate import DecisionPolicy

# One source of truth for the statistical defaults: the stats package argues them.
_STATS = DecisionPolicy()

EvaluatorName = Annotated[str, StringConstraints(min_length=1, max_length=100)]
Margin = Annotated[float, Field(gt=0, lt=0.5)]
GateMetric = Literal["pass_rate", "mean_score"]
"""What a gate compares per row: the pass rate over calls, or the mean score."""

# Fields of earlier policies that the gate no longer uses. They are accepted (clients and
# stored policies still send them) and ignored; a gate that sees one set says so in a note.
RETIRED_FIELDS = {
    "min_rows": "the exact test needs no minimum: identical runs pass from 185 rows at m = 0.02",
    "warn_risks": "every unguarded cohort may warn (a separate Benjamini-Hochberg family)",
    "bootstrap_resamples": "no bootstrap: score and exact tests",
    "seed": "no resampling, nothing to seed",
}


class GatePolicySpec(StrictModel):
    """What a candidate must show against the baseline, per guarded cohort.

    Guarded (they block, and must pass for the gate to pass): the whole population when
    `guard_population`, the risk=<level> cohort of each level in `block_risks`, and every
    cohort declared at such a level, on the dataset version (`cohort_risk`) or here (this
    policy's `cohort_risk` wins per cohort). Every other cohort can only warn."""

    metric: GateMetric = Field(
        default="pass_rate",
        description="The guarded metric of every evaluator: per-row mean pass rate over calls, "
        "or mean score (scores lie in [0, 1]).",
    )
    margin: Margin = Field(
        default=_STATS.margin, description="Largest tolerated drop of the metric."
    )
    risk_margins: dict[Risk, Margin] = Field(
        default_factory=dict,
        description='A margin per declared risk level (e.g. {"high": 0.02, "low": 0.05}); '
        "`margin` for the whole population and levels not listed.",
    )
    alpha: float = Field(
        default=_STATS.alpha,
        gt=0,
        lt=0.5,
        description="The gate's error budget: the chance of blocking when no guarded cohort "
        "drops beyond its margin is at most alpha; a pass claim is a one-sided alpha/2 test. "
        "Re-gating a checkpoint on a dataset version spends alpha / 2^(attempt-1).",
    )
    power: float = Field(
        default=_STATS.power,
        gt=0,
        lt=1,
        description="Chance that an unchanged candidate passes with the rows `required_n` asks.",
    )
    block_power: float = Field(
        default=_STATS.block_power,
        gt=0,
        lt=1,
        description="Chance that a drop of margin + min_effect blocks with `required_n` rows.",
    )
    min_effect: float | None = Field(
        default=_STATS.min_effect,
        gt=0,
        lt=0.5,
        description="How far beyond the margin a drop must be to block with block_power; "
        "default: the margin (a drop of twice the margin).",
    )
    floor: float | None = Field(
        default=None, ge=0, le=1, description="Hard floor of the metric in every guarded cohort."
    )
    floors: dict[EvaluatorName, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict, max_length=200, description="Per-evaluator hard floors."
    )
    correction: Literal["holm", "bh"] = Field(
        default=_STATS.correction,
        description="How the guarded family shares alpha: weighted Holm (family-wise) or "
        "weighted Benjamini-Hochberg.",
    )
    weighting: Literal["inverse_n", "sqrt_n", "equal"] = Field(
        default=_STATS.weighting,
        description="Each guarded comparison's share of alpha: in proportion to 1/rows, "
        "1/sqrt(rows), or equal; no share above ten times another's.",
    )
    min_discordant: int = Field(
        default=_STATS.min_discordant,
        ge=1,
        le=1000,
        description="Rows that changed verdict a comparison needs before it can block alone.",
    )
    block_risks: list[Risk] = Field(default_factory=lambda: [Risk.high], max_length=3)
    cohort_risk: CohortRisk = Field(
        default_factory=dict,
        description="Declared cohort risk on top of the dataset version's "
        "({dimension: {value: level}}); this policy wins per cohort.",
    )
    guard_population: bool = Field(
        default=True, description="The whole population (all/all) is guarded."
    )
    allow_inconclusive: bool = Field(
        default=False,
        description="An inconclusive gate may still promote (never after a block on the same "
        "dataset version: a block stands until a pass).",
    )
    accept_canary: bool = Field(
        default=True,
        description="A canary that decided 'promote' counts as a passing gate for promotion.",
    )
    min_rows: int | None = Field(default=None, deprecated=True, description="Retired; ignored.")
    warn_risks: list[Risk] | None = Field(
        default=None, deprecated=True, description="Retired; ignored."
    )
    bootstrap_resamples: int | None = Field(
        default=None, deprecated=True, description="Retired; ignored."
    )
    seed: int | None = Field(default=None, deprecated=True, description="Retired; ignored.")

    @field_validator("cohort_risk")
    @classmethod
    def _no_builtin_dimension(cls, value: dict[str, Any]) -> dict[str, Any]:
        """Names and values in Unicode NFC, as dataset rows' cohorts and declarations are
        stored (app.datasets.parsing.cohort_risk), so the cohort this names is the one matched."""
        declared = {
            nfc(dimension): {nfc(name): level for name, level in values.items()}
            for dimension, values in value.items()
        }
        merged = len(declared) < len(value) or sum(map(len, declared.values())) < sum(
            map(len, value.values())
        )
        if merged:
            raise ValueError("two declared cohorts are one once Unicode-normalised (NFC)")
        clash = sorted(set(declared) & set(RESERVED_DIMENSIONS))
        if clash:
            raise ValueError(f"'{clash[0]}' is a built-in cohort and cannot be declared")
        return declared

    @model_validator(mode="after")
    def _valid_for_the_gate(self) -> GatePolicySpec:
        self.decision_policy()  # raises ValueError on combinations the gate refuses
        return self

    def decision_policy(self) -> DecisionPolicy:
        return DecisionPolicy(
            margin=self.margin,
            risk_margins={risk.value: margin for risk, margin in self.risk_margins.items()},
            alpha=self.alpha,
            power=self.power,
            block_power=self.block_power,
            min_effect=self.min_effect,
            floor=self.floor,
            evaluator_floors=dict(self.floors),
            correction=self.correction,
            weighting=self.weighting,
            min_discordant=self.min_discordant,
        )

    def retired_fields_set(self) -> list[str]:
        """Retired fields given a value (read by dumping: reading one warns)."""
        return sorted(self.model_dump(include=set(RETIRED_FIELDS), exclude_none=True))

    def as_stored(self) -> dict[str, Any]:
        """The JSON a policy version or a gate stores: retired fields only when given."""
        unset = set(RETIRED_FIELDS) - set(self.retired_fields_set())
        return self.model_dump(mode="json", exclude=unset)


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
        description="Default: the champion's latest succeeded run on the same dataset version. "
        "Either way each side pools every succeeded run of its checkpoint on its version.",
    )
    policy: GatePolicySpec | None = Field(
        default=None,
        description="Overrides the model's stored policy; only the fields given are replaced.",
    )


class ComparisonOut(BaseModel):
    """One evaluator x cohort of a gate. Fields after `floor` were added with declared risk
    and the three-way test; gates stored before them leave them null."""

    evaluator: str
    cohort: CohortRef
    dimension: str
    value: str
    risk: Risk | None = Field(
        description="The cohort's declared risk (risk=<level> cohorts: that level); null when "
        "none is declared: such a cohort is not guarded."
    )
    role: Literal["block", "warn", "report"] = Field(
        description="block: guarded (it blocks and must pass); warn: it can only warn."
    )
    guarded: bool
    n: int = Field(description="Rows both sides scored.")
    metric: str
    baseline: float | None
    candidate: float | None
    delta: float | None
    ci_low: float | None = Field(
        description="Lower bound of the change: one-sided 1 - alpha/2 (the pass side's level)."
    )
    ci_high: float | None = Field(
        description="Upper bound of the change: one-sided 1 - alpha (the block side's level)."
    )
    p_value: float = Field(description="p of 'the drop exceeds the margin' (= p_block).")
    p_adjusted: float | None = Field(description="p_value adjusted within its family.")
    regressed: bool = Field(description="This comparison blocks (status 'block').")
    below_floor: bool = Field(description="The candidate is shown below a floor.")
    status: str = Field(
        description="Guarded: block, pass or inconclusive; unguarded: warn or report."
    )
    reason: str
    underpowered: bool = Field(description="Fewer rows than required_n.")
    required_n: int | None = Field(
        description="Rows this guarded cohort needs to decide at the margin (the larger of "
        "required_n_pass and required_n_block), from its observed discordance."
    )
    floor: float | None
    margin: float | None = None
    method: Literal["exact", "score", "none"] | None = None
    baseline_repeats: float | None = Field(default=None, description="Mean calls per row.")
    candidate_repeats: float | None = None
    discordant: int | None = None
    lost: int | None = None
    won: int | None = None
    lower_bound: float | None = None
    upper_bound: float | None = None
    bound_method: Literal["exact", "score", "none"] | None = None
    p_block: float | None = None
    p_block_adjusted: float | None = None
    p_pass: float | None = None
    p_drop: float | None = None
    p_drop_adjusted: float | None = None
    unjudged: int | None = Field(
        default=None,
        description="Rows one side's evaluator judged and the other's only errored on, or "
        "that the candidate's calls answered and the baseline's did not (its endpoint failed: "
        "no output): left out of n and every number shown; a pass must hold with them at "
        "their worst (the candidate's missing verdicts as fails, the baseline's as passes).",
    )
    partly_judged: int | None = Field(
        default=None,
        description="Rows in n some of whose calls (repeats, pooled runs) have no verdict "
        "(an evaluator error, or a baseline call without an output) and whose value those "
        "calls could change: their means are over the calls with a verdict; a pass must also "
        "hold with the others at their worst (the candidate's as fails, the baseline's as "
        "passes).",
    )
    p_pass_worst_case: float | None = Field(
        default=None,
        description="p_pass with the unjudged rows and the partly judged rows' calls without "
        "a verdict at their worst.",
    )
    p_floor_broken: float | None = None
    p_floor_broken_adjusted: float | None = None
    p_floor_met: float | None = None
    p_floor_met_worst_case: float | None = None
    floor_status: Literal["broken", "met", "unclear"] | None = None
    warning: str | None = None
    required_n_pass: int | None = None
    required_n_block: int | None = None


class ReasonOut(BaseModel):
    severity: Literal["block", "warn", "inconclusive", "info"]
    message: str
    evaluator: str | None = None
    cohort: str | None = None
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
    dataset: str = Field(validation_alias=AliasPath("dataset_version", "dataset", "name"))
    dataset_version: int = Field(validation_alias=AliasPath("dataset_version", "version"))
    attempt: int = Field(
        description="This checkpoint's real gate number on this dataset version (1 for the "
        "first); an exploratory gate carries the number of the next real gate."
    )
    previously_blocked: bool = Field(
        description="An earlier gate of this checkpoint on this version blocked: only a pass "
        "lifts that block."
    )
    exploratory: bool = Field(
        description="The request overrode the model's stored policy: the gate never promotes "
        "and spends no attempt (it is decided at the next real gate's alpha)."
    )
    alpha: float | None = Field(
        description="The error budget of this attempt: alpha / 2^(attempt-1); spent by a real "
        "gate, only shown by an exploratory one."
    )
    candidate_run_ids: list[int] = Field(description="The candidate runs pooled.")
    baseline_run_ids: list[int] = Field(description="The baseline runs pooled.")
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
