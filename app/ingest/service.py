"""Production traffic in: every event is validated on its own, attributed to a registered
checkpoint, bounded, optionally evaluated, and stored once however often it is retried.

REST batches and OTLP exports both end in `ingest_events`, so both obey the same rules:

* Idempotence: events are unique on (project_id, trace_id, span_id) with "" for a missing
  span id; a retry inserts nothing and reports the events as duplicates, even when it carries
  another timestamp. The key is claimed in `event_keys` first (`_insert_staged_rows`), because the
  partitioned `events` of PostgreSQL can only hold unique keys that contain `ts`.
* Durability: the answer is computed from what the committed transaction inserted, so an
  acknowledged event is on disk, and an event that is not reported accepted is not stored.
* Feedback may arrive before or after its event, and is copied onto the trace's served events,
  never onto a shadow answer (which no user saw), nor onto a call stored after the rating and
  made after the last of the trace's rated calls stored before it (the conversation went on
  after the user rated: that answer was not seen; counted as rated, it became the trace's
  "last rated call" and a canary put the rating on its arm). A call delivered late but made
  before that one takes it; a trace rated before any of its calls arrived gives every call
  the rating, in whichever batch it comes. Both writers take a per-project PostgreSQL
  advisory lock (ingest shared, feedback exclusive), so a feedback write and an insert of
  its trace can never miss each other; SQLite serializes writers anyway (BEGIN IMMEDIATE).
* Carriers: of the calls carrying a trace's rating, one per checkpoint also holds it in
  `carried_feedback` (`_place_carriers`), the one the daily drift scan counts, so a rated
  trace is one rating there however many calls it made. Both writers place them after
  storing, in the same transaction, for the traces whose rated calls they wrote.
* Clock: an event stamped more than `ingest_max_clock_skew_s` ahead of the server's clock
  is refused (per event, field `timestamp`): one comparison with a bound computed once per
  batch. A client with a wrong clock otherwise filed calls under days judged later, where
  they never counted.
* Retention: an event stamped before the retention cutoff (`retention_days` before the
  server's clock, `retention.retention_cutoff`, the instant the retention job deletes
  before) is refused too (per event,
  field `timestamp`): stored, it was deleted by the next retention run and, sent again after
  it, counted as new (exactly-once broken), under a day whose drift was judged already.
* Online evaluation fills `refusal` / `eval_passed` only when the client did not send them,
  and an evaluator that cannot judge an event leaves the field empty instead of dropping it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

import orjson
from psycopg.types.json import JsonbBinaryDumper
from pydantic import ValidationError
from sqlalchemy import Table, bindparam, func, insert, select, text, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.core.auth import Principal
from app.core.db import is_postgres, upsert, utcnow
from app.core.errors import PayloadTooLarge, Unprocessable
from app.core.settings import Settings
from app.ingest.cohorts import assign_cohort_ids
from app.ingest.partitions import MISSING_DAYS_SQL, create_partitions
from app.ingest.retention import retention_cutoff
from app.ingest.schemas import (
    FEEDBACK_SCORES,
    STORABLE_CHECKED,
    EventBatch,
    EventBatchIn,
    EventIn,
    FeedbackValue,
)
from app.keys import service as projects
from app.models import Checkpoint, Event, EventKey, Feedback, Model
from plumbline.evals import EvalResult, Evaluator, EvaluatorConfigError, Sample, get_evaluator

log = logging.getLogger("plumbline.ingest")

INSERT_CHUNK_ROWS = 1000
"""Rows per executemany on SQLite, where the whole batch shares one transaction anyway."""
LOOKUP_CHUNK = 5000
"""Values per IN (...) list when reading by trace ids (SQLite allows 32,766 parameters)."""
# The latest call of the staged row's trace stored with its rating `f` before the trace was
# last rated (_rated_until, before_rating=True).
_RATED_UNTIL_SQL = (
    "SELECT MAX(e.ts) FROM events e WHERE e.project_id = s.project_id "
    "AND e.trace_id = s.trace_id AND e.shadow_of IS NULL AND e.feedback IS NOT NULL "
    "AND e.received_at <= f.created_at"
)
MAX_NEW_DAYS_PER_BATCH = 100
"""PostgreSQL: days without a partition one batch may bring (each becomes a partition, made on
demand). Ordinary traffic brings none (the daily jobs make the coming days), a backfill a few
dozen; a batch of timestamps scattered over centuries would otherwise create one table per
day it names, so it is refused whole (422, nothing stored) and asked to split."""
ONLINE_EVALUATORS = frozenset({"refusal", "json_validation", "is_compliant"})
"""Cheap and deterministic, needing only the output: safe to run inside the ingest path."""
EVENTS_TABLE = cast(Table, Event.__table__)
EVENT_KEYS_TABLE = cast(Table, EventKey.__table__)
EVENT_KEY = ("project_id", "trace_id", "span_id")
EVENT_COLUMNS = tuple(column.name for column in EVENTS_TABLE.columns if column.name != "id")
"""Every column an ingested row fills, read from the table so a new column cannot be missed
(`_row` fills every one of them, `assign_cohort_ids` adds cohort_id: the COPY reads them by
name, `_copy_values`, and a column nobody fills fails every PostgreSQL ingest with KeyError
instead of storing NULL unnoticed)."""
_copy_values = operator.itemgetter(*EVENT_COLUMNS)
"""A row's values in EVENT_COLUMNS order, for the COPY: one C call where
tuple(map(row.get, EVENT_COLUMNS)) made one Python-level call per column."""
_COPY_TYPES = tuple(
    EVENTS_TABLE.columns[name].type.compile(dialect=postgresql.dialect()).split("(")[0].lower()
    for name in EVENT_COLUMNS
)
"""PostgreSQL type names of EVENT_COLUMNS, which binary COPY needs to encode each value."""
_STAGING_TABLE = "plumbline_events_staging"
FEEDBACK_TABLE = cast(Table, Feedback.__table__)

_FEEDBACK_LOCK_NAMESPACE = 0x504C4642  # "PLFB": first key of the two-key advisory lock


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    field: str | None
    error: str


@dataclass(frozen=True, slots=True)
class ValidatedBatch:
    """A batch after validation: `size` events sent, each either valid (with its index in
    the batch) or rejected."""

    size: int
    valid: list[tuple[int, EventIn]]
    rejected: list[Rejection]


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    """accepted + duplicates + len(rejected) is the number of events the caller sent."""

    accepted: int
    duplicates: int
    rejected: list[Rejection] = field(default_factory=list)


# --- Validation ---------------------------------------------------------------------------


def _rejection(index: int, exc: ValidationError) -> Rejection:
    first = exc.errors(include_url=False)[0]
    location = ".".join(str(part) for part in first["loc"]) or None
    message = first["msg"].removeprefix("Value error, ")
    if len(exc.errors()) > 1:
        message += f" (and {len(exc.errors()) - 1} more)"
    return Rejection(index, location, f"{location}: {message}" if location else message)


def validate_events(raw_events: Sequence[Any], storable_checked: bool = False) -> ValidatedBatch:
    """Each event on its own, so one bad event is reported by index and never refuses the
    batch. `storable_checked`: the caller scanned the raw body (`body_is_plainly_storable`)."""
    valid: list[tuple[int, EventIn]] = []
    rejected: list[Rejection] = []
    context = {STORABLE_CHECKED: storable_checked}
    for index, raw in enumerate(raw_events):
        try:
            valid.append((index, EventIn.model_validate(raw, context=context)))
        except ValidationError as exc:
            rejected.append(_rejection(index, exc))
    return ValidatedBatch(len(raw_events), valid, rejected)


def validate_batch_json(body: bytes, storable_checked: bool) -> ValidatedBatch:
    """A REST body `{"events": [...]}` parsed and validated in one pass of pydantic-core,
    straight from JSON to EventIn without an intermediate dict per event.

    A batch holding any invalid event is read again the per-event way (`validate_events`),
    so what is stored and every rejection's message are exactly what that path gives; only
    clean batches, the common case, take the one-pass path. Raises ValidationError for a
    malformed envelope (the caller's 422)."""
    context = {STORABLE_CHECKED: storable_checked}
    try:
        events = EventBatch.model_validate_json(body, context=context).events
    except ValidationError:
        return validate_events(_raw_events(body, storable_checked), storable_checked)
    return ValidatedBatch(len(events), list(enumerate(events)), [])


def _raw_events(body: bytes, storable_checked: bool) -> list[Any]:
    """The envelope's events, each as parsed. pydantic-core's parser refuses a lone surrogate
    escape (`\\ud83d`) as invalid JSON for the whole body, but JSON allows it, and clients
    send it: JavaScript's slice and OpenTelemetry SDKs' attribute-length limits cut an emoji
    between its UTF-16 halves, and JSON.stringify escapes the lone half. Such a body (only
    one the scan did not pass, `storable_checked` False, can hold one) is parsed by the
    standard library instead, which keeps the lone half, so only its event is refused
    (`text_problem`), not the batch. Raises ValidationError for a malformed envelope."""
    try:
        return EventBatchIn.model_validate_json(body).events
    except ValidationError as exc:
        if storable_checked or all(e["type"] != "json_invalid" for e in exc.errors()):
            raise
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):
            raise exc from None
        return EventBatchIn.model_validate(document).events


