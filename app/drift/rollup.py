"""Daily drift signals: one UTC day's events rolled up per checkpoint x cohort, in SQL.

One scan of the day's rows. The events of [day, day + 1) are read once through the
(project_id, ts) index and grouped by their full cohort (checkpoint and the interned cohort,
`cohort_id`, whose dimensions `event_cohorts` then supplies) and, for labelled rows with a
probability, that probability:
every rate's numerator and denominator, the log moments of latency, tokens and (for
checkpoints with prices, joined in) cost, and the
calibration counts are computed in that one GROUP BY into a temporary table, which holds
one row per distinct cohort combination, not per event. The per-dimension rollup (the whole
population, each column dimension, each other cohort JSON key) then re-aggregates that small
table: PostgreSQL with GROUPING SETS and jsonb_each_text, SQLite with one GROUP BY per
dimension and json_each. Everything is additive (counts and sums), so regrouping is exact.
Rerunning a day deletes and rewrites its rows in one transaction, so late events are
counted and nothing is doubled.

Calibration (brier_score, ece) uses events carrying a probability and a 0/1 label
(spelled as a flag may be, any case: "1"/"1.0"/"true"/"t"/"yes"/"y"/"on" or their
negatives, `_POSITIVE_SPELLINGS`), over DEFAULT_BINS equal-mass
bins per cohort (rank-based, so ties are never split), whose per-bin sums
app/stats/calibration turns into the Brier decomposition and the debiased calibration error.
Both calibration rows keep those sums in extra["bins"] ([{"bin", "n", "sum_prob",
"sum_label", "sum_prob_sq", "sum_prob_label"}], filled bins only) so a day can be judged,
and a reliability diagram over any range of days drawn, from stored rows.

Latency, tokens and cost (signals.CONTINUOUS_METRICS) are summarised by the count, sum of log x
and sum of (log x)^2 per cohort; their p50/p95 rows are the quantiles of the log-normal
fitted to those moments (app/stats/continuous.lognormal_quantile_signal), which regroup
exactly, unlike order statistics. extra keeps {"sum_log", "sum_log_sq"} (what the judge
uses); as for the calibration rows, numerator = value x denominator (the count), so summing
rows gives a volume-weighted value."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, text
from sqlalchemy.orm import Session

from app.core.db import is_postgres, utcnow
from app.drift.signals import (
    COLUMN_DIMENSIONS,
    CONTINUOUS_METRICS,
    DAILY_RATE_SIGNALS,
    PRICED_METRICS,
    PRICES_JOIN,
    QUANTILES,
    RATE_SIGNALS,
    SignalRow,
    rate_counts,
    shown_from_log,
)
from app.models import Checkpoint, DailySignal
from app.models.base import UTCDateTime
from app.stats.calibration import (
    DEFAULT_BINS,
    BinStatistics,
    brier_decomposition,
    debiased_ece,
)
from app.stats.continuous import log_moments, lognormal_quantile

# A 0/1 label is spelled as any flag of an event is (pydantic's lax bool, which the REST
# flags and OTLP's text flags accept: psql and COPY print booleans as t/f), or as a number's
# text: ingest stores 1 as "1", and 1.0 (a pandas column of 0/1 floats) may arrive as "1.0".
_POSITIVE_SPELLINGS = ("1", "1.0", "true", "t", "yes", "y", "on")
_NEGATIVE_SPELLINGS = ("0", "0.0", "false", "f", "no", "n", "off")
_POSITIVE_LABELS = "(" + ", ".join(f"'{text}'" for text in _POSITIVE_SPELLINGS) + ")"
_KNOWN_LABELS = (
    "(" + ", ".join(f"'{text}'" for text in _POSITIVE_SPELLINGS + _NEGATIVE_SPELLINGS) + ")"
)
# Per-bin sums kept in the calibration rows' extra["bins"] (key in extra, column of the SQL):
# exactly what app/stats/calibration needs, so days can be pooled later by adding them.
_BIN_SUMS = (
    ("n", "n"),
    ("sum_prob", "sp"),
    ("sum_label", "sy"),
    ("sum_prob_sq", "spp"),
    ("sum_prob_label", "spy"),
)
_MAX_DIMENSION = 100
_MAX_VALUE = 200
_FINE = "drift_fine"

# Served traffic only: a shadow answer (shadow_of set) never reached a user.
DAY_FILTER = "e.project_id = :project_id AND e.ts >= :start AND e.ts < :end AND e.shadow_of IS NULL"


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


# What the fine scan takes from the cohort JSON of events stored without a `cohort_id`
# (before migration 0010): interned events take the same from their `event_cohorts` row.
_LEGACY_COHORT_COLUMNS = (*COLUMN_DIMENSIONS, "cohort")


def scan_aggregates(priced: bool, postgres: bool) -> str:
    """The additive sums the scan takes per group (the select list after the keys).

    `priced`: some checkpoint of the project has prices, so the scan joins PRICES_JOIN and
    sums the cost metric; otherwise the cost sums are constants (no events, no join, no
    per-event work), keeping the fine table's shape. The log moments of a continuous metric need
    ln x once per event: on PostgreSQL avg(ln x) and var_pop(ln x) share one transition
    state (count, sum and centred sum of squares), so ln is evaluated once, where SUM(ln x)
    beside SUM(ln x * ln x) evaluated it three times; _fine_columns turns them back into the
    sums (exact to ~1e-14). SQLite has no var_pop and takes the sums."""
    parts = ["COUNT(*) AS volume"]
    for name in RATE_SIGNALS:
        numerator, denominator = rate_counts(name, definitions=DAILY_RATE_SIGNALS)
        parts.append(f"{numerator} AS {name}_num")
        parts.append(f"{denominator} AS {name}_den")
    first, second = ("mean", "var") if postgres else ("s1", "s2")
    for metric, (expression, present) in CONTINUOUS_METRICS.items():
        if metric in PRICED_METRICS and not priced:
            none = "CAST(NULL AS DOUBLE PRECISION)"
            parts += [
                f"0 AS {metric}_n",
                f"{none} AS {metric}_{first}",
                f"{none} AS {metric}_{second}",
            ]
            continue
        log, where = f"ln({expression})", f"FILTER (WHERE {present})"
        parts.append(f"COUNT(*) {where} AS {metric}_n")
        if postgres:
            parts.append(f"avg({log}) {where} AS {metric}_mean")
            parts.append(f"var_pop({log}) {where} AS {metric}_var")
        else:
            parts.append(f"SUM({log}) {where} AS {metric}_s1")
            parts.append(f"SUM({log} * {log}) {where} AS {metric}_s2")
    return ",\n  ".join(parts)


def _fine_columns(postgres: bool) -> str:
    """The fine table's sums, from the scan's groups `g`: every column of _summed_columns,
    the log moments as sums (n·mean and n·(var + mean²) on PostgreSQL; scan_aggregates)."""
    columns = []
    for column in _summed_columns():
        metric, _, moment = column.rpartition("_")
        if postgres and moment == "s1":
            columns.append(f"g.{metric}_mean * g.{metric}_n AS {column}")
        elif postgres and moment == "s2":
            mean = f"g.{metric}_mean"
            columns.append(f"(g.{metric}_var + {mean} * {mean}) * g.{metric}_n AS {column}")
        else:
            columns.append(f"g.{column}")
    return ", ".join(columns)


def _fine_sql(legacy_rows: bool, priced: bool, postgres: bool) -> str:
    """The one scan: every additive sum per full cohort combination, probability and label.

    Events are grouped by their interned cohort (`cohort_id`, an integer: app/ingest/
    cohorts.py) and the few groups then take their cohort's dimensions from `event_cohorts`;
    grouping by the JSON itself hashed and compared it for every event, half of the scan.
    `legacy_rows`: the day holds events stored without a cohort id (before migration 0010),
    which are grouped by their columns and JSON, as before; the CASE is NULL for every
    interned event, so it splits no group of theirs, but it costs a fifth of the scan, so a
    day without such events (`_LEGACY_ROWS`) leaves it out. `priced`: see scan_aggregates.
    Grouping by the raw probability and label (not by the calibration predicates) keeps the
    label tests out of the per-event work: the small fine table applies them."""
    # Without legacy rows the columns are NULL of the column's type (the planner folds the
    # CASE into a constant, which costs the grouping nothing), so the fine table has one
    # shape either way.
    condition = "e.cohort_id IS NULL" if legacy_rows else "FALSE"
    legacy = {c: f"CASE WHEN {condition} THEN e.{c} END" for c in _LEGACY_COHORT_COLUMNS}
    keys = ", ".join(
        ["e.checkpoint_id", "e.cohort_id", *legacy.values(), "e.probability", "e.label"]
    )
    selected = ", ".join(
        ["e.checkpoint_id", "e.cohort_id"]
        + [f"{expression} AS {c}" for c, expression in legacy.items()]
        + ["e.probability", "e.label"]
    )
    cohort = ", ".join(f"COALESCE(c.{c}, g.{c}) AS {c}" for c in _LEGACY_COHORT_COLUMNS)
    return (
        f"WITH grouped AS (\nSELECT {selected},\n  {scan_aggregates(priced, postgres)}\n"
        f"FROM events e {PRICES_JOIN if priced else ''}\nWHERE {DAY_FILTER}\n"
        f"GROUP BY {keys}\n)\n"
        f"SELECT g.checkpoint_id, {cohort}, g.probability, g.label, {_fine_columns(postgres)}\n"
        "FROM grouped g LEFT JOIN event_cohorts c "
        "ON c.project_id = :project_id AND c.id = g.cohort_id"
    )


_LEGACY_ROWS = (
    "SELECT EXISTS (SELECT 1 FROM events e WHERE e.project_id = :project_id "
    "AND e.ts >= :start AND e.ts < :end AND e.cohort_id IS NULL)"
)
"""Answered by the partial index ix_events_project_ts_without_cohort, which interned events
never enter: one index probe, whatever the day's volume."""


