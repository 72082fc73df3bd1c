"""Daily drift signals: one UTC day's events rolled up per checkpoint x cohort, in SQL.

A day's cost follows that day's events: every query reads events through the
(project_id, ts) index over [day, day + 1). PostgreSQL groups the three column dimensions in
one scan with GROUPING SETS and expands the other cohort keys with jsonb_each_text; SQLite
unions one GROUP BY per dimension. Rerunning a day deletes and rewrites its rows in one
transaction, so late events are counted and nothing is doubled.

Calibration (brier_score, ece) uses events carrying a probability and a 0/1 label
("1"/"true"/"yes" or "0"/"false"/"no", any case), over DEFAULT_BINS equal-mass bins per cohort
(rank-based, so ties are never split), whose per-bin sums app/stats/calibration turns into
the Brier decomposition and ECE. The brier_score row keeps those sums in
extra["bins"] ([{"bin", "n", "sum_prob", "sum_label", "sum_prob_sq", "sum_prob_label"}], filled
bins only) so a reliability diagram over any range of days is a sum of stored rows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, text
from sqlalchemy.orm import Session

from app.core.db import is_postgres, utcnow
from app.drift.signals import (
    COLUMN_DIMENSIONS,
    RATE_SIGNALS,
    SignalRow,
)
from app.models import Checkpoint, DailySignal
from app.models.base import UTCDateTime
from app.stats.calibration import (
    DEFAULT_BINS,
    BinStatistics,
    brier_decomposition,
    expected_calibration_error,
)

_POSITIVE_LABELS = "('1', 'true', 'yes')"
_KNOWN_LABELS = "('1', 'true', 'yes', '0', 'false', 'no')"
# Per-bin sums kept in the brier_score row's extra["bins"] (key in extra, column of the SQL):
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


def day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _aggregates() -> str:
    """COUNT ... FILTER per rate signal: one pass computes every numerator and denominator."""
    parts = ["COUNT(*) AS volume"]
    for name, (numerator, denominator) in RATE_SIGNALS.items():
        parts.append(f"COUNT(*) FILTER (WHERE {numerator}) AS {name}_num")
        parts.append(f"COUNT(*) FILTER (WHERE {denominator}) AS {name}_den")
    return ",\n  ".join(parts)


# Served traffic only: a shadow answer (shadow_of set) never reached a user.
_DAY_FILTER = (
    "e.project_id = :project_id AND e.ts >= :start AND e.ts < :end AND e.shadow_of IS NULL"
)


def _extra_dimensions_source(postgres: bool, alias: str = "e") -> tuple[str, str]:
    """FROM-clause expansion of the cohort JSON into (kv.key, value) rows, minus the keys
    that are columns already (they are grouped from the columns)."""
    excluded = ", ".join(f"'{d}'" for d in COLUMN_DIMENSIONS)
    if postgres:
        join = (
            f"CROSS JOIN LATERAL jsonb_each_text({alias}.cohort - ARRAY[{excluded}]::text[]) AS kv"
        )
        return join, "kv.value"
    join = f"JOIN json_each({alias}.cohort) AS kv ON kv.key NOT IN ({excluded})"
    return join, "CAST(kv.value AS TEXT)"


def _per_cohort_sql(postgres: bool, aggregates: str, where: str, also_by: str = "") -> str:
    """`aggregates` over the events matching `where`, per checkpoint x cohort (x `also_by`)."""
    key = f", {also_by}" if also_by else ""
    join, kv_value = _extra_dimensions_source(postgres)
    extra = (
        f"SELECT e.checkpoint_id, kv.key AS dimension, {kv_value} AS value{key},\n  {aggregates}\n"
        f"FROM events e {join}\nWHERE {where} AND kv.value IS NOT NULL\n"
        f"GROUP BY e.checkpoint_id, kv.key, kv.value{key}"
    )
    if postgres:
        dimension = " ".join(f"WHEN GROUPING(e.{d}) = 0 THEN '{d}'" for d in COLUMN_DIMENSIONS)
        value = " ".join(f"WHEN GROUPING(e.{d}) = 0 THEN e.{d}" for d in COLUMN_DIMENSIONS)
        sets = ", ".join(f"(e.{d})" for d in COLUMN_DIMENSIONS)
        columns = (
            f"SELECT e.checkpoint_id, CASE {dimension} ELSE 'all' END AS dimension,\n"
            f"  CASE {value} ELSE 'all' END AS value{key},\n  {aggregates}\n"
            f"FROM events e WHERE {where}\n"
            f"GROUP BY e.checkpoint_id{key}, GROUPING SETS ((), {sets})"
        )
        return f"{columns}\nUNION ALL\n{extra}"
    selects = [
        f"SELECT e.checkpoint_id, 'all' AS dimension, 'all' AS value{key},\n  {aggregates}\n"
        f"FROM events e WHERE {where} GROUP BY e.checkpoint_id{key}"
    ]
    for d in COLUMN_DIMENSIONS:
        selects.append(
            f"SELECT e.checkpoint_id, '{d}' AS dimension, e.{d} AS value{key},\n  {aggregates}\n"
            f"FROM events e WHERE {where} GROUP BY e.checkpoint_id, e.{d}{key}"
        )
    return "\nUNION ALL\n".join([*selects, extra])


def _rollup_sql(postgres: bool) -> str:
    return _per_cohort_sql(postgres, _aggregates(), _DAY_FILTER)


def _calibration_sql(postgres: bool) -> str:
    """Per-bin sums (count, p, y, p^2, p*y) of equal-mass bins per checkpoint x cohort.

    Rows are first counted per distinct probability (confidences are heavily tied), so the
    window that ranks them sorts distinct values, not events: a row's RANK is 1 + the rows
    with a smaller probability, i.e. the running count before its value."""
    per_probability = _per_cohort_sql(
        postgres,
        f"COUNT(*) AS n, SUM(CASE WHEN lower(e.label) IN {_POSITIVE_LABELS} THEN 1 ELSE 0 END)"
        " AS sy",
        f"{_DAY_FILTER} AND e.probability IS NOT NULL AND lower(e.label) IN {_KNOWN_LABELS}",
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
    """Every signal row of one day, computed by the database (nothing is written)."""
    postgres = is_postgres(session)
    if postgres:
        # The lateral JSON expansion inflates row estimates enough to trigger JIT compilation,
        # which costs seconds here and saves nothing on queries this size.
        session.execute(text("SET LOCAL jit = off"))
    params = _day_params(project_id, day)
    model_of = dict(
        session.execute(
            select(Checkpoint.id, Checkpoint.model_id).where(Checkpoint.project_id == project_id)
        ).all()
    )
    rows: list[SignalRow] = []
    for group in session.execute(_typed(_rollup_sql(postgres)), params).mappings():
        dimension, value = group["dimension"], group["value"]
        if not _storable(dimension, value):
            continue
        for name in RATE_SIGNALS:
            denominator = int(group[f"{name}_den"])
            if denominator == 0:
                continue
            numerator = int(group[f"{name}_num"])
            rows.append(
                SignalRow(
                    model_of[group["checkpoint_id"]],
                    group["checkpoint_id"],
                    name,
                    dimension,
                    value,
                    numerator,
                    denominator,
                    numerator / denominator,
                    {"events": int(group["volume"])},
                )
            )
    rows += _calibration_rows(session, params, postgres, model_of)
    return rows


def _calibration_rows(
    session: Session, params: dict[str, Any], postgres: bool, model_of: dict[int, int]
) -> list[SignalRow]:
    bins: dict[tuple[int, str, str], list[Any]] = {}
    for row in session.execute(_typed(_calibration_sql(postgres)), params).all():
        if _storable(row.dimension, row.value):
            bins.setdefault((row.checkpoint_id, row.dimension, row.value), []).append(row)
    rows: list[SignalRow] = []
    for (checkpoint_id, dimension, value), groups in bins.items():
        groups.sort(key=lambda g: int(g.bin))
        sums = {name: [float(getattr(g, column)) for g in groups] for name, column in _BIN_SUMS}
        stats = BinStatistics.from_sums(*sums.values())
        parts = brier_decomposition(stats)
        ece = expected_calibration_error(stats)
        total = round(stats.total)
        decomposition = {
            "reliability": parts.reliability,
            "resolution": parts.resolution,
            "uncertainty": parts.uncertainty,
            "within_bin_variance": parts.within_bin_variance,
            "within_bin_covariance": parts.within_bin_covariance,
            "bins": [
                {"bin": int(g.bin), **{name: sums[name][i] for name in sums}}
                for i, g in enumerate(groups)
            ],
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
                {"filled_bins": len(groups)},
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
    condition = RATE_SIGNALS[signal][0] if signal in RATE_SIGNALS else "e.probability IS NOT NULL"
    join, cohort = "", "TRUE"
    if dimension in COLUMN_DIMENSIONS:
        cohort = f"e.{dimension} = :value"
    elif dimension != "all":
        join, kv_value = _extra_dimensions_source(is_postgres(session))
        cohort = f"kv.key = :dimension AND {kv_value} = :value"
    sql = (
        f"SELECT DISTINCT e.trace_id FROM events e {join} WHERE {_DAY_FILTER} "
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


def replace_day(session: Session, project_id: int, day: date, rows: Sequence[SignalRow]) -> None:
    """The day's rows become exactly `rows` (in the caller's transaction)."""
    session.execute(
        delete(DailySignal).where(DailySignal.project_id == project_id, DailySignal.day == day)
    )
    if not rows:
        return
    computed_at = utcnow()
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