def validate_built_events(events: Sequence[Mapping[str, Any]]) -> ValidatedBatch:
    """Events built in memory (the OTLP receiver's) validated in one pydantic-core call, as
    `validate_batch_json` does for a REST body; a batch holding any invalid event is validated
    again the per-event way (`validate_events`), so every answer is exactly what that path
    gives. Storability is checked by each event's own walk of its strings and JSON values:
    measured on the benchmark's spans (2026-11-30) that costs 3.4 us per event, where a
    json.dumps of the batch for the byte scan REST bodies get (`body_is_plainly_storable`)
    costs 9 us before validation starts."""
    try:
        valid = EventBatch.model_validate({"events": events}).events
    except ValidationError:
        return validate_events(events)
    return ValidatedBatch(len(valid), list(enumerate(valid)), [])


# --- Checkpoints --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResolvedCheckpoint:
    id: int
    model_id: int
    model: str
    version: str


_NAMED_CHECKPOINTS = (
    select(Checkpoint.id, Checkpoint.model_id, Model.name, Checkpoint.version)
    .join(Model, Model.id == Checkpoint.model_id)
    .where(Checkpoint.project_id == bindparam("project_id"))
    .where(
        Model.name.in_(bindparam("names", expanding=True))
        | Checkpoint.id.in_(bindparam("ids", expanding=True))
    )
)
"""Built once, as the other statements every ingest request runs: building one anew cost more
of the server's CPU than running it (2026-11-30, in-process: ~0.9 ms of a 500-event OTLP
request's fixed ~3.3 ms, which REST's 10,000-event batches hardly notice)."""