def _summed_columns() -> list[str]:
    columns = ["volume"]
    for name in RATE_SIGNALS:
        columns += [f"{name}_num", f"{name}_den"]
    for metric in CONTINUOUS_METRICS:
        columns += [f"{metric}_n", f"{metric}_s1", f"{metric}_s2"]
    return columns


def _extra_dimensions_source(postgres: bool, alias: str = "e") -> tuple[str, str]:
    """FROM-clause expansion of the cohort JSON into (kv.key, value) rows, minus the keys
    that are columns already (they are grouped from the columns) and `all`, the whole
    population's name, which ingest refuses as a key (events stored before it did would
    otherwise collide with the population row and fail the day)."""
    excluded = ", ".join(f"'{d}'" for d in (*COLUMN_DIMENSIONS, "all"))
    if postgres:
        join = (
            f"CROSS JOIN LATERAL jsonb_each_text({alias}.cohort - ARRAY[{excluded}]::text[]) AS kv"
        )
        return join, "kv.value"
    join = f"JOIN json_each({alias}.cohort) AS kv ON kv.key NOT IN ({excluded})"
    return join, "CAST(kv.value AS TEXT)"


def _per_cohort_sql(postgres: bool, aggregates: str, where: str, also_by: str = "") -> str:
    """`aggregates` over the fine rows matching `where`, per checkpoint x cohort (x
    `also_by`). The fine table is small (one row per cohort combination), so this costs
    little next to the scan."""
    key = f", {also_by}" if also_by else ""
    join, kv_value = _extra_dimensions_source(postgres)
    extra = (
        f"SELECT e.checkpoint_id, kv.key AS dimension, {kv_value} AS value{key},\n  {aggregates}\n"
        f"FROM {_FINE} e {join}\nWHERE {where} AND kv.value IS NOT NULL\n"
        f"GROUP BY e.checkpoint_id, kv.key, kv.value{key}"
    )
    if postgres:
        dimension = " ".join(f"WHEN GROUPING(e.{d}) = 0 THEN '{d}'" for d in COLUMN_DIMENSIONS)
        value = " ".join(f"WHEN GROUPING(e.{d}) = 0 THEN e.{d}" for d in COLUMN_DIMENSIONS)
        sets = ", ".join(f"(e.{d})" for d in COLUMN_DIMENSIONS)
        columns = (
            f"SELECT e.checkpoint_id, CASE {dimension} ELSE 'all' END AS dimension,\n"
            f"  CASE {value} ELSE 'all' END AS value{key},\n  {aggregates}\n"
            f"FROM {_FINE} e WHERE {where}\n"
            f"GROUP BY e.checkpoint_id{key}, GROUPING SETS ((), {sets})"
        )
        return f"{columns}\nUNION ALL\n{extra}"
    selects = [
        f"SELECT e.checkpoint_id, 'all' AS dimension, 'all' AS value{key},\n  {aggregates}\n"
        f"FROM {_FINE} e WHERE {where} GROUP BY e.checkpoint_id{key}"
    ]
    for d in COLUMN_DIMENSIONS:
        selects.append(
            f"SELECT e.checkpoint_id, '{d}' AS dimension, e.{d} AS value{key},\n  {aggregates}\n"
            f"FROM {_FINE} e WHERE {where} GROUP BY e.checkpoint_id, e.{d}{key}"
        )
    return "\nUNION ALL\n".join([*selects, extra])


