"""Typed reads of canaries, and the counts a canary's comparisons rest on.

The counts are GROUP BY in the database over the canary's window only, through the
(checkpoint_id, ts) index: one scan of the two checkpoints' served events for every per-call
signal x cohort at once (COUNT ... FILTER), one of their rated events ranked within each trace
(a trace's rating counts once, on the arm of its last rated call), and one join of the
candidate's shadow answers with the champion's served events of the same traces. Rows come
back per arm and time bucket, never per event, so an evaluation's work is bounded by the
window (at most `max_days`), not by the events' history."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from app.canaries.plan import ALL, Counts, MixCounts, Plan
from app.canaries.schemas import BegunBeforeOut
from app.core.db import hour_bucket_sql, is_postgres, json_text_equals_sql, text_with_times
from app.drift.signals import COLUMN_DIMENSIONS, PER_TRACE_SIGNALS, RATE_SIGNALS, rate_counts
from app.models import Canary, Event

_WINDOW = "e.project_id = :project_id AND e.ts >= :start AND e.ts < :end"
# Only what had been received by a decision: a decided canary's history shows what it saw.
_RECEIVED = " AND e.received_at <= :received_by"
# Both arms' served calls from the candidate's first hour (the served window); `_served`
# keeps those of traces begun there (see `load_counts`): neither arm served the trace in
# the SESSION_LOOKBACK before.
_SERVED_CALLS = (
    f"{_WINDOW} AND e.checkpoint_id IN (:candidate, :champion) "
    "AND e.shadow_of IS NULL AND e.ts >= :served_from"
)


def _begun_before(received: bool) -> str:
    """The traces either arm served in the SESSION_LOOKBACK before the served window, of the
    calls received by `:received_by` when `received`."""
    seen = " AND b.received_at <= :received_by" if received else ""
    return (
        "(SELECT b.trace_id FROM events b WHERE b.project_id = :project_id "
        "AND b.checkpoint_id IN (:candidate, :champion) AND b.shadow_of IS NULL "
        f"AND b.ts >= :session_from AND b.ts < :served_from{seen})"
    )


def _served(received: bool) -> str:
    """The served comparison's events, of those received by `:received_by` when `received`:
    the cut applies to the traces begun before too, or a call received after a decision,
    dated in the day before its window, would leave out of its chart a trace it counted."""
    seen = _RECEIVED if received else ""
    return f"{_SERVED_CALLS}{seen} AND e.trace_id NOT IN {_begun_before(received)}"


SESSION_LOOKBACK = timedelta(days=1)
"""How far before the served window a trace's served call makes it a session begun before
the window: long enough for any conversation or agent run, short enough that the probe
reads one day of the two checkpoints' calls at most."""
# What the arm, the bucket, the per-trace signals (feedback) and the cohorts read of a trace's
# last rated call.
_RATED_COLUMNS = ", ".join(
    f"e.{column}" for column in ("checkpoint_id", "ts", "feedback", *COLUMN_DIMENSIONS, "cohort")
)
_ARM = "CASE WHEN e.checkpoint_id = :candidate THEN 0 ELSE 1 END"


def canaries_of_model(session: Session, project_id: int, model_id: int) -> Sequence[Canary]:
    """Newest first: the model page lists them."""
    return session.scalars(
        select(Canary)
        .where(Canary.project_id == project_id, Canary.model_id == model_id)
        .order_by(Canary.id.desc())
    ).all()


def first_answer(
    session: Session,
    canary: Canary,
    plan: Plan,
    end: datetime,
    shadow: bool | None,
    received_by: datetime | None = None,
) -> datetime | None:
    """When the candidate first answered in the canary's window (in its scope, if it has
    one), if it did: served answers (`shadow` False), shadow answers (True) or either (None);
    of the events received by `received_by`, when given. One probe of the
    (checkpoint_id, ts) index."""
    statement = select(func.min(Event.ts)).where(
        Event.project_id == canary.project_id,
        Event.checkpoint_id == canary.checkpoint_id,
        Event.ts >= canary.started_at,
        Event.ts < end,
    )
    if plan.scope is not None:
        # A shadow answer carries its own cohort, as ingest stored it.
        condition, params = _cohort_sql(session, "events", *plan.scope, "scope")
        statement = statement.where(text(condition).bindparams(**params))
    if received_by is not None:
        statement = statement.where(Event.received_at <= received_by)
    if shadow is not None:
        statement = statement.where(
            Event.shadow_of.is_not(None) if shadow else Event.shadow_of.is_(None)
        )
    return session.scalar(statement)


