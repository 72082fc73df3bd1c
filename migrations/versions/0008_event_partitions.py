"""events partitioned by day (PostgreSQL); event_keys; tenant keys carry project_id

* `event_keys (project_id, trace_id, span_id)`: the exactly-once claim of an event, filled
  from the stored events. The unique key on `events` goes (a partitioned table's unique keys
  must contain the partition key); a plain `(project_id, trace_id)` index serves trace reads.
* PostgreSQL: `events` becomes `PARTITION BY RANGE (ts)` with one partition per UTC day
  holding stored rows, plus today and the next 7 days. The new table is built `LIKE` the old
  one, so it carries whatever columns `events` has when this runs (a migration before it may
  add some); its foreign keys and indexes are copied from the old table's definitions too.
  Primary key `(project_id, id, ts)`: the distribution column, the row, the partition key.
* PostgreSQL: the primary keys of the tenant tables that no foreign key references become
  `(project_id, id)`, and their unique keys gain `project_id` (on SQLite too), so they can be
  distributed by `project_id` (Citus); docs/scale-out.md says which tables and why.

Downgrade reverses all of it (events back to one table, its unique key rebuilt from the
rows, which event_keys kept unique).

Revision ID: 0008
Revises: 0006
"""

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DAYS_AHEAD = 7
EVENT_UNIQUE = "uq_events_project_id_trace_id_span_id"
TRACE_INDEX = "ix_events_project_trace"
# Tenant tables no foreign key points at: their primary key can carry project_id on
# PostgreSQL without touching a foreign key. (events is handled on its own.)
COMPOSITE_PK_TABLES = (
    "feedback",
    "daily_signals",
    "audit_log",
    "webhook_deliveries",
    "drift_runs",
    "incident_days",
    "canaries",
    "champion_history",
    "gate_policies",
    "evaluation_suites",
)
# table -> (old unique name, old columns, new unique name); the new key leads with project_id.
UNIQUES = {
    "daily_signals": (
        "uq_daily_signals_checkpoint_id_day_signal_dimension_value",
        ["checkpoint_id", "day", "signal", "dimension", "value"],
        "uq_daily_signals_project_checkpoint_day_signal",
    ),
    "webhook_deliveries": (
        "uq_webhook_deliveries_endpoint_id_msg_id",
        ["endpoint_id", "msg_id"],
        "uq_webhook_deliveries_project_endpoint_msg",
    ),
    "incident_days": (
        "uq_incident_days_model_id_day",
        ["model_id", "day"],
        "uq_incident_days_project_model_day",
    ),
    "gate_policies": (
        "uq_gate_policies_model_id_version",
        ["model_id", "version"],
        "uq_gate_policies_project_model_version",
    ),
}
CANARY_UNIQUE = "uq_canaries_running_model"
RUNNING_ONLY = sa.text("status = 'running'")


def _is_postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _partition(day: date) -> str:
    """A UTC day's partition (names zero-padded for years before 1000; the last day Python can
    represent ends at MAXVALUE), as app/ingest/partitions.py makes them at run time."""
    start = datetime.combine(day, time(), tzinfo=UTC).isoformat()
    end = (
        "MAXVALUE"
        if day == date.max
        else f"'{datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC).isoformat()}'"
    )
    name = f"events_{day.year:04d}{day.month:02d}{day.day:02d}"
    return f"CREATE TABLE {name} PARTITION OF events FOR VALUES FROM ('{start}') TO ({end})"


