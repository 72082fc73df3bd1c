"""Production traffic: events in and out, feedback, traces, per-project ingest settings."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    AliasPath,
    BaseModel,
    BeforeValidator,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from app.core.schemas import MAX_ID, OrmModel, StrictModel, nfc

FeedbackValue = Literal["up", "down"]
# Stored as a small integer: +1 up, -1 down.
FEEDBACK_SCORES: dict[str, int] = {"up": 1, "down": -1}
FEEDBACK_NAMES: dict[int, FeedbackValue] = {1: "up", -1: "down"}

# Column widths of the three cohort dimensions stored as their own columns.
COHORT_COLUMN_WIDTHS = {"route": 200, "prompt_version": 100, "user_segment": 100}


_EXACT_INTEGERS = 2.0**53
"""Floats below this in size hold their integer exactly, so 3.0 is the integer 3."""


def _scalar_as_text(value: Any) -> Any:
    """Labels and cohort values may arrive as numbers or flags (a class index, a tier). A
    whole number written as a float (pandas and numpy write 1.0 for a column that ever held
    a NaN) is the integer's text: as a label, a whole float's text other than "1.0"/"0.0"
    (1.00, 1e0) is no label the calibration signals read (a flag's spellings, or 1.0/0.0:
    app/drift/rollup.py), and those events would drop out of them silently; as a cohort
    value, one tier was two cohorts, "1" from a batch where no call lacked it
    and "1.0" from one where some did, each judged on its own days."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < _EXACT_INTEGERS:
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    return value


ScalarText = Annotated[str, BeforeValidator(_scalar_as_text)]

LabelText = Annotated[ScalarText, Field(max_length=200)]