def candidate_outside_scope(
    session: Session, canary: Canary, plan: Plan, end: datetime
) -> int | None:
    """The candidate's served calls in the window outside its scope (a call without the
    scope's dimension is outside), None without a scope: every comparison leaves them out,
    so the evidence says how many a scope's comparison did not see. One range of the
    (checkpoint_id, ts) index."""
    if plan.scope is None:
        return None
    condition, params = _cohort_sql(session, "events", *plan.scope, "scope")
    outside = text(f"(CASE WHEN {condition} THEN 0 ELSE 1 END) = 1").bindparams(**params)
    statement = select(func.count()).where(
        Event.project_id == canary.project_id,
        Event.checkpoint_id == canary.checkpoint_id,
        Event.ts >= canary.started_at,
        Event.ts < end,
        Event.shadow_of.is_(None),
        outside,
    )
    return int(session.scalar(statement) or 0)


def begun_before(session: Session, canary: Canary, plan: Plan, end: datetime) -> BegunBeforeOut:
    """Both arms' served calls in the served window (in the scope, if any), and those of
    them, and their traces, that `_served` leaves out as begun before the window. Counted
    so that the evidence says how much the comparison did not see: a client reusing a trace
    id across sessions (one per user or conversation) leaves out almost everything, and the
    canary would otherwise only say that nothing was measured."""
    conditions, cohort_params = _cohort_conditions(session, plan)
    params = {**_window_params(session, canary, plan, end, None), **cohort_params}
    sql = f"""
SELECT e.arm, COUNT(*) AS calls, SUM(e.begun) AS left_calls,
  COUNT(DISTINCT CASE WHEN e.begun = 1 THEN e.trace_id END) AS left_traces
FROM (
  SELECT {_ARM} AS arm, e.trace_id,
    CASE WHEN e.trace_id IN {_begun_before(False)} THEN 1 ELSE 0 END AS begun
  FROM events e
  WHERE {_SERVED_CALLS} AND ({conditions[0]})
) e
GROUP BY 1
"""
    statement = text_with_times(sql, "start", "end", "served_from", "session_from")
    counts = {0: (0, 0, 0), 1: (0, 0, 0)}
    for arm, calls, left_calls, left_traces in session.execute(statement, params):
        counts[int(arm)] = (int(calls), int(left_calls or 0), int(left_traces or 0))
    return BegunBeforeOut(
        served_calls=counts[0][0] + counts[1][0],
        candidate_calls=counts[0][1],
        candidate_traces=counts[0][2],
        champion_calls=counts[1][1],
        champion_traces=counts[1][2],
    )


def candidate_first_seen(
    session: Session, canary: Canary, plan: Plan, end: datetime
) -> datetime | None:
    """When the candidate first answered in a way the plan compares: its traffic starts
    there, however long before it the canary was started."""
    if plan.served and plan.paired_signals:
        return first_answer(session, canary, plan, end, shadow=None)
    return first_answer(session, canary, plan, end, shadow=not plan.served)


