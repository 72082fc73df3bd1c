"""Drift signals, monitors, alerts and incident days: the public contract."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, model_validator

from app.core.schemas import StrictModel
from app.models.drift import AlertStatus
from app.registry.schemas import CheckpointRef, Name

Dimension = Annotated[str, StringConstraints(min_length=1, max_length=100)]
CohortValue = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Note = Annotated[str, StringConstraints(max_length=2000)]


Day = date  # the request field is named "date", which would shadow the type


class DriftRunIn(StrictModel):
    date: Day | None = Field(default=None, description="UTC day to compute; default yesterday.")
    backfill: int = Field(default=1, ge=1, le=90, description="Days ending with `date`.")


class DriftDayOut(BaseModel):
    day: date
    signals: int
    alerts_opened: int
    alerts_resolved: int


class DriftRunOut(BaseModel):
    signals: int
    alerts_opened: int
    days: list[DriftDayOut]


class SignalOut(BaseModel):
    day: date
    model: str
    checkpoint_id: int
    checkpoint_version: str
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
    type: Literal["baseline"]
    window_days: int = Field(default=14, ge=1, le=365)
    alpha: float = Field(default=0.001, gt=0, lt=0.5)
    min_days: int = Field(default=3, ge=1, le=365)
    source: Literal["champion", "own"] = "champion"


class MonitorIn(StrictModel):
    model: Name
    signal: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    band: Annotated[FixedBand | BaselineBand, Field(discriminator="type")]
    dimension: Dimension | None = None
    value: CohortValue | None = None
    min_volume: int = Field(default=100, ge=1)
    cooldown_hours: int = Field(default=24, ge=0, le=24 * 90)
    resolve_after_days: int = Field(default=2, ge=1, le=90)
    enabled: bool = True


class MonitorOut(BaseModel):
    id: int
    model: str
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


class AlertOut(BaseModel):
    id: int
    status: AlertStatus
    model: str
    checkpoint_id: int
    checkpoint_version: str
    signal: str
    dimension: str
    value: str
    day: date
    last_day: date
    observed: float
    band: BandOut
    baseline: float | None
    volume: int
    sample_trace_ids: list[str]
    rollback_target: CheckpointRef | None
    monitor_id: int
    days_in_band: int
    opened_at: datetime
    acknowledged_at: datetime | None
    resolved_at: datetime | None
    resolution: str | None
    annotations: list[dict[str, Any]]
    links: dict[str, Any]


class AlertActionIn(StrictModel):
    note: Note | None = None


class IncidentDayIn(StrictModel):
    model: Name
    day: date
    note: Note | None = None


class IncidentDayOut(BaseModel):
    id: int
    model: str
    day: date
    note: str | None
    created_at: datetime