def _as_utc(value: datetime) -> datetime:
    """A naive time is read as UTC: every time in Plumbline is UTC. An offset can carry a time
    written inside the calendar out of it once in UTC (0001-01-01T00:30+01:00): a validation
    error of that value, never a failure of the whole request."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is outside years 1-9999 once converted to UTC") from None


UtcDateTime = Annotated[datetime, AfterValidator(_as_utc)]
"""An instant as clients write it (naive = UTC), held as aware UTC: what the database binds."""


class EventIn(StrictModel):
    """One model call. Validated on its own so one bad event never refuses its batch."""

    trace_id: str = Field(min_length=1, max_length=64)
    span_id: str | None = Field(default=None, max_length=32)
    timestamp: UtcDateTime
    model: str | None = Field(default=None, min_length=1, max_length=200)
    checkpoint_version: str | None = Field(default=None, min_length=1, max_length=200)
    checkpoint_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    cohort: dict[Annotated[str, Field(min_length=1, max_length=64)], ScalarText | None] = Field(
        default_factory=dict, max_length=32
    )
    input: str | None = None
    output: str | None = None
    eval_passed: bool | None = None
    fallback: bool | None = None
    refusal: bool | None = None
    should_refuse: bool | None = None
    feedback: FeedbackValue | None = None
    # At most ~11.6 days: a bound that keeps the drift job's log moments finite (a 1e300 ms
    # call would overflow exp() of its cohort's fitted p95), far beyond any real call.
    latency_ms: float | None = Field(default=None, ge=0, le=1e9)
    input_tokens: int | None = Field(default=None, ge=0, le=2**31 - 1)
    output_tokens: int | None = Field(default=None, ge=0, le=2**31 - 1)
    probability: float | None = Field(default=None, ge=0, le=1)
    label: LabelText | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    shadow_of: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="A shadow answer: the trace id of the served request it answered off the "
        "serving path. Never counted as served traffic; canaries pair it with that trace.",
    )

    @field_validator("cohort")
    @classmethod
    def _cohort_widths(cls, cohort: dict[str, str | None]) -> dict[str, str]:
        """An empty or null value means the dimension is absent, as OTLP (whose empty or null
        attribute names nothing) and a dataset's empty cell read it: kept, "" made REST
        events a cohort of their own that the same call sent over OTLP never joined, and a
        null refused the event, leaving those users' calls out of every rate. Names and values
        are NFC-normalised (`nfc`): "café" composed and decomposed is one cohort."""
        if "all" in cohort:
            raise ValueError("'all' names the whole population; give the dimension another name")
        present = {nfc(dimension): nfc(value) for dimension, value in cohort.items() if value}
        if len(present) < sum(1 for value in cohort.values() if value):
            raise ValueError(
                "two dimensions have the same name once Unicode-normalised (NFC); send one"
            )
        for dimension, value in present.items():
            width = COHORT_COLUMN_WIDTHS.get(dimension, 200)
            if len(value) > width:
                raise ValueError(f"cohort.{dimension} is longer than {width} characters")
        return present

    @model_validator(mode="after")
    def _names_a_checkpoint(self) -> EventIn:
        if self.checkpoint_id is None and (self.model is None or self.checkpoint_version is None):
            raise ValueError("name the checkpoint: checkpoint_id, or model and checkpoint_version")
        return self

    @model_validator(mode="after")
    def _storable(self, info: ValidationInfo) -> EventIn:
        if info.context and info.context.get(STORABLE_CHECKED):
            # The body scan cannot see a number past a double's range, which parses as
            # Infinity (1e400); only `attributes` can hold one (every other number is bounded,
            # cohort values and labels become text).
            if self.attributes and not _all_finite(self.attributes):
                raise ValueError(f"attributes: {_NOT_FINITE}")
            return self
        for name in _TEXT_FIELDS:
            problem = text_problem(getattr(self, name))
            if problem is not None:
                raise ValueError(f"{name}: {problem}")
        for name in _JSON_FIELDS:
            problem = json_problem(getattr(self, name))
            if problem is not None:
                raise ValueError(f"{name}: {problem}")
        return self


_TEXT_FIELDS = (
    "trace_id",
    "span_id",
    "model",
    "checkpoint_version",
    "input",
    "output",
    "label",
    "shadow_of",
)
_JSON_FIELDS = ("cohort", "attributes")


# What PostgreSQL refuses (failing the whole batch with it) is found per event instead.

# Validation context key: the whole request body was already shown free of what
# `text_problem` and `json_problem` look for, so the per-event walk can be skipped.
STORABLE_CHECKED = "storable_checked"

# Everything a JSON body needs to carry a NUL, a lone surrogate, NaN or Infinity. Raw bytes
# cannot: control characters and invalid UTF-8 fail JSON parsing before any event is read.
_UNSTORABLE_ESCAPES = re.compile(rb"\\u0000|\\u[dD][89abcdefABCDEF]")


def body_is_plainly_storable(body: bytes) -> bool:
    """One C-speed scan of a batch instead of a Python walk of every string of every event
    (a third of REST ingest's CPU); a match only sends the batch down the per-event path."""
    return (
        b"NaN" not in body
        and b"Infinity" not in body
        and (b"\\u" not in body or _UNSTORABLE_ESCAPES.search(body) is None)
    )  # substring tests run at memchr speed; the escape pattern only where escapes exist


def text_problem(text: str | None) -> str | None:
    if text is None:
        return None
    if "\x00" in text:
        return "contains a NUL character, which cannot be stored"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid Unicode (a lone surrogate)"
    return None


_NOT_FINITE = "holds NaN or Infinity, which JSON cannot"


def _all_finite(value: Any) -> bool:
    """No float in the JSON value is NaN or infinite (strings are not looked at)."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, float):
            if not math.isfinite(item):
                return False
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True


def json_problem(value: Any) -> str | None:
    """A walk, not a json.dumps: most events carry a few small attributes, checked in µs."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                return problem
        elif isinstance(item, float) and not math.isfinite(item):
            return _NOT_FINITE
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return None


class EventBatchIn(StrictModel):
    """The envelope is checked as a whole; its events one by one (see EventIn)."""

    events: list[Any]


class EventBatch(StrictModel):
    """The same body validated in one pass, for batches whose every event is valid."""

    events: list[EventIn]


class EventRejection(OrmModel):
    index: int
    field: str | None = None
    error: str


class IngestResult(OrmModel):
    """accepted + duplicates + len(rejected) == number of events sent."""

    accepted: int
    duplicates: int
    rejected: list[EventRejection]


def _feedback_name(value: Any) -> Any:
    return FEEDBACK_NAMES.get(value) if isinstance(value, int) else value


StoredFeedback = Annotated[FeedbackValue | None, BeforeValidator(_feedback_name)]


class EventOut(OrmModel):
    id: int
    trace_id: str
    span_id: str | None = Field(description="None for an event without a span id.")
    timestamp: datetime = Field(validation_alias=AliasChoices("ts", "timestamp"))
    model: str = Field(validation_alias=AliasPath("checkpoint", "model", "name"))
    checkpoint_id: int
    checkpoint_version: str = Field(validation_alias=AliasPath("checkpoint", "version"))
    cohort: dict[str, Any]
    input: str | None
    output: str | None
    truncated: bool
    eval_passed: bool | None
    fallback: bool | None
    refusal: bool | None
    should_refuse: bool | None
    feedback: StoredFeedback
    latency_ms: float | None
    input_tokens: int | None
    output_tokens: int | None
    probability: float | None
    label: str | None
    attributes: dict[str, Any]
    source: str
    received_at: datetime
    shadow_of: str | None

    @field_validator("span_id", mode="before")
    @classmethod
    def _no_empty_span(cls, span_id: Any) -> Any:
        return span_id or None  # stored as '' so (trace_id, span_id) stays unique


class FeedbackIn(StrictModel):
    trace_id: str = Field(min_length=1, max_length=64)
    value: FeedbackValue
    comment: str | None = Field(default=None, max_length=4000)


class FeedbackOut(BaseModel):
    trace_id: str
    value: FeedbackValue
    comment: str | None
    events_updated: int


class TraceOut(OrmModel):
    trace_id: str
    feedback: StoredFeedback = Field(default=None, validation_alias=AliasPath("feedback", "value"))
    feedback_comment: str | None = Field(
        default=None, validation_alias=AliasPath("feedback", "comment")
    )
    events: list[EventOut]


class ProjectSettingsIn(StrictModel):
    """online_eval: evaluator name -> true (defaults) or {threshold?, params?}; false is off."""

    online_eval: dict[str, bool | dict[str, Any]] = Field(default_factory=dict)


class ProjectSettingsOut(BaseModel):
    online_eval: dict[str, bool | dict[str, Any]]