def upgrade() -> None:
    op.create_table(
        "event_keys",
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("trace_id", sa.String(length=64), nullable=False),
        sa.Column("span_id", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["project_id"],
            ["projects.id"],
            name="fk_event_keys_project_id_projects",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("project_id", "trace_id", "span_id", name="pk_event_keys"),
    )
    op.execute(
        "INSERT INTO event_keys (project_id, trace_id, span_id) "
        "SELECT project_id, trace_id, span_id FROM events"
    )
    if _is_postgres():
        _partition_events()
    else:
        with op.batch_alter_table("events") as batch_op:
            batch_op.drop_constraint(EVENT_UNIQUE, type_="unique")
            batch_op.create_index(TRACE_INDEX, ["project_id", "trace_id"])
    _tenant_keys_upgrade()


def _partition_events() -> None:
    bind = op.get_bind()
    op.execute("ALTER TABLE events RENAME TO events_unpartitioned")
    indexes = bind.execute(
        sa.text(
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = current_schema() AND tablename = 'events_unpartitioned'"
        )
    ).all()
    foreign_keys = bind.execute(
        sa.text(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'events_unpartitioned'::regclass AND contype = 'f'"
        )
    ).all()
    op.execute("ALTER SEQUENCE events_id_seq OWNED BY NONE")
    op.execute(
        "CREATE TABLE events (LIKE events_unpartitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS) "
        "PARTITION BY RANGE (ts)"
    )
    stored = bind.execute(
        sa.text("SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date FROM events_unpartitioned")
    ).scalars()
    today = datetime.now(UTC).date()
    days = set(stored) | {today + timedelta(days=n) for n in range(DAYS_AHEAD + 1)}
    for day in sorted(days):
        op.execute(_partition(day))
    op.execute("INSERT INTO events SELECT * FROM events_unpartitioned")
    op.execute("DROP TABLE events_unpartitioned")
    op.execute("ALTER SEQUENCE events_id_seq OWNED BY events.id")
    op.execute("ALTER TABLE events ADD CONSTRAINT pk_events PRIMARY KEY (project_id, id, ts)")
    for name, definition in foreign_keys:
        op.execute(f"ALTER TABLE events ADD CONSTRAINT {name} {definition}")
    for name, definition in indexes:
        if name in ("pk_events", EVENT_UNIQUE):
            continue
        op.execute(_on_events(definition))
    op.create_index(TRACE_INDEX, "events", ["project_id", "trace_id"])


def _on_events(index_definition: str) -> str:
    """An index definition of the old table, re-aimed at the new one (same name)."""
    head, _, tail = index_definition.partition(" ON ")
    _table, _, rest = tail.partition(" USING ")
    return f"{head} ON events USING {rest}"


def _tenant_keys_upgrade() -> None:
    postgres = _is_postgres()
    for table in COMPOSITE_PK_TABLES:
        if postgres:
            op.execute(f"ALTER TABLE {table} DROP CONSTRAINT pk_{table}")
            op.execute(
                f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY (project_id, id)"
            )
    for table, (old, columns, new) in UNIQUES.items():
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_constraint(old, type_="unique")
            batch_op.create_unique_constraint(new, ["project_id", *columns])
    with op.batch_alter_table("canaries") as batch_op:
        batch_op.drop_index(CANARY_UNIQUE)
        batch_op.create_index(
            CANARY_UNIQUE,
            ["project_id", "model_id"],
            unique=True,
            sqlite_where=RUNNING_ONLY,
            postgresql_where=RUNNING_ONLY,
        )


def _tenant_keys_downgrade() -> None:
    postgres = _is_postgres()
    with op.batch_alter_table("canaries") as batch_op:
        batch_op.drop_index(CANARY_UNIQUE)
        batch_op.create_index(
            CANARY_UNIQUE,
            ["model_id"],
            unique=True,
            sqlite_where=RUNNING_ONLY,
            postgresql_where=RUNNING_ONLY,
        )
    for table, (old, columns, new) in UNIQUES.items():
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_constraint(new, type_="unique")
            batch_op.create_unique_constraint(old, columns)
    for table in COMPOSITE_PK_TABLES:
        if postgres:
            op.execute(f"ALTER TABLE {table} DROP CONSTRAINT pk_{table}")
            op.execute(f"ALTER TABLE {table} ADD CONSTRAINT pk_{table} PRIMARY KEY (id)")


def downgrade() -> None:
    _tenant_keys_downgrade()
    if _is_postgres():
        _unpartition_events()
    else:
        with op.batch_alter_table("events") as batch_op:
            batch_op.drop_index(TRACE_INDEX)
            batch_op.create_unique_constraint(EVENT_UNIQUE, ["project_id", "trace_id", "span_id"])
    op.drop_table("event_keys")


def _unpartition_events() -> None:
    bind = op.get_bind()
    op.drop_index(TRACE_INDEX, table_name="events")
    indexes = bind.execute(
        sa.text(
            "SELECT indexname, indexdef FROM pg_indexes "
            "WHERE schemaname = current_schema() AND tablename = 'events'"
        )
    ).all()
    foreign_keys = bind.execute(
        sa.text(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'events'::regclass AND contype = 'f' AND conparentid = 0"
        )
    ).all()
    op.execute("ALTER TABLE events RENAME TO events_partitioned")
    op.execute("ALTER SEQUENCE events_id_seq OWNED BY NONE")
    op.execute(
        "CREATE TABLE events (LIKE events_partitioned INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
    )
    op.execute("INSERT INTO events SELECT * FROM events_partitioned ORDER BY id")
    op.execute("DROP TABLE events_partitioned")
    expired = _expired_tables(bind)
    if expired:
        op.execute(f"DROP TABLE {expired}")
    op.execute("ALTER SEQUENCE events_id_seq OWNED BY events.id")
    op.execute("ALTER TABLE events ADD CONSTRAINT pk_events PRIMARY KEY (id)")
    op.execute(
        f"ALTER TABLE events ADD CONSTRAINT {EVENT_UNIQUE} UNIQUE (project_id, trace_id, span_id)"
    )
    for name, definition in foreign_keys:
        op.execute(f"ALTER TABLE events ADD CONSTRAINT {name} {definition}")
    for name, definition in indexes:
        if name == "pk_events":
            continue
        op.execute(_on_events(definition))


def _expired_tables(bind: sa.Connection) -> str:
    """Partitions a retention run detached and has not dropped yet, comma-separated."""
    names = bind.execute(
        sa.text(
            "SELECT relname FROM pg_class WHERE relkind = 'r' "
            "AND relnamespace = current_schema()::regnamespace "
            "AND relname LIKE 'expired\\_events\\_%'"
        )
    ).scalars()
    return ", ".join(names)