class CheckpointResolver:
    """Every checkpoint a batch names, read in one query up front and then matched in memory."""

    def __init__(self, session: Session, project_id: int, events: Sequence[EventIn]) -> None:
        names = {event.model for event in events if event.model}
        ids = {event.checkpoint_id for event in events if event.checkpoint_id}
        self.by_id: dict[int, ResolvedCheckpoint] = {}
        self.by_name: dict[tuple[str, str], ResolvedCheckpoint] = {}
        self.models: set[str] = set()
        if not names and not ids:
            return
        rows = session.execute(
            _NAMED_CHECKPOINTS,
            {"project_id": project_id, "names": sorted(names), "ids": sorted(ids)},
        ).all()
        for row in rows:
            resolved = ResolvedCheckpoint(*row)
            self.by_id[resolved.id] = resolved
            self.by_name[(resolved.model, resolved.version)] = resolved
            self.models.add(resolved.model)

    def resolve(self, event: EventIn) -> ResolvedCheckpoint | str:
        """The checkpoint, or why the event names none of this project's checkpoints."""
        if event.checkpoint_id is not None:
            found = self.by_id.get(event.checkpoint_id)
            if found is None:
                return f"no checkpoint {event.checkpoint_id} in this project"
            if event.model is not None and event.model != found.model:
                return (
                    f"checkpoint {found.id} belongs to model '{found.model}', not '{event.model}'"
                )
            if event.checkpoint_version not in (None, found.version):
                return (
                    f"checkpoint {found.id} is version '{found.version}', "
                    f"not '{event.checkpoint_version}'"
                )
            return found
        assert event.model is not None and event.checkpoint_version is not None
        found = self.by_name.get((event.model, event.checkpoint_version))
        if found is not None:
            return found
        if event.model not in self.models:
            return f"unknown checkpoint: no model named '{event.model}' (register it first)"
        return (
            f"unknown checkpoint: model '{event.model}' has no version '{event.checkpoint_version}'"
        )


# --- Online evaluation ---------------------------------------------------------------------


def build_online_evaluators(config: Mapping[str, Any]) -> dict[str, Evaluator[Any]]:
    """Evaluator name -> instance for a project's `online_eval` setting.

    Raises EvaluatorConfigError naming the bad entry; `true` means defaults, `false` off,
    an object gives {threshold?, params?}."""
    evaluators: dict[str, Evaluator[Any]] = {}
    for name, spec in config.items():
        if name not in ONLINE_EVALUATORS:
            allowed = ", ".join(sorted(ONLINE_EVALUATORS))
            raise EvaluatorConfigError(name, f"not available online (allowed: {allowed})")
        if spec is False:
            continue
        if spec is True:
            spec = {}
        if not isinstance(spec, Mapping) or set(spec) - {"threshold", "params"}:
            raise EvaluatorConfigError(name, "must be true, false or {threshold?, params?}")
        try:
            evaluators[name] = get_evaluator(name, spec.get("threshold"), spec.get("params"))
        except EvaluatorConfigError as exc:
            raise exc.at(name) from None
    return evaluators


