"""Canaries: the public contract (requests, the canary, its evidence)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasPath,
    BaseModel,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from app.canaries.plan import UNPAIRED_SIGNALS
from app.core.links import Links
from app.core.schemas import MAX_ID, CohortRef, OrmModel, StrictModel, nfc
from app.drift.signals import RATE_SIGNALS
from app.models.canaries import CanaryDecision, CanaryStatus

Comparison = Literal["served", "shadow"]
COMPARISONS: tuple[Comparison, ...] = ("served", "shadow")
Verdict = Literal["worse", "non_inferior", "undecided", "unmeasured"]

DEFAULT_MARGIN = 0.01
DEFAULT_ALPHA = 0.05
MIN_ALPHA = 1e-6
"""Split over a family of up to 21 cohorts x 11 comparisons, still a number the bounds can
take: at 5e-324 the share rounds to 0 and at 1e-310 its inverse overflows, so every read
of the canary (and the background loop) failed or no bound could ever move."""
DEFAULT_MAX_DAYS = 14
DEFAULT_MIN_HOURS = 24
MAX_COHORTS = 20


def _known_signal(name: str) -> str:
    if name not in RATE_SIGNALS:
        raise ValueError(f"unknown signal '{name}' (known: {', '.join(RATE_SIGNALS)})")
    return name


SignalName = Annotated[str, AfterValidator(_known_signal)]
Margin = Annotated[float, Field(gt=0, le=0.5)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]


class CanaryCohort(StrictModel):
    """A guarded cohort besides the whole population (or the canary's scope): one dimension
    and one of its values, NFC-normalised as ingest stores them (`nfc`)."""

    dimension: Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(nfc)]
    value: Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(nfc)]

    @model_validator(mode="after")
    def _not_everyone(self) -> CanaryCohort:
        if self.dimension == "all":
            raise ValueError("the whole population (all/all) is always guarded; name a cohort")
        return self


def _unique(items: list[Any]) -> list[Any]:
    if len(set(map(str, items))) != len(items):
        raise ValueError("each entry may appear once")
    return items


class CanaryIn(StrictModel):
    """Everything the sequential test needs is fixed here, before any traffic is seen."""

    checkpoint_id: int = Field(ge=1, le=MAX_ID, description="The candidate checkpoint.")
    margin: Margin = Field(
        default=DEFAULT_MARGIN,
        description="Largest tolerated increase of a signal's rate (absolute, 0.01 = 1 point).",
    )
    signals: Annotated[list[SignalName], AfterValidator(_unique)] = Field(
        default_factory=lambda: list(RATE_SIGNALS), min_length=1, max_length=len(RATE_SIGNALS)
    )
    margins: dict[SignalName, Margin] = Field(
        default_factory=dict, description="Per-signal margins overriding `margin`."
    )
    cohorts: Annotated[list[CanaryCohort], AfterValidator(_unique)] = Field(
        default_factory=list,
        max_length=MAX_COHORTS,
        description="Guarded cohorts in addition to the whole population.",
    )
    scope: CanaryCohort | None = Field(
        default=None,
        description="The cohort the candidate serves, when it serves only one (internal users, "
        "a tier, a route): every comparison is then made within it, on both arms, and it takes "
        "the whole population's place; `cohorts` are judged within it.",
    )
    comparisons: Annotated[list[Comparison], AfterValidator(_unique)] = Field(
        default_factory=lambda: list(COMPARISONS),
        min_length=1,
        description="served: the candidate's share of live traffic against the champion's; "
        "shadow: the candidate's shadow answers paired with the champion's served ones.",
    )
    start: datetime | None = Field(
        default=None, description="When the candidate started taking traffic; default now."
    )
    alpha: float = Field(
        default=DEFAULT_ALPHA,
        ge=MIN_ALPHA,
        le=0.2,
        description="Chance of a wrong rollback (family-wise) and of a wrong promotion.",
    )
    max_days: int = Field(
        default=DEFAULT_MAX_DAYS, ge=1, le=60, description="Stop inconclusive after this."
    )
    min_hours: int = Field(
        default=DEFAULT_MIN_HOURS,
        ge=0,
        le=24 * 60,
        description="Traffic hours before a promotion (a rollback needs none).",
    )

    @field_validator("start")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

    @field_validator("margins")
    @classmethod
    def _guarded(cls, margins: dict[str, float], info: ValidationInfo) -> dict[str, float]:
        unguarded = sorted(set(margins) - set(info.data.get("signals") or RATE_SIGNALS))
        if unguarded:
            raise ValueError(f"{', '.join(unguarded)} not among the guarded signals")
        return margins

    @field_validator("min_hours")
    @classmethod
    def _can_promote(cls, min_hours: int, info: ValidationInfo) -> int:
        if min_hours > info.data.get("max_days", 60) * 24:
            raise ValueError("longer than max_days: the canary could never promote")
        return min_hours

    @model_validator(mode="after")
    def _cohorts_within_scope(self) -> CanaryIn:
        """Within a scope, a guarded cohort of the scope's dimension is the scope itself
        (judged already, as the first row) or holds no event at all: either is a mistake."""
        if self.scope is None:
            return self
        same = [c.value for c in self.cohorts if c.dimension == self.scope.dimension]
        if same:
            raise ValueError(
                f"cohorts: {self.scope.dimension}={same[0]} within the scope "
                f"{self.scope.dimension}={self.scope.value} is the scope itself or empty; "
                "guard cohorts of other dimensions"
            )
        return self

    @model_validator(mode="after")
    def _every_signal_judged(self) -> CanaryIn:
        """Shadow answers reach no user, so they collect no feedback: without the served
        comparison nothing judges thumbs-down. Asked for by name (sent in `signals`, or given
        a margin), that is refused; the default signals leave it out, so no canary has a
        signal nothing judges, or an empty family that never decides."""
        if "served" in self.comparisons:
            return self
        named = set(self.margins)
        if "signals" in self.model_fields_set:
            named |= set(self.signals)
        unjudged = sorted(named & UNPAIRED_SIGNALS)
        if unjudged:
            raise ValueError(
                f"signals: without the 'served' comparison nothing judges {', '.join(unjudged)} "
                "(shadow answers get no feedback)"
            )
        self.signals = [signal for signal in self.signals if signal not in UNPAIRED_SIGNALS]
        return self


class CanaryStopIn(StrictModel):
    reason: Reason


class CanaryRollbackIn(StrictModel):
    reason: Reason


class ArmOut(BaseModel):
    events: int
    with_signal: int = Field(description="Events counting against the signal.")
    rate: float | None


class ComparisonOut(BaseModel):
    """One guarded signal x cohort x comparison at the time of the evaluation.

    `difference` is candidate - champion (positive is worse for every signal); `lower` and
    `upper` are the confidence sequence's bounds, valid at every evaluation at once;
    `worse` when lower > margin (rollback), `non_inferior` when upper < margin."""

    comparison: Comparison
    signal: str
    cohort: CohortRef = Field(
        description="all/all is the whole population; in a scoped canary the first cohort is "
        "the scope itself, in the whole population's place."
    )
    scope: CohortRef | None = Field(
        default=None, description="The canary's scope: the comparison counts only its events."
    )
    margin: float
    candidate: ArmOut | None = Field(default=None, description="served comparisons")
    champion: ArmOut | None = Field(default=None, description="served comparisons")
    pairs: int | None = Field(default=None, description="shadow comparisons")
    candidate_worse: int | None = Field(default=None, description="pairs only the candidate had")
    candidate_better: int | None = Field(default=None, description="pairs only the champion had")
    difference: float | None
    lower: float
    upper: float
    alpha_lower: float
    alpha_upper: float
    verdict: Verdict


class MixShareOut(BaseModel):
    value: str = Field(description="A value of the dimension; '' for traces without it.")
    candidate: float = Field(description="Share of the candidate's served traces.")
    champion: float = Field(description="Share of the champion's served traces.")


class MixOut(BaseModel):
    """The two arms' served traces differ clearly in their mix of one cohort dimension's
    values: a likelihood-ratio (G) test of homogeneity at MIX_ALPHA. Each trace counts once,
    on the arm and in the cohort of its first served call in the window."""

    dimension: str
    candidate_traces: int = Field(description="The candidate's traces (first call served by it).")
    champion_traces: int = Field(description="The champion's traces (first call served by it).")
    g: float
    df: int
    p_value: float
    shares: list[MixShareOut] = Field(
        description="Per value, most different first (at most 10): the arms' shares."
    )


class BegunBeforeOut(BaseModel):
    """The served comparison's calls left out as traces begun before its window (a served
    call of either arm in the day before it): per arm, calls and traces."""

    served_calls: int = Field(
        description="Both arms' served calls in the window (in the scope, if any), left out or not."
    )
    candidate_calls: int
    candidate_traces: int
    champion_calls: int
    champion_traces: int

    @property
    def calls(self) -> int:
        return self.candidate_calls + self.champion_calls

    @property
    def most(self) -> bool:
        """Most of the window's served calls are left out: more likely trace ids reused
        across sessions than sessions under way at the start."""
        return 2 * self.calls > self.served_calls


class EvidenceOut(BaseModel):
    evaluated_at: datetime
    window_start: datetime
    window_end: datetime
    hours: float = Field(description="Length of the window evaluated.")
    traffic_hours: float = Field(
        description="Hours since the candidate's first answer in the window: what min_hours "
        "counts (0 before its first).",
    )
    scope: CohortRef | None = Field(
        default=None,
        description="The canary's scope: every comparison counts only the events in it.",
    )
    comparisons: list[ComparisonOut]
    reasons: list[str]
    mix_differs: list[MixOut] = Field(
        default_factory=list,
        description="Unscoped served comparisons: dimensions whose mix of values the "
        "candidate's events and the champion's clearly differ on (a canary routed to a "
        "segment). While any is listed the canary does not promote, and rolls back only on "
        "a guarded cohort of the one differing dimension (docs/statistics.md §12.9).",
    )
    shadow_traces_left_out: int | None = Field(
        default=None,
        description="Shadow comparisons: served traces with shadow answers that formed no "
        "pair because a side held several calls (a shadow answer names the trace, not the "
        "call it replays). None without a shadow comparison.",
    )
    candidate_outside_scope: int | None = Field(
        default=None,
        description="Scoped canaries: the candidate's served calls in the window outside the "
        "scope, which no comparison counts. None without a scope.",
    )
    begun_before: BegunBeforeOut | None = Field(
        default=None,
        description="Served comparisons: the calls (and traces) of each arm left out as "
        "traces begun before the window, out of the window's served calls. None without a "
        "served comparison (docs/statistics.md §12.1).",
    )
    promotion_refused: str | None = Field(
        default=None,
        description="At decision time (frozen with the evidence): why the registry refused "
        "promoting on this 'promote' decision then (a gate block standing on the candidate, "
        "a gate policy not accepting canaries, ...). The decision stands on the traffic; what "
        "the registry answers now is the canary's own `promotion_refused`.",
    )

    @model_validator(mode="before")
    @classmethod
    def _stored_before_traffic_hours(cls, data: Any) -> Any:
        """Evidence stored before `traffic_hours` was recorded: min_hours then counted the
        whole window, so its hours are what the decision waited on."""
        if isinstance(data, dict) and "traffic_hours" not in data and "hours" in data:
            return {**data, "traffic_hours": data["hours"]}
        return data


class CanaryRollbackLink(BaseModel):
    checkpoint_id: int
    version: str
    url: str = Field(description="The dashboard's rollback confirmation page for this canary.")


class CanaryOut(OrmModel):
    """A canary as the API, the pages and the `canary.decided` webhook show it.

    Validate it with the dashboard links in the context:
    `CanaryOut.model_validate(canary, context={"links": links})`."""

    id: int
    model: str = Field(validation_alias=AliasPath("model", "name"))
    checkpoint_id: int
    checkpoint_version: str = Field(validation_alias=AliasPath("checkpoint", "version"))
    champion_id: int
    champion_version: str = Field(validation_alias=AliasPath("champion", "version"))
    status: CanaryStatus
    decision: CanaryDecision | None
    started_at: datetime
    signals: list[str]
    cohorts: list[CohortRef]
    scope: CohortRef | None
    comparisons: list[str]
    margin: float
    margins: dict[str, float]
    alpha: float
    max_days: int
    min_hours: int
    evidence: EvidenceOut | None
    evaluated_at: datetime | None
    ended_at: datetime | None
    ended_by: str | None
    reason: str | None
    rolled_back_at: datetime | None
    promoted_at: datetime | None
    promotion_refused: str | None = Field(
        default=None,
        description="Now, at this read: why promoting on this canary's 'promote' decision "
        "answers 409, if it does (the registry's own check; `evidence.promotion_refused` is "
        "its answer when the canary decided). None when the promotion would be accepted, and "
        "for a canary that did not decide promote or was promoted or rolled back.",
    )
    actor: str
    created_at: datetime
    links: dict[str, str] = Field(default_factory=dict)
    rollback: CanaryRollbackLink | None = None

    @model_validator(mode="after")
    def _with_links(self, info: ValidationInfo) -> CanaryOut:
        links = (info.context or {}).get("links")
        if not isinstance(links, Links):  # re-validating a built CanaryOut keeps its links
            return self
        self.links = {"canary": links.page("canaries", self.id)}
        if self.status is CanaryStatus.rollback:
            self.rollback = CanaryRollbackLink(
                checkpoint_id=self.checkpoint_id,
                version=self.checkpoint_version,
                url=links.page("canaries", self.id, "rollback"),
            )
        return self