def _rollup_sql(postgres: bool) -> str:
    aggregates = ",\n  ".join(f"SUM(e.{c}) AS {c}" for c in _summed_columns())
    return _per_cohort_sql(postgres, aggregates, "TRUE")


def _calibration_sql(postgres: bool) -> str:
    """Per-bin sums (count, p, y, p^2, p*y) of equal-mass bins per checkpoint x cohort.

    The fine rows are already counted per distinct probability (confidences are heavily
    tied), so the window that ranks them sorts distinct values, not events: a row's rank is
    1 + the rows with a smaller probability, i.e. the running count before its value."""
    per_probability = _per_cohort_sql(
        postgres,
        # BIGINT again: PostgreSQL sums a BIGINT into a NUMERIC, and the bin number below
        # must be an integer division.
        "CAST(SUM(e.volume) AS BIGINT) AS n, CAST(SUM(CASE WHEN lower(e.label) IN "
        f"{_POSITIVE_LABELS} THEN e.volume ELSE 0 END) AS BIGINT) AS sy",
        f"e.probability IS NOT NULL AND lower(e.label) IN {_KNOWN_LABELS}",
        also_by="e.probability",
    )
    return f"""
WITH per_probability AS (
{per_probability}
), binned AS (
  SELECT checkpoint_id, dimension, value, probability AS p, n, sy,
    {DEFAULT_BINS} * (CAST(SUM(n) OVER (cohort ORDER BY probability
      ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS BIGINT) - n)
      / CAST(SUM(n) OVER (cohort) AS BIGINT) AS bin
  FROM per_probability
  WINDOW cohort AS (PARTITION BY checkpoint_id, dimension, value)
)
SELECT checkpoint_id, dimension, value, bin, SUM(n) AS n, SUM(n * p) AS sp, SUM(sy) AS sy,
  SUM(n * p * p) AS spp, SUM(p * sy) AS spy
FROM binned GROUP BY checkpoint_id, dimension, value, bin
"""


