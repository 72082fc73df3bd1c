"""Drift signals, monitors, alerts and incident days: the public contract."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    AliasPath,
    BaseModel,
    Field,
    StringConstraints,
    ValidationInfo,
    computed_field,
    model_validator,
)

from app.core.links import Links
from app.core.schemas import CohortRef, OrmModel, StrictModel, nfc
from app.models.drift import AlertStatus
from app.models.registry import CheckpointStatus
from app.registry.schemas import CheckpointRef, HistoryEntryOut, Name
from app.stats.budget import DEFAULT_DAILY_ALPHA

Dimension = Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(nfc)]
CohortValue = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(nfc)]
Note = Annotated[str, StringConstraints(max_length=2000)]


Day = date  # the request field is named "date", which would shadow the type


class DriftRunIn(StrictModel):
    date: Day | None = Field(default=None, description="UTC day to compute; default yesterday.")
    backfill: int = Field(default=1, ge=1, le=90, description="Days ending with `date`.")


class DriftDayOut(OrmModel):
    day: date
    signals: int
    alerts_opened: int
    alerts_resolved: int


class DriftRunOut(BaseModel):
    signals: int
    alerts_opened: int
    days: list[DriftDayOut]


class RerunOut(OrmModel):
    """The body of `POST /api/v1/drift/run` that judges a day again."""

    date: Day
    backfill: int


class UnjudgedDayOut(OrmModel):
    """A day whose drift run failed and that no run has judged since (queries.UnjudgedDay)."""

    day: date
    error: str | None
    attempts: int = Field(description="Failed runs of the day.")
    last_attempt_at: datetime | None
    rerun: RerunOut = Field(
        description="Judges the day and the days its failure stopped, oldest first."
    )


class SignalOut(OrmModel):
    day: date
    model: str = Field(validation_alias=AliasPath("checkpoint", "model", "name"))
    checkpoint_id: int
    checkpoint_version: str = Field(validation_alias=AliasPath("checkpoint", "version"))
    signal: str
    dimension: str
    value: str
    numerator: float
    denominator: int
    rate: float | None
    extra: dict[str, Any] | None


class FixedBand(StrictModel):
    type: Literal["fixed"]
    low: float | None = None
    high: float | None = None

    @model_validator(mode="after")
    def _bounds(self) -> FixedBand:
        if self.low is None and self.high is None:
            raise ValueError("a fixed band needs low, high or both")
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError("low must not exceed high")
        return self


class BaselineBand(StrictModel):
    """Judged against the model's frozen reference (band + CUSUM, one budget per model-day).

    `side`: "upper" alerts on increases only (every signal's harmful direction);
    "two-sided" alerts on decreases too. The settings of the earlier trailing-window band
    (window_days, alpha, min_days, source) are accepted and dropped: the reference and the
    error budget are per model now."""

    type: Literal["baseline"]
    side: Literal["upper", "two-sided"] = "upper"

    @model_validator(mode="before")
    @classmethod
    def _drop_retired(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in _RETIRED_BASELINE_FIELDS}
        return data


_RETIRED_BASELINE_FIELDS = frozenset({"window_days", "alpha", "min_days", "source"})


class MonitorIn(StrictModel):
    model: Name
    signal: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    band: Annotated[FixedBand | BaselineBand, Field(discriminator="type")]
    dimension: Dimension | None = None
    value: CohortValue | None = None
    min_volume: int = Field(
        default=1,
        ge=1,
        description="Days below this volume are not judged. 1: every day is (the band is "
        "exact at any volume and the error budget skips cohorts that cannot reach "
        "significance).",
    )
    cooldown_hours: int = Field(default=24, ge=0, le=24 * 90)
    resolve_after_days: int = Field(
        default=3,
        ge=1,
        le=90,
        description="Consecutive in-control days (band quiet, CUSUM at or below its release "
        "level) before an alert resolves.",
    )
    enabled: bool = True


class MonitorOut(OrmModel):
    id: int
    model: str = Field(validation_alias=AliasPath("model", "name"))
    signal: str
    band: dict[str, Any]
    dimension: str | None
    value: str | None
    min_volume: int
    cooldown_hours: int
    resolve_after_days: int
    enabled: bool
    is_default: bool


class BandOut(BaseModel):
    low: float | None
    high: float | None


class RollbackLink(BaseModel):
    target: CheckpointRef
    url: str = Field(description="The dashboard's rollback confirmation page for this alert.")


class AlertOut(OrmModel):
    """An alert as the API, the pages and the webhook payloads show it.

    Validate it with the dashboard links in the context:
    `AlertOut.model_validate(alert, context={"links": links})`."""

    id: int
    status: AlertStatus
    model: str = Field(validation_alias=AliasPath("model", "name"))
    checkpoint_id: int
    checkpoint_version: str = Field(validation_alias=AliasPath("checkpoint", "version"))
    signal: str
    dimension: str
    value: str
    day: date
    last_day: date
    observed: float
    band_low: float | None = Field(exclude=True)
    band_high: float | None = Field(exclude=True)
    baseline: float | None
    volume: int
    sample_trace_ids: list[str]
    checkpoint_status: CheckpointStatus | None = Field(
        default=None, exclude=True, validation_alias=AliasPath("checkpoint", "status")
    )
    rollback_target: CheckpointRef | None
    rollback_target_status: CheckpointStatus | None = Field(
        default=None, exclude=True, validation_alias=AliasPath("rollback_target", "status")
    )
    monitor_id: int
    days_in_band: int
    opened_at: datetime
    acknowledged_at: datetime | None
    resolved_at: datetime | None
    resolution: str | None
    stored_annotations: list[dict[str, Any]] = Field(
        exclude=True, validation_alias=AliasChoices("stored_annotations", "annotations")
    )
    rollbacks: list[HistoryEntryOut] = Field(default_factory=list, exclude=True)
    evidence: dict[str, Any] | None = Field(
        default=None,
        description="Why it is open, as of its last day a rule fired: {day, checkpoint_id (whose "
        "traffic the day's numbers are), rules: ['band' "
        "and/or 'cusum'], observed, volume, band: {low, high, alpha, p_value, side}, cusum: "
        "{statistic, threshold, release, k, score}, reference: {version, checkpoint_id, "
        "checkpoint_version, first_day, last_day, days, trigger, center, cohort_window: "
        "{first_day, last_day, days, added_on} | null (the cohort's own known-good days, "
        "when its entries were added to the reference after it froze)}}.",
    )
    links: dict[str, Any] = Field(default_factory=dict)
    rollback: RollbackLink | None = Field(
        default=None,
        description="Where to roll back to from the alert's checkpoint, with the dashboard's "
        "link; null when there is none, when the target is the champion already (rolled back "
        "to), when the alert's checkpoint is not the champion (another was promoted since: "
        "rolling back to the target would replace it), or when the alert is resolved (its "
        "regression is over, or was a data artifact).",
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def band(self) -> BandOut:
        return BandOut(low=self.band_low, high=self.band_high)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cohort(self) -> CohortRef:
        return CohortRef(dimension=self.dimension, value=self.value)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def annotations(self) -> list[dict[str, Any]]:
        """What happened to the alert: no-data days and notes as stored, then each rollback
        the registry made for it (its champion history is the record)."""
        done = [
            {
                "kind": "rollback",
                "checkpoint_id": entry.checkpoint_id,
                "version": entry.checkpoint_version,
                "actor": entry.actor,
                "at": entry.at.isoformat(),
            }
            for entry in self.rollbacks
        ]
        return [a for a in self.stored_annotations if a.get("kind") != "rollback"] + done

    @model_validator(mode="after")
    def _with_links(self, info: ValidationInfo) -> AlertOut:
        links = (info.context or {}).get("links")
        if not isinstance(links, Links):  # re-validating a built AlertOut keeps its links
            return self
        self.links = {
            "alert": links.page("alerts", self.id),
            "dashboard": links.page("drift"),
            "traces": [
                {"trace_id": t, "url": links.page("traces", t)} for t in self.sample_trace_ids
            ],
        }
        # A target that is the champion now was rolled back to already (the alert stays on
        # the checkpoint that regressed while its statistic decays): a link offering that
        # rollback again would tell the reader nothing was done.
        target = self.rollback_target
        # Nor when another checkpoint became the champion since (a fix promoted while the
        # alert's statistic decays): going back to the target would replace that one.
        serving = self.checkpoint_status is CheckpointStatus.champion
        # Nor once resolved: its alert.resolved webhook offered "roll back to A" beside
        # `resolution: data_corrected` (no day of it fires) or `recovered`.
        if (
            target is not None
            and serving
            and self.status is not AlertStatus.resolved
            and self.rollback_target_status is not CheckpointStatus.champion
        ):
            url = links.page("models", self.model, "rollback", alert_id=self.id)
            self.rollback = RollbackLink(target=target, url=url)
        return self


class AlertActionIn(StrictModel):
    note: Note | None = None


class IncidentDayIn(StrictModel):
    model: Name
    day: date
    note: Note | None = None


class IncidentDayOut(OrmModel):
    id: int
    model: str = Field(validation_alias=AliasPath("model", "name"))
    day: date
    note: str | None
    created_at: datetime


class RebaselineIn(StrictModel):
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    first_day: date | None = Field(
        default=None,
        description="First day of the window (default: a year before last_day; only the "
        "champion's own known-good days in it are taken).",
    )
    last_day: date | None = Field(
        default=None, description="Last day of the window (default: yesterday, UTC)."
    )
    accept_alert_days: bool = Field(
        default=False,
        description="Count days of the model's alerts as known-good: a shift accepted as the "
        "new normal (incident days stay out).",
    )


class AddedCohortOut(OrmModel):
    """A cohort whose entries were added to a frozen reference after it froze."""

    dimension: str
    value: str
    added_on: date = Field(description="The first day judged with its entries.")
    first_day: date
    last_day: date
    days: list[date] = Field(description="Its own known-good days the entries summarise.")
    entries: int = Field(description="Cohort x signal summaries added.")


class ReferenceOut(OrmModel):
    """A frozen reference: the known-good days a model is judged against."""

    version: int
    model: str = Field(validation_alias=AliasPath("model", "name"))
    checkpoint_id: int
    checkpoint_version: str = Field(validation_alias=AliasPath("checkpoint", "version"))
    status: str
    trigger: str = Field(description="warmup, champion_change, champion_returned or rebaseline")
    first_day: date
    last_day: date
    days: list[date]
    reason: str | None
    actor: str | None
    created_at: datetime
    stats: dict[str, Any] = Field(exclude=True)
    cohorts_added: list[AddedCohortOut] = Field(
        description="Cohorts it held no entry for when it froze, added since from their own "
        "windows (the version and every other entry unchanged)."
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def cohorts(self) -> int:
        """Cohort x signal summaries the reference holds."""
        return len(self.stats)


DEFAULT_REFERENCE_DAYS = 28
DEFAULT_WARMUP_DAYS = 7


class DriftSettings(StrictModel):
    """A project's drift settings, stored under projects.settings["drift"].

    Missing fields take the defaults, so a project that never set them behaves as before.
    A frozen reference stays frozen: new reference_days / warmup_days apply at the next
    freeze (warm-up, champion change or rebaseline); daily_alpha applies from the next
    judged day."""

    reference_days: int = Field(
        default=DEFAULT_REFERENCE_DAYS,
        ge=14,
        le=120,
        strict=True,
        description="Known-good days a frozen reference holds (longer: slow shifts sooner).",
    )
    warmup_days: int = Field(
        default=DEFAULT_WARMUP_DAYS,
        ge=0,
        le=30,
        strict=True,
        description="Days after a champion starts before its days may enter a reference.",
    )
    daily_alpha: float = Field(
        default=DEFAULT_DAILY_ALPHA,
        ge=1e-4,
        le=0.05,
        description="Expected false alerts per model-day, shared by all of its tests.",
    )