class OnlineEvaluation:
    """Fills what the client left empty: `refusal` from the refusal evaluator, `eval_passed`
    from every other configured evaluator (all must pass)."""

    def __init__(self, evaluators: Mapping[str, Evaluator[Any]]) -> None:
        self.refusal = evaluators.get("refusal")
        self.verdicts = [ev for name, ev in evaluators.items() if name != "refusal"]

    @classmethod
    def for_project(cls, settings: Mapping[str, Any]) -> OnlineEvaluation:
        """A stored configuration that no longer builds disables evaluation, never ingest."""
        try:
            return cls(build_online_evaluators(settings.get("online_eval") or {}))
        except EvaluatorConfigError:
            log.warning("online_eval setting is invalid; evaluating nothing", exc_info=True)
            return cls({})

    @property
    def active(self) -> bool:
        return self.refusal is not None or bool(self.verdicts)

    def apply(self, row: dict[str, Any], event: EventIn) -> None:
        sample = Sample(
            input=event.input,
            output=event.output,  # the whole output: a truncated one is rarely valid JSON
            latency_ms=event.latency_ms,
            expected_behavior=None
            if event.should_refuse is None
            else ("refuse" if event.should_refuse else "answer"),
        )
        if self.refusal is not None and row["refusal"] is None:
            result = _judge(self.refusal, sample)
            if result is not None:
                row["refusal"] = bool(result.details.get("refused"))
        if self.verdicts and row["eval_passed"] is None:
            results = [_judge(evaluator, sample) for evaluator in self.verdicts]
            if all(result is not None for result in results):
                row["eval_passed"] = all(result.passed for result in results if result)


def _judge(evaluator: Evaluator[Any], sample: Sample) -> EvalResult | None:
    """A verdict, or None when the evaluator could not judge (bad input, a crash)."""
    try:
        result = evaluator.evaluate_sample(sample)
    except Exception:  # a plugin's own evaluate_sample may not honour "never raises"
        log.warning("online evaluator %s crashed", evaluator.name, exc_info=True)
        return None
    return None if "error" in result.details else result


# --- Rows ---------------------------------------------------------------------------------


def _bounded(text: str | None, limit: int) -> tuple[str | None, bool]:
    if text is None or len(text) <= limit:
        return text, False
    return text[:limit], True


def _row(
    project_id: int,
    event: EventIn,
    checkpoint: ResolvedCheckpoint,
    max_chars: int,
    source: str,
    received_at: datetime,
) -> dict[str, Any]:
    text_in, input_cut = _bounded(event.input, max_chars)
    text_out, output_cut = _bounded(event.output, max_chars)
    return {
        "project_id": project_id,
        "model_id": checkpoint.model_id,
        "checkpoint_id": checkpoint.id,
        "trace_id": event.trace_id,
        "span_id": event.span_id or "",
        "ts": event.timestamp,
        "route": event.cohort.get("route"),
        "prompt_version": event.cohort.get("prompt_version"),
        "user_segment": event.cohort.get("user_segment"),
        "cohort": event.cohort,
        "input": text_in,
        "output": text_out,
        "truncated": input_cut or output_cut,
        "eval_passed": event.eval_passed,
        "fallback": event.fallback,
        "refusal": event.refusal,
        "should_refuse": event.should_refuse,
        "feedback": FEEDBACK_SCORES.get(event.feedback or ""),
        "carried_feedback": None,  # placed after storing (_place_carriers)
        "latency_ms": event.latency_ms,
        "input_tokens": event.input_tokens,
        "output_tokens": event.output_tokens,
        "probability": event.probability,
        "label": event.label,
        "attributes": event.attributes,
        "source": source,
        "received_at": received_at,
        "shadow_of": event.shadow_of,
    }


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- Ingest ---------------------------------------------------------------------------------


def ingest_events(
    session: Session,
    project_id: int,
    batch: ValidatedBatch,
    settings: Settings,
    source: str = "rest",
) -> IngestOutcome:
    """Resolve and store one validated batch; returns what the committed transaction holds."""
    if batch.size > settings.max_events_per_request:
        raise PayloadTooLarge(
            f"events: {batch.size} events in one request; the limit is "
            f"{settings.max_events_per_request} (PLUMBLINE_MAX_EVENTS_PER_REQUEST)",
            field="events",
        )
    valid, rejected = batch.valid, list(batch.rejected)
    resolver = CheckpointResolver(session, project_id, [event for _, event in valid])
    online = OnlineEvaluation.for_project(projects.project_settings(session, project_id))
    # End the read before the CPU-bound part: on SQLite every transaction holds the write lock.
    # (Keeping it open on PostgreSQL, to save the second pool checkout, measured no faster
    # in-process on 2026-11-30 - 50-58 us per event either way - so both databases end it.)
    session.rollback()

    received_at = utcnow()
    latest_timestamp = received_at + timedelta(seconds=settings.ingest_max_clock_skew_s)
    earliest_timestamp = retention_cutoff(settings, received_at)
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    repeated_in_batch = 0
    for index, event in valid:
        if event.timestamp > latest_timestamp:
            rejected.append(_ahead_of_clock(index, event, received_at, settings))
            continue
        if event.timestamp < earliest_timestamp:
            rejected.append(_past_retention(index, event, earliest_timestamp, settings))
            continue
        checkpoint = resolver.resolve(event)
        if isinstance(checkpoint, str):
            rejected.append(Rejection(index, "checkpoint", checkpoint))
            continue
        key = (event.trace_id, event.span_id or "")
        if key in seen:
            repeated_in_batch += 1
            continue
        seen.add(key)
        row = _row(project_id, event, checkpoint, settings.max_text_chars, source, received_at)
        if online.active:
            online.apply(row, event)
        rows.append(row)

    inserted = _store(session, project_id, rows)
    rejected.sort(key=lambda rejection: rejection.index)
    return IngestOutcome(inserted, len(rows) - inserted + repeated_in_batch, rejected)