def _day_params(project_id: int, day: date) -> dict[str, Any]:
    start, end = day_bounds(day)
    return {"project_id": project_id, "start": start, "end": end}


def _typed(sql: str) -> Any:
    return text(sql).bindparams(
        bindparam("start", type_=UTCDateTime()), bindparam("end", type_=UTCDateTime())
    )


def _storable(dimension: str, value: str | None) -> bool:
    return value is not None and len(dimension) <= _MAX_DIMENSION and len(value) <= _MAX_VALUE


def compute_day(session: Session, project_id: int, day: date) -> list[SignalRow]:
    """Every signal row of one day, computed by the database (only a temporary table is
    written, and dropped before returning)."""
    postgres = is_postgres(session)
    if postgres:
        # The group keys inflate the planner's group estimate (~100x with the JSON key,
        # ~15x without), which makes it sort the day's rows to disk under the default
        # work_mem and compile with JIT; the real group count is small, so a hash aggregate
        # in memory is right.
        session.execute(text("SET LOCAL jit = off"))
        session.execute(text("SET LOCAL work_mem = '64MB'"))
    checkpoints = session.execute(
        select(
            Checkpoint.id,
            Checkpoint.model_id,
            Checkpoint.usd_per_million_input_tokens,
            Checkpoint.usd_per_million_output_tokens,
        ).where(Checkpoint.project_id == project_id)
    ).all()
    model_of = {checkpoint_id: model_id for checkpoint_id, model_id, _, _ in checkpoints}
    prices_of = {c: [i, o] for c, _, i, o in checkpoints if i is not None and o is not None}
    session.execute(text(f"DROP TABLE IF EXISTS {_FINE}"))
    legacy_rows = bool(session.scalar(_typed(_LEGACY_ROWS), _day_params(project_id, day)))
    scan = _fine_sql(legacy_rows, priced=bool(prices_of), postgres=postgres)
    session.execute(
        _typed(f"CREATE TEMPORARY TABLE {_FINE} AS {scan}"), _day_params(project_id, day)
    )
    # Not in a `finally`: after an error PostgreSQL's transaction is aborted (its rollback
    # takes the table along) and a DROP would only mask the error; any leftover (SQLite may
    # have committed the CREATE) is dropped at the start of the next call.
    rows: list[SignalRow] = []
    for group in session.execute(text(_rollup_sql(postgres))).mappings():
        dimension, value = group["dimension"], group["value"]
        if _storable(dimension, value):
            checkpoint_id = group["checkpoint_id"]
            rows += _cohort_rows(model_of[checkpoint_id], prices_of.get(checkpoint_id), group)
    rows += _calibration_rows(session, postgres, model_of)
    session.execute(text(f"DROP TABLE {_FINE}"))
    return rows