def load_counts(
    session: Session,
    canary: Canary,
    plan: Plan,
    end: datetime,
    bucket_hours: float,
    received_by: datetime | None = None,
) -> Counts:
    """The canary's counts from `started_at` to `end`, in buckets of `bucket_hours` (pass the
    window's length, or more, for totals), of the events received by `received_by` when
    given (a decided canary's: events that arrived late, timestamped inside its window, were
    not part of its decision). Runs in the caller's transaction.

    The served arms both start in the hour of the candidate's first served call: before it
    only the champion served, and hours the candidate never saw (a canary started before its
    traffic was turned on) would compare it with another time of day, not with the champion.
    They count the traces begun there only: a sticky session begun before was routed to the
    champion and stays there, so the champion's arm alone held the later calls of sessions
    already under way, and where rates change along a session (a conversation's first turns
    refused more often than its later ones) an equal candidate read worse: simulated with
    sessions of 12 calls over 6 hours, rolled back in 84 of 200 canaries (docs/statistics.md
    §12.1). Under per-call routing those calls were coin tosses, and leaving them out costs
    only their number."""
    hours = max((end - canary.started_at).total_seconds() / 3600.0, 0.0)
    buckets = max(1, math.ceil(hours / bucket_hours))
    if is_postgres(session):
        # Hundreds of aggregates over a large range tempt the planner into JIT compilation,
        # which costs seconds and saves nothing here.
        session.execute(text("SET LOCAL jit = off"))
    conditions, cohort_params = _cohort_conditions(session, plan)
    params = {
        **_window_params(session, canary, plan, end, received_by),
        "bucket_hours": bucket_hours,
        **cohort_params,
    }
    times: tuple[str, ...] = ("start", "end")
    if received_by is not None:
        params["received_by"] = received_by
        times = (*times, "received_by")
    # Totals (one bucket) need no per-event arithmetic.
    bucket = hour_bucket_sql(session, "e.ts", "start", "bucket_hours") if buckets > 1 else "0"
    shape = (buckets, len(plan.cohorts))
    events = np.zeros((2, *shape, len(plan.signals)), dtype=np.int64)
    with_signal = np.zeros_like(events)
    if plan.served:
        per_call = [s for s, signal in enumerate(plan.signals) if signal not in PER_TRACE_SIGNALS]
        per_trace = [s for s, signal in enumerate(plan.signals) if signal in PER_TRACE_SIGNALS]
        received = received_by is not None
        statements = [
            (_rated_traces_sql(plan, s, conditions, bucket, received), [s]) for s in per_trace
        ]
        if per_call:
            statements.append((_served_sql(plan, per_call, conditions, bucket, received), per_call))
        for sql, signals in statements:
            statement = text_with_times(sql, *times, "served_from", "session_from")
            for row in session.execute(statement, params).mappings():
                arm, at = int(row["arm"]), min(max(int(row["bucket"]), 0), buckets - 1)
                for k in range(len(plan.cohorts)):
                    for s in signals:
                        events[arm, at, k, s] += int(row[f"d_{k}_{s}"])
                        with_signal[arm, at, k, s] += int(row[f"n_{k}_{s}"])
    pairs = np.zeros((*shape, len(plan.paired_signals)), dtype=np.int64)
    worse, better, one_sided = np.zeros_like(pairs), np.zeros_like(pairs), np.zeros_like(pairs)
    left_out = np.zeros(buckets, dtype=np.int64)
    if plan.paired_signals:
        sql = _paired_sql(plan, conditions, bucket, received_by is not None)
        statement = text_with_times(sql, *times)
        for row in session.execute(statement, params).mappings():
            at = min(max(int(row["bucket"]), 0), buckets - 1)
            left_out[at] += int(row["left_out"] or 0)
            for k in range(len(plan.cohorts)):
                for p in range(len(plan.paired_signals)):
                    pairs[at, k, p] += int(row[f"p_{k}_{p}"] or 0)
                    worse[at, k, p] += int(row[f"w_{k}_{p}"] or 0)
                    better[at, k, p] += int(row[f"b_{k}_{p}"] or 0)
                    one_sided[at, k, p] += int(row[f"s_{k}_{p}"] or 0)
    return Counts(events, with_signal, pairs, worse, better, one_sided, left_out, bucket_hours)


def load_mix(session: Session, canary: Canary, plan: Plan, end: datetime) -> MixCounts:
    """The served comparison's traces (both arms, from the hour of the candidate's first
    served call to `end`, in the scope when the canary has one: a canary routed on a second
    dimension within its scope is as confounded as one routed to a segment without a scope)
    per arm and value of every cohort dimension they carry: the window's
    calls ranked within each trace, and one GROUP BY of the first ones per distinct cohort,
    expanded here into its dimensions. Runs in the caller's transaction.

    A trace counts once, on the arm and in the cohort of its first served call in the window,
    and only a trace begun in the window (`_served`): a sticky session begun before it was
    routed before the candidate served, so it stays on the champion's arm, and long sessions
    are the likeliest to straddle the start; where session length depends on the cohort,
    those traces flagged fair canaries (docs/statistics.md §12.9).
    Routing and cohort are decided per trace (or session), so its calls share both: counted
    per call, m calls a trace multiply G by about m under fair routing, and fair canaries are
    flagged. Counted on the arm of its first call, the candidate's traces are a random sample
    of all traces whatever the routing unit: under per-trace routing that arm is the trace's,
    under per-call routing a coin toss independent of the cohort. Not every arm the trace
    reached: under per-call routing long traces land on both, and the arms' trace mixes then
    lean to the cohorts whose traces are long (docs/statistics.md §12.9)."""
    conditions, cohort_params = _cohort_conditions(session, plan)
    params = {**_window_params(session, canary, plan, end, None), **cohort_params}
    sql = f"""
SELECT e.arm, e.cohort, COUNT(*) AS traces
FROM (
  SELECT {_ARM} AS arm, e.cohort AS cohort,
    ROW_NUMBER() OVER (PARTITION BY e.trace_id ORDER BY e.ts, e.id) AS from_first
  FROM events e
  WHERE {_served(False)} AND ({conditions[0]})
) e
WHERE e.from_first = 1
GROUP BY 1, 2
"""
    statement = text_with_times(sql, "start", "end", "served_from", "session_from")
    rows: list[tuple[int, dict[str, str], int]] = []
    for arm, cohort, traces in session.execute(statement, params):
        stored = json.loads(cohort) if isinstance(cohort, str) else cohort
        rows.append((int(arm), stored or {}, int(traces)))
    dimensions = sorted({dimension for _arm, cohort, _traces in rows for dimension in cohort})
    mix: MixCounts = {dimension: ({}, {}) for dimension in dimensions}
    for arm, cohort, traces in rows:
        for dimension in dimensions:
            counts = mix[dimension][arm]
            value = str(cohort.get(dimension, ""))
            counts[value] = counts.get(value, 0) + traces
    return mix


