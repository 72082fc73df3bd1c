"""events.carried_feedback: each rated trace's rating on one carrier call per checkpoint

Ingest copies a trace's rating onto each of its calls, so the daily drift scan counted a trace
of six calls rated down as six ratings. The rating is now also held, in `carried_feedback`, by
one carrier per trace and checkpoint: the trace's latest (by `ts`, then `id`) served call on
the checkpoint carrying `feedback`; NULL on every other event. thumbs_down_rate is counted on
it (app/drift/signals.DAILY_RATE_SIGNALS), and ingest and POST /feedback keep it
(app/ingest/service._place_carriers).

The column is nullable without a default: SQLite adds it in place, PostgreSQL adds it to the
partitioned `events` and every day partition without rewriting a row. The backfill then
places the carriers of the traces rated already, with one UPDATE through the parent table
(PostgreSQL routes it to each partition; an update never moves a row, `ts` is unchanged).
thumbs_down_rate changes meaning with this revision (rated calls -> rated traces), so what was
stored under the old meaning goes: its `daily_signals` rows, and its entries in every frozen
reference. Judged against a call-weighted reference, a trace-weighted rate would alert (or go
quiet) on the change of definition alone, wherever traces make several calls; and a reference
frozen later from a mix of old and new days would describe neither. Until a freeze after the
upgrade (a champion change or a rebaseline, from days computed since) thumbs-down is shown but
not judged, as for any cohort missing one signal's entry (docs/statistics.md §8.1). Days within
the retention window come back under the new meaning by rerunning them
(POST /api/v1/drift/backfill). For the same reason an unresolved thumbs-down alert is resolved
`monitor_changed`, with a note: nothing can judge it until that freeze, and an open alert keeps
every later day out of the model's known-good days, so that freeze could never come (no
webhook is sent from a migration; the alert's state and note say what happened).

Downgrade drops the column: the scan counts rated calls again. The removed rows and entries
are not restored (rerun the days to recompute them), and the resolved alerts stay resolved.

Revision ID: 0019
Revises: 0018
"""

import json
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The latest rated served call of each trace x checkpoint, as _place_carriers picks it.
BACKFILL = """
UPDATE events SET carried_feedback = feedback
WHERE (project_id, id, ts) IN (
  SELECT project_id, id, ts FROM (
    SELECT project_id, id, ts, ROW_NUMBER() OVER (
      PARTITION BY project_id, trace_id, checkpoint_id ORDER BY ts DESC, id DESC
    ) AS from_last
    FROM events WHERE feedback IS NOT NULL AND shadow_of IS NULL
  ) AS ranked
  WHERE from_last = 1
)
"""


# Every reference's entries but thumbs_down_rate's ("signal|dimension|value" keys).
KEEP_ENTRIES = {
    "postgresql": "UPDATE drift_references SET stats = (SELECT COALESCE(jsonb_object_agg(key, "
    "value), '{}'::jsonb) FROM jsonb_each(stats) WHERE substr(key, 1, 17) <> 'thumbs_down_rate|')",
    "sqlite": "UPDATE drift_references SET stats = (SELECT json_group_object(key, json(value)) "
    "FROM json_each(drift_references.stats) WHERE substr(key, 1, 17) <> 'thumbs_down_rate|')",
}


RESOLVED_NOTE = (
    "thumbs_down_rate now counts each rated trace once (migration 0019); this alert was "
    "judged on rated calls, and the rate is judged again from the next reference freeze"
)


def _resolve_thumbs_down_alerts() -> None:
    """Open and acknowledged thumbs-down alerts of reference-banded monitors resolved
    `monitor_changed`, their note appended to the annotations (a JSON list; cast on
    PostgreSQL, text on SQLite). A fixed-band monitor's alert stays: it is judged on."""
    connection = op.get_bind()
    value = (
        "CAST(:annotations AS jsonb)" if connection.dialect.name == "postgresql" else ":annotations"
    )
    now = datetime.now(UTC)
    alerts = connection.execute(
        sa.text(
            "SELECT a.id, a.annotations, m.band FROM alerts a JOIN monitors m "
            "ON m.id = a.monitor_id WHERE a.signal = 'thumbs_down_rate' "
            "AND a.status IN ('open', 'acknowledged')"
        )
    ).all()
    for alert_id, annotations, band in alerts:
        if (json.loads(band) if isinstance(band, str) else band).get("type") == "fixed":
            continue  # a fixed threshold needs no reference: judged on the next run as ever
        stored = json.loads(annotations) if isinstance(annotations, str) else annotations
        note = {"kind": "note", "note": RESOLVED_NOTE, "at": now.isoformat()}
        connection.execute(
            sa.text(
                "UPDATE alerts SET status = 'resolved', resolution = 'monitor_changed', "
                f"resolved_at = :now, annotations = {value} WHERE id = :id"
            ),
            {"now": now, "annotations": json.dumps([*(stored or []), note]), "id": alert_id},
        )


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("carried_feedback", sa.SmallInteger(), nullable=True))
    op.execute(BACKFILL)
    op.execute("DELETE FROM daily_signals WHERE signal = 'thumbs_down_rate'")
    op.execute(KEEP_ENTRIES[op.get_bind().dialect.name])
    _resolve_thumbs_down_alerts()


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("carried_feedback")