def _cohort_rows(model_id: int, prices: list[float] | None, group: Any) -> list[SignalRow]:
    """The group's signal rows. The cost rows keep the `prices` they were computed with in
    extra["prices"] ([input, output] USD per million tokens), which a reference frozen from
    them records (references.summarize), so a later price change can be told from a shift."""
    checkpoint_id, dimension, value = group["checkpoint_id"], group["dimension"], group["value"]
    rows: list[SignalRow] = []
    for name in RATE_SIGNALS:
        denominator = int(group[f"{name}_den"] or 0)
        if denominator == 0:
            continue
        numerator = int(group[f"{name}_num"] or 0)
        rows.append(
            SignalRow(
                model_id,
                checkpoint_id,
                name,
                dimension,
                value,
                numerator,
                denominator,
                numerator / denominator,
                {"events": int(group["volume"])},
            )
        )
    for metric in CONTINUOUS_METRICS:
        count = int(group[f"{metric}_n"] or 0)
        if count < 2:
            continue
        s1, s2 = float(group[f"{metric}_s1"]), float(group[f"{metric}_s2"])
        mean, var = log_moments(count, s1, s2)
        for q in QUANTILES:
            signal = f"{metric}_{q}"
            shown = shown_from_log(signal, float(lognormal_quantile(q, mean, var)))
            extra: dict[str, Any] = {"sum_log": s1, "sum_log_sq": s2}
            if metric in PRICED_METRICS:
                extra["prices"] = prices
            rows.append(
                SignalRow(
                    model_id,
                    checkpoint_id,
                    signal,
                    dimension,
                    value,
                    shown * count,
                    count,
                    shown,
                    extra,
                )
            )
    return rows


def _calibration_rows(
    session: Session, postgres: bool, model_of: dict[int, int]
) -> list[SignalRow]:
    bins: dict[tuple[int, str, str], list[Any]] = {}
    for row in session.execute(text(_calibration_sql(postgres))).all():
        if _storable(row.dimension, row.value):
            bins.setdefault((row.checkpoint_id, row.dimension, row.value), []).append(row)
    rows: list[SignalRow] = []
    for (checkpoint_id, dimension, value), groups in bins.items():
        groups.sort(key=lambda g: int(g.bin))
        sums = {name: [float(getattr(g, column)) for g in groups] for name, column in _BIN_SUMS}
        stats = BinStatistics.from_sums(*sums.values())
        parts = brier_decomposition(stats)
        ece = float(
            debiased_ece(sums["n"], sums["sum_prob"], sums["sum_label"], sums["sum_prob_sq"])
        )
        total = round(stats.total)
        stored_bins = [
            {"bin": int(g.bin), **{name: sums[name][i] for name in sums}}
            for i, g in enumerate(groups)
        ]
        decomposition = {
            "reliability": parts.reliability,
            "resolution": parts.resolution,
            "uncertainty": parts.uncertainty,
            "within_bin_variance": parts.within_bin_variance,
            "within_bin_covariance": parts.within_bin_covariance,
            "bins": stored_bins,
        }
        model_id = model_of[checkpoint_id]
        rows.append(
            SignalRow(
                model_id,
                checkpoint_id,
                "brier_score",
                dimension,
                value,
                parts.brier * total,
                total,
                parts.brier,
                decomposition,
            )
        )
        rows.append(
            SignalRow(
                model_id,
                checkpoint_id,
                "ece",
                dimension,
                value,
                ece * total,
                total,
                ece,
                {"filled_bins": len(groups), "bins": stored_bins},
            )
        )
    return rows