def _window_params(
    session: Session, canary: Canary, plan: Plan, end: datetime, received_by: datetime | None
) -> dict[str, object]:
    """The bound parameters of `_WINDOW` and `_served`: the arms and the served window."""
    served_from = _served_from(session, canary, plan, end, received_by)
    return {
        "project_id": canary.project_id,
        "candidate": canary.checkpoint_id,
        "champion": canary.champion_id,
        "start": canary.started_at,
        "end": end,
        "served_from": served_from,
        "session_from": served_from - SESSION_LOOKBACK,
    }


def _served_from(
    session: Session, canary: Canary, plan: Plan, end: datetime, received_by: datetime | None
) -> datetime:
    """The start of the window's hour (counted from `started_at`) in which the candidate
    first served a call; `started_at` while it served none (the champion's calls still
    measure the signals, so a signal only the served comparison judges is not set aside)."""
    first = first_answer(session, canary, plan, end, shadow=False, received_by=received_by)
    if first is None:
        return canary.started_at
    whole_hours = (first - canary.started_at) // timedelta(hours=1)
    return canary.started_at + timedelta(hours=whole_hours)


def _cohort_conditions(session: Session, plan: Plan) -> tuple[list[str], dict[str, str]]:
    """SQL per guarded cohort over event row `e`, with its bound parameters. With a scope,
    every cohort is its intersection with the scope, and the whole population is the scope:
    both arms of every comparison count the scope's events alone."""
    scope, params = (
        ("1 = 1", {}) if plan.scope is None else _cohort_sql(session, "e", *plan.scope, "scope")
    )
    conditions: list[str] = []
    for k, (dimension, value) in enumerate(plan.cohorts):
        if (dimension, value) == ALL:
            conditions.append(scope)
            continue
        condition, cohort_params = _cohort_sql(session, "e", dimension, value, f"c{k}")
        params |= cohort_params
        conditions.append(condition if plan.scope is None else f"({scope}) AND ({condition})")
    return conditions, params


def _cohort_sql(
    session: Session, alias: str, dimension: str, value: str, name: str
) -> tuple[str, dict[str, str]]:
    """SQL: event row `alias` is in the cohort dimension=value; parameters named after `name`."""
    if dimension in COLUMN_DIMENSIONS:
        return f"{alias}.{dimension} = :{name}v", {f"{name}v": value}
    condition = json_text_equals_sql(session, f"{alias}.cohort", f"{name}d", f"{name}v")
    return condition, {f"{name}d": dimension, f"{name}v": value}


def _served_sql(
    plan: Plan, signals: list[int], conditions: list[str], bucket: str, received: bool
) -> str:
    """Per arm and bucket: events judged on each of `signals` (indices into plan.signals,
    each counted per call) and those counting against it."""
    return f"""
SELECT {_ARM} AS arm,
  {bucket} AS bucket,
  {_aggregates(plan, signals, conditions)}
FROM events e
WHERE {_served(received)}
GROUP BY 1, 2
"""


def _rated_traces_sql(
    plan: Plan, signal: int, conditions: list[str], bucket: str, received: bool
) -> str:
    """Per arm and bucket: traces judged on a per-trace signal (feedback: one user's rating of
    the trace) and those counting against it. A trace is one observation, counted once, on
    the arm, in the bucket and cohorts of its last call judged on the signal in the window:
    the answer the user rated after. A conversation whose calls both checkpoints served
    (per-call routing) would otherwise weigh on both arms (docs/statistics.md §12.1)."""
    _numerator, denominator = RATE_SIGNALS[plan.signals[signal]]
    return f"""
SELECT {_ARM} AS arm,
  {bucket} AS bucket,
  {_aggregates(plan, [signal], conditions)}
FROM (
  SELECT {_RATED_COLUMNS},
    ROW_NUMBER() OVER (PARTITION BY e.trace_id ORDER BY e.ts DESC, e.id DESC) AS from_last
  FROM events e
  WHERE {_served(received)} AND ({denominator})
) e
WHERE e.from_last = 1
GROUP BY 1, 2
"""