def _ahead_of_clock(
    index: int, event: EventIn, received_at: datetime, settings: Settings
) -> Rejection:
    """A timestamp further ahead of the server's clock than the allowed skew is a client's
    wrong clock: stored, the call would sit under a day the drift job judges later (or has
    judged already, when the clock is fixed), never in the day it happened."""
    return Rejection(
        index,
        "timestamp",
        f"timestamp: {event.timestamp.isoformat()} is more than "
        f"{settings.ingest_max_clock_skew_s} s ahead of the server's clock "
        f"({received_at.isoformat(timespec='seconds')}; PLUMBLINE_INGEST_MAX_CLOCK_SKEW_S): "
        "check the client's clock",
    )


def _past_retention(index: int, event: EventIn, cutoff: datetime, settings: Settings) -> Rejection:
    """A timestamp before the retention cutoff: stored, the event would be deleted by the
    next retention run, and the same event sent again after it would be stored anew, counted
    twice in all, under a day whose drift was judged already."""
    return Rejection(
        index,
        "timestamp",
        f"timestamp: {event.timestamp.isoformat()} is older than the event retention "
        f"({settings.retention_days} days, PLUMBLINE_RETENTION_DAYS; the cutoff is "
        f"{cutoff.isoformat(timespec='seconds')}): events that old are deleted, so they "
        "are not accepted",
    )


def _store(session: Session, project_id: int, rows: list[dict[str, Any]]) -> int:
    """One short transaction: cohorts interned, stored feedback joined in, bulk insert,
    commit."""
    if not rows:
        return 0
    _lock_feedback(session, project_id, exclusive=False)
    assign_cohort_ids(session, project_id, rows)
    if is_postgres(session):
        pooled = session.connection().connection.info
        inserted, rated = _copy_new_rows(session, rows, staging_exists=_STAGING_TABLE in pooled)
        _place_carriers(session, project_id, rated)
        session.commit()
        # Only a committed transaction proves the table outlives it (a rolled-back CREATE
        # leaves none), so the mark is set after the commit, on the pooled connection, which
        # keeps its temporary tables until it is closed (and its `info` with them).
        pooled[_STAGING_TABLE] = True
        return inserted
    stored = _stored_feedback(session, project_id, {row["trace_id"] for row in rows})
    rated_until = _rated_until(session, project_id, set(stored), before_rating=True)
    for row in rows:
        if row["shadow_of"] is not None or row["trace_id"] not in stored:
            continue  # a shadow answer reached no user
        until = rated_until.get(row["trace_id"])
        if until is None or row["ts"] <= until:  # not made after the rating
            row["feedback"] = stored[row["trace_id"]]
    new = [
        row
        for chunk in _chunks(rows, INSERT_CHUNK_ROWS)
        for row in _insert_claimed_sqlite(session, chunk)
    ]
    served = (row for row in new if row["shadow_of"] is None)
    _place_carriers(
        session, project_id, {r["trace_id"] for r in served if r["feedback"] is not None}
    )
    session.commit()
    return len(new)