def sample_trace_ids(
    session: Session,
    project_id: int,
    day: date,
    checkpoint_id: int,
    signal: str,
    dimension: str,
    value: str,
    limit: int = 5,
) -> list[str]:
    """A few trace ids of the day's events that count against the signal in that cohort."""
    metric = signal.rsplit("_", 1)[0]
    if signal in DAILY_RATE_SIGNALS:  # as the scan counted it: a rated trace on its carrier
        condition = DAILY_RATE_SIGNALS[signal][0]
    elif metric in CONTINUOUS_METRICS:
        condition = CONTINUOUS_METRICS[metric][1]
    else:
        condition = "e.probability IS NOT NULL"
    join = PRICES_JOIN if metric in PRICED_METRICS else ""
    cohort = "TRUE"
    if dimension in COLUMN_DIMENSIONS:
        cohort = f"e.{dimension} = :value"
    elif dimension != "all":
        cohort_join, kv_value = _extra_dimensions_source(is_postgres(session))
        join = f"{join} {cohort_join}"
        cohort = f"kv.key = :dimension AND {kv_value} = :value"
    sql = (
        f"SELECT DISTINCT e.trace_id FROM events e {join} WHERE {DAY_FILTER} "
        f"AND e.checkpoint_id = :checkpoint_id AND ({condition}) AND {cohort} "
        "ORDER BY e.trace_id LIMIT :limit"
    )
    params = {
        **_day_params(project_id, day),
        "checkpoint_id": checkpoint_id,
        "dimension": dimension,
        "value": value,
        "limit": limit,
    }
    return list(session.scalars(_typed(sql), params).all())


def stored_day(session: Session, project_id: int, day: date) -> list[SignalRow]:
    """The day's rollup as stored: what a day keeps once retention has removed its events."""
    return [
        SignalRow(
            r.model_id,
            r.checkpoint_id,
            r.signal,
            r.dimension,
            r.value,
            r.numerator,
            r.denominator,
            r.rate,
            r.extra,
        )
        for r in session.scalars(
            select(DailySignal)
            .where(DailySignal.project_id == project_id, DailySignal.day == day)
            .order_by(DailySignal.id)
        )
    ]


def replace_day(
    session: Session,
    project_id: int,
    day: date,
    rows: Sequence[SignalRow],
    computed_at: datetime | None = None,
) -> None:
    """The day's rows become exactly `rows` (in the caller's transaction). `computed_at`: when
    the rollup began reading the day (default now), which the late-data check compares with
    the events' `received_at` (app/drift/job.late_data_since): stamped after the read, an
    event committed during a long scan was in neither."""
    session.execute(
        delete(DailySignal).where(DailySignal.project_id == project_id, DailySignal.day == day)
    )
    if not rows:
        return
    computed_at = computed_at or utcnow()
    session.execute(
        insert(DailySignal),
        [
            {
                "project_id": project_id,
                "model_id": r.model_id,
                "checkpoint_id": r.checkpoint_id,
                "day": day,
                "signal": r.signal,
                "dimension": r.dimension,
                "value": r.value,
                "numerator": r.numerator,
                "denominator": r.denominator,
                "rate": r.rate,
                "extra": r.extra,
                "computed_at": computed_at,
            }
            for r in rows
        ],
    )