def _aggregates(plan: Plan, signals: list[int], conditions: list[str]) -> str:
    """Each cohort x signal's denominator `d_k_s` and numerator `n_k_s`, counted per row."""
    aggregates = []
    for k, cohort in enumerate(conditions):
        for s in signals:
            numerator, denominator = rate_counts(plan.signals[s], within=cohort)
            aggregates.append(f"{denominator} AS d_{k}_{s}")
            aggregates.append(f"{numerator} AS n_{k}_{s}")
    return ",\n  ".join(aggregates)


def _outcome(signal: str) -> str:
    """1 when the event counts against the signal, 0 when judged and clean, NULL when the
    signal does not apply to it."""
    numerator, denominator = RATE_SIGNALS[signal]
    return f"CASE WHEN {denominator} THEN CASE WHEN {numerator} THEN 1 ELSE 0 END END"


def _paired_sql(plan: Plan, conditions: list[str], bucket: str, received: bool) -> str:
    """Per bucket of the shadow answer: pairs judged on each paired signal, those where only
    one side counted against it, requests only one side was judged on, and the traces left
    out (`left_out`). A pair is one call a side: the candidate's shadow answer to a served
    trace against the champion's served call of it, both in the canary's window (a trace id
    the client reuses at another time is another request). The cohort is the served call's.

    A shadow answer names the trace it answered (`shadow_of`), not the call: when the
    champion served several calls of the trace in the window (an agent's steps), or the
    candidate answered several, which answers which is unknown, and the trace against the
    trace would judge one replayed call against all the served ones (a step the shadow never
    saw, refused, read as "only the champion refused"). Such traces are left out, and
    counted."""
    outcomes = [(p, _outcome(signal)) for p, signal in enumerate(plan.paired_signals)]
    # One call a side in every pair: MAX is that call's value.
    shadow_columns = ", ".join(f"MAX({sql}) AS o_{p}" for p, sql in outcomes)
    served_columns = ", ".join(
        [f"MAX({sql}) AS o_{p}" for p, sql in outcomes]
        + [
            f"MAX(CASE WHEN {cohort} THEN 1 ELSE 0 END) AS c_{k}"
            for k, cohort in enumerate(conditions)
        ]
    )
    sums = []
    for k in range(len(conditions)):
        paired = f"sh.calls = 1 AND sv.calls = 1 AND sv.c_{k} = 1"
        for p, _sql in outcomes:
            both = f"{paired} AND sh.o_{p} IS NOT NULL AND sv.o_{p} IS NOT NULL"
            sums.append(f"SUM(CASE WHEN {both} THEN 1 ELSE 0 END) AS p_{k}_{p}")
            worse = f"{paired} AND sh.o_{p} = 1 AND sv.o_{p} = 0"
            sums.append(f"SUM(CASE WHEN {worse} THEN 1 ELSE 0 END) AS w_{k}_{p}")
            better = f"{paired} AND sh.o_{p} = 0 AND sv.o_{p} = 1"
            sums.append(f"SUM(CASE WHEN {better} THEN 1 ELSE 0 END) AS b_{k}_{p}")
            one_side = f"{paired} AND (sh.o_{p} IS NULL) <> (sv.o_{p} IS NULL)"
            sums.append(f"SUM(CASE WHEN {one_side} THEN 1 ELSE 0 END) AS s_{k}_{p}")
    columns = ",\n  ".join(sums)
    seen = _RECEIVED if received else ""
    return f"""
WITH shadow AS (
  SELECT e.shadow_of AS trace_id, MIN({bucket}) AS bucket, COUNT(*) AS calls, {shadow_columns}
  FROM events e
  WHERE {_WINDOW}{seen} AND e.checkpoint_id = :candidate AND e.shadow_of IS NOT NULL
  GROUP BY e.shadow_of
), served AS (
  SELECT e.trace_id, COUNT(*) AS calls, {served_columns}
  FROM events e
  WHERE {_WINDOW}{seen} AND e.checkpoint_id = :champion AND e.shadow_of IS NULL
    AND e.trace_id IN (SELECT trace_id FROM shadow)
  GROUP BY e.trace_id
)
SELECT sh.bucket AS bucket,
  SUM(CASE WHEN sh.calls > 1 OR sv.calls > 1 THEN 1 ELSE 0 END) AS left_out,
  {columns}
FROM shadow sh JOIN served sv ON sv.trace_id = sh.trace_id
GROUP BY sh.bucket
"""