def _insert_claimed_sqlite(
    session: Session, rows: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """SQLite's exactly-once step: claim the keys, insert the events whose key was claimed
    (returned). SQLite runs one writer at a time (BEGIN IMMEDIATE), so nobody claims in
    between."""
    claimed = session.execute(
        sqlite.insert(EVENT_KEYS_TABLE)
        .on_conflict_do_nothing()
        .returning(EVENT_KEYS_TABLE.c.trace_id, EVENT_KEYS_TABLE.c.span_id),
        [{name: row[name] for name in EVENT_KEY} for row in rows],
    ).all()
    keys = {(trace_id, span_id) for trace_id, span_id in claimed}
    new = [row for row in rows if (row["trace_id"], row["span_id"]) in keys]
    if new:
        session.execute(insert(EVENTS_TABLE), new)
    return new


def _json_bytes(value: Any) -> bytes:
    """An event's JSON value (cohort, attributes) as JSON text: orjson, which took 1.1 us per
    event for the two columns where json.dumps took 9.3 us (the benchmark's REST event,
    2026-11-30), about a sixth of the server's CPU per event; json.dumps only for what orjson
    refuses (integers beyond 64 bits). Values reaching here were checked storable (no NaN,
    Infinity, NUL or lone surrogate), and both encoders write the same JSON value for them
    (orjson would write a non-finite float as null, silently)."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(value).encode()


_JSONB_VERSION = b"\x01"
"""Binary JSONB is this version byte, then the JSON text."""


class _EventJsonbDumper(JsonbBinaryDumper):
    """Binary JSONB through `_json_bytes`, for the batch's COPY: one Python call per value
    where the inherited `dump` made three (wrapper check, `dumps`, the version prefix)."""

    def dump(self, obj: Any) -> bytes:
        return _JSONB_VERSION + _json_bytes(obj)


def _copy_new_rows(
    session: Session, rows: list[dict[str, Any]], staging_exists: bool
) -> tuple[int, set[str]]:
    """PostgreSQL: binary COPY of the batch into a per-connection staging table, then
    `_insert_staged_rows`. Several times faster than multi-row INSERTs (no 24,000-parameter
    statements to bind), and binary COPY skips formatting every value as text. The staging
    table is created once per pooled connection (`staging_exists`: a committed transaction
    of this connection already made it) and emptied by every commit or rollback."""
    columns = ", ".join(EVENT_COLUMNS)
    connection = session.connection()
    if not staging_exists:
        connection.exec_driver_sql(
            f"CREATE TEMP TABLE IF NOT EXISTS {_STAGING_TABLE} ON COMMIT DELETE ROWS "
            f"AS SELECT {columns} FROM events WITH NO DATA"
        )
    driver = connection.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor:
        # dict values (cohort, attributes) are the JSONB columns; registered on this cursor
        # only, so no other statement changes how it adapts a dict.
        cursor.adapters.register_dumper(dict, _EventJsonbDumper)
        with cursor.copy(f"COPY {_STAGING_TABLE} ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(list(_COPY_TYPES))
            for row in rows:
                copy.write_row(_copy_values(row))
    return _insert_staged_rows(session)


def _insert_staged_rows(session: Session) -> tuple[int, set[str]]:
    """PostgreSQL's exactly-once step, from the staged batch (keys unique within it):

    1. the batch's days without a partition get one, in a transaction of their own
       (app/ingest/partitions.py), so the insert never fails for want of a partition;
    2. one statement claims the keys in `event_keys` (ON CONFLICT DO NOTHING RETURNING) and
       inserts the events whose key it claimed, joining in stored feedback. A concurrent
       transaction claiming the same key waits on the key's unique index until this one
       commits (then it skips the key) or rolls back (then it claims it); the timestamp plays
       no part, so a retry with another `ts` is a duplicate too. Keys are claimed in key
       order, so concurrent batches sharing keys wait on each other, never deadlock.

    Returns the rows inserted, which is exactly what was new, and the traces of those that
    were served and rated (whose carriers `_place_carriers` then places): counted from the
    insert's RETURNING inside the statement, so no row goes back to the client."""
    connection = session.connection()
    columns = ", ".join(EVENT_COLUMNS)
    selected = ", ".join(
        # A shadow answer reached no user: the trace's feedback is its served answer's; a
        # call made after the trace's last rated call came after the rating.
        "CASE WHEN s.shadow_of IS NULL AND f.value IS NOT NULL "
        f"AND COALESCE(({_RATED_UNTIL_SQL}) >= s.ts, TRUE) THEN f.value ELSE s.feedback END"
        if name == "feedback"
        else f"s.{name}"
        for name in EVENT_COLUMNS
    )
    missing = connection.exec_driver_sql(MISSING_DAYS_SQL.format(staging=_STAGING_TABLE))
    days = list(missing.scalars())
    if len(days) > MAX_NEW_DAYS_PER_BATCH:
        raise Unprocessable(
            f"events: the batch's timestamps fall on {len(days)} days that have no partition "
            f"yet; at most {MAX_NEW_DAYS_PER_BATCH} new days per request (send them in "
            "several requests)",
            field="events",
        )
    if days:
        create_partitions(connection.engine, days)
    key = ", ".join(EVENT_KEY)
    inserted, rated = connection.exec_driver_sql(
        f"WITH claimed AS (INSERT INTO event_keys ({key}) "
        f"SELECT {key} FROM {_STAGING_TABLE} ORDER BY trace_id, span_id "
        f"ON CONFLICT ({key}) DO NOTHING RETURNING {key}), "
        f"new AS (INSERT INTO events ({columns}) SELECT {selected} FROM {_STAGING_TABLE} s "
        "JOIN claimed c ON c.project_id = s.project_id AND c.trace_id = s.trace_id "
        "AND c.span_id = s.span_id "
        "LEFT JOIN feedback f ON f.project_id = s.project_id AND f.trace_id = s.trace_id "
        "RETURNING trace_id, feedback IS NOT NULL AND shadow_of IS NULL AS rated) "
        "SELECT COUNT(*), array_agg(DISTINCT trace_id) FILTER (WHERE rated) FROM new"
    ).one()
    return int(inserted), set(rated or ())


def _place_carriers(session: Session, project_id: int, trace_ids: set[str]) -> None:
    """Of each trace's rated served calls on one checkpoint, the latest (by `ts`, then `id`)
    holds the rating in `carried_feedback` too, and no other event of the trace does: the
    carrier, which the daily drift scan counts (signals.DAILY_RATE_SIGNALS), so a rated
    trace is one rating per checkpoint, on the day and in the cohorts of the answer the user
    rated after (the call canaries count it on, app/canaries/queries.py). Recomputed from
    what is stored, for `trace_ids` (the traces whose rated calls this transaction wrote),
    so it holds whatever order the calls and the rating arrive in: a call delivered late but
    made later than the carrier (and before the rating) becomes the carrier; a changed rating
    is copied to the carrier; a shadow answer never carries one.

    PostgreSQL: ingest batches run concurrently (the feedback lock is shared between them)
    and neither sees the other's uncommitted calls, so two batches of one trace would each
    place a carrier of their own. Each first takes a transaction lock on every bucket of
    traces it rated (TRACE_LOCK_BUCKETS per project; keys in order, so batches never deadlock
    on them): the second waits for the first to commit, and its read then sees the first's
    calls. record_feedback holds the project's lock exclusively, so no batch runs beside it."""
    if not trace_ids:
        return
    if is_postgres(session):
        keys = sorted({_trace_lock_key(project_id, trace_id) for trace_id in trace_ids})
        session.execute(_TRACE_LOCKS, {"keys": keys})
    for chunk in _chunks(sorted(trace_ids), LOOKUP_CHUNK):
        session.execute(_PLACE_CARRIERS, {"project": project_id, "traces": chunk})


# Of the traces' rated served calls, per trace and checkpoint, the latest carries the rating
# and no other does; only the rows that change are written, each named with its `ts`, which
# on PostgreSQL names the one day partition holding it. In the database, so the rows never
# travel to the server and back: bench/canary.py --end-to-end (a week of traffic, 30% rated)
# ingested in 9.7 s without carriers, 14.2 s with a Python pass writing one UPDATE per
# changed row, 11.4 s with this statement. 99 stands for "none" (ratings are -1 and 1), so
# the comparison is one expression on SQLite and PostgreSQL alike.
_PLACE_CARRIERS = text(
    "WITH ranked AS (SELECT id, ts, feedback, carried_feedback, ROW_NUMBER() OVER ("
    "PARTITION BY trace_id, checkpoint_id ORDER BY ts DESC, id DESC) AS from_last "
    "FROM events WHERE project_id = :project AND trace_id IN :traces "
    "AND shadow_of IS NULL AND feedback IS NOT NULL), "
    "placed AS (SELECT id, ts, CASE WHEN from_last = 1 THEN feedback END AS carried, "
    "carried_feedback FROM ranked) "
    "UPDATE events SET carried_feedback = placed.carried FROM placed "
    "WHERE events.project_id = :project AND events.id = placed.id AND events.ts = placed.ts "
    "AND COALESCE(placed.carried_feedback, 99) <> COALESCE(placed.carried, 99)"
).bindparams(bindparam("traces", expanding=True))


TRACE_LOCK_BUCKETS = 64
"""The traces of a project share this many carrier locks. One lock per trace took up to
10,000 advisory locks in one transaction (a batch of single-call rated traces), and two such
batches at once exhausted PostgreSQL's shared lock table (64 x max_connections slots by
default): "out of shared memory", failing whatever statement next needed a lock, in any
session. Batches whose traces share a bucket wait for each other, which is all the carrier
needs (one trace is always in one bucket)."""


def _trace_lock_key(project_id: int, trace_id: str) -> int:
    """The advisory lock key of the bucket holding one trace of one project: a signed 64-bit
    key, unique per (project, bucket)."""
    digest = hashlib.blake2b(trace_id.encode(), digest_size=8).digest()
    return project_id * TRACE_LOCK_BUCKETS + int.from_bytes(digest, "big") % TRACE_LOCK_BUCKETS


# The one-key advisory locks, whose key space the feedback lock's two-key form does not share;
# taken in the array's (sorted) order.
_TRACE_LOCKS = text(
    "SELECT pg_advisory_xact_lock(k) FROM "
    "(SELECT k FROM unnest(CAST(:keys AS bigint[])) WITH ORDINALITY AS u(k, i) ORDER BY i) AS o"
)


def _lock_feedback(session: Session, project_id: int, *, exclusive: bool) -> None:
    """Feedback writers exclude ingest writers of the same project until they commit."""
    if is_postgres(session):
        lock = _EXCLUSIVE_FEEDBACK_LOCK if exclusive else _SHARED_FEEDBACK_LOCK
        session.execute(lock, {"project_id": project_id})


_EXCLUSIVE_FEEDBACK_LOCK = select(
    func.pg_advisory_xact_lock(_FEEDBACK_LOCK_NAMESPACE, bindparam("project_id"))
)
_SHARED_FEEDBACK_LOCK = select(
    func.pg_advisory_xact_lock_shared(_FEEDBACK_LOCK_NAMESPACE, bindparam("project_id"))
)


def _stored_feedback(session: Session, project_id: int, trace_ids: set[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for chunk in _chunks(sorted(trace_ids), LOOKUP_CHUNK):
        rows = session.execute(
            select(Feedback.trace_id, Feedback.value).where(
                Feedback.project_id == project_id, Feedback.trace_id.in_(chunk)
            )
        ).all()
        found.update({trace_id: value for trace_id, value in rows})
    return found


def _rated_until(
    session: Session, project_id: int, trace_ids: set[str], *, before_rating: bool = False
) -> dict[str, datetime]:
    """The latest call of each trace already stored with its rating (a stored call of a rated
    trace carries it unless it came after the rating): a call stored now and made after it
    came after the rating. Traces without a stored rated call are absent.

    `before_rating` (ingest): only the calls stored before the trace was last rated
    (`received_at` up to the rating's `created_at`, which every rating sets; both the server's
    clock) stand for what the user saw. A call that took the rating because it arrived after
    it says nothing of when the user rated: taken as the bound, it refused the rating to the
    trace's calls delivered in a later batch, so a trace rated before any call arrived
    counted on another call (another day, cohort, or not at all on a second checkpoint)
    when its calls came in two batches than when they came in one. Such a trace's calls all
    take the rating, however they are batched, until it is rated again. (A batch stamped
    `received_at` just before a rating and stored just after it counts as stored before
    it: the earlier bound, as before.)"""
    received = Event.received_at <= Feedback.created_at if before_rating else true()
    found: dict[str, datetime] = {}
    for chunk in _chunks(sorted(trace_ids), LOOKUP_CHUNK):
        query = (
            select(Event.trace_id, func.max(Event.ts, type_=Event.ts.type))
            .where(
                Event.project_id == project_id,
                Event.trace_id.in_(chunk),
                Event.shadow_of.is_(None),
                Event.feedback.is_not(None),
                received,
            )
            .group_by(Event.trace_id)
        )
        if before_rating:
            query = query.join(
                Feedback,
                (Feedback.project_id == Event.project_id) & (Feedback.trace_id == Event.trace_id),
            )
        found.update({trace_id: until for trace_id, until in session.execute(query).all()})
    return found


# --- Feedback -------------------------------------------------------------------------------


def record_feedback(
    session: Session, project_id: int, trace_id: str, value: FeedbackValue, comment: str | None
) -> int:
    """Latest feedback wins; returns how many stored events of the trace now carry it. A
    shadow answer shares its served request's trace but never reached the user, so it never
    takes the trace's feedback (nor does the ingest join). Once some of the trace's calls are
    rated, a rating again (a retry, a changed mind) goes to the calls up to the last of them,
    the rule ingest applies: a call made after the rating keeps its own feedback. The trace's
    carriers then hold the new value (`_place_carriers`), so it still counts once."""
    _lock_feedback(session, project_id, exclusive=True)
    score = FEEDBACK_SCORES[value]
    rated_until = _rated_until(session, project_id, {trace_id}).get(trace_id)
    before = session.execute(
        select(Feedback.value, Feedback.created_at).where(
            Feedback.project_id == project_id, Feedback.trace_id == trace_id
        )
    ).one_or_none()
    # The same rating sent again (a client's retry) is not a new rating: it keeps the time
    # that tells the calls the user saw (_rated_until) and dates the late-data check.
    rated_at = before.created_at if before is not None and before.value == score else utcnow()
    upsert(
        session,
        FEEDBACK_TABLE,
        [
            {
                "project_id": project_id,
                "trace_id": trace_id,
                "value": score,
                "comment": comment,
                "created_at": rated_at,
            }
        ],
        ["project_id", "trace_id"],
        ["value", "comment", "created_at"],
    )
    result = session.execute(
        update(Event)
        .where(
            Event.project_id == project_id,
            Event.trace_id == trace_id,
            Event.shadow_of.is_(None),
            true() if rated_until is None else Event.ts <= rated_until,
        )
        .values(feedback=score)
    )
    _place_carriers(session, project_id, {trace_id})
    session.commit()
    return max(int(getattr(result, "rowcount", 0) or 0), 0)


# --- Project settings -----------------------------------------------------------------------


def set_online_eval(
    session: Session, principal: Principal, online_eval: dict[str, Any]
) -> dict[str, Any]:
    """Checked by building every evaluator now, so a bad setting fails here, not on ingest."""
    try:
        build_online_evaluators(online_eval)
    except EvaluatorConfigError as exc:
        raise Unprocessable(
            f"online_eval.{exc.field}: {exc.problem}", field=f"online_eval.{exc.field}"
        ) from None
    return projects.set_project_setting(session, principal, "online_eval", online_eval)
