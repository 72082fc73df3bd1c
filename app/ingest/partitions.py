"""Day partitions of `events` on PostgreSQL (SQLite keeps one table; every function here is a
no-op there).

`events` is partitioned by RANGE on `ts`, one partition per UTC day named `events_YYYYMMDD`,
and has no default partition. A partition is made in two steps: a plain table `LIKE events`,
then `ATTACH PARTITION`, which takes only SHARE UPDATE EXCLUSIVE on `events`, so it waits for
no insert or read (CREATE TABLE ... PARTITION OF would take ACCESS EXCLUSIVE). Cloning the
foreign keys onto the new partition takes SHARE ROW EXCLUSIVE on the tables they refer to
(projects, models, checkpoints), so it waits for transactions writing those (registrations,
promotions: short) — and a caller must not hold such a write itself in an open transaction
while it creates partitions; DDL_LOCK_TIMEOUT bounds any wait (the error is an
OperationalError: a 503 with Retry-After on the ingest path). Who creates them:

* the daily jobs (app/schedule.py) create today and PARTITION_DAYS_AHEAD days ahead, so
  ordinary traffic always finds its partition;
* ingest creates, on demand and in a transaction of its own, the day of an event that falls
  outside them (late, early or replayed traffic), so an insert never fails for want of a
  partition.

Why not a default partition instead: PostgreSQL refuses to create a day's partition while the
default one holds a row of that day, so a single early event would stop the scheduler from
creating its day, and a late event would stay in the default partition, where only row
deletes can remove it. On-demand creation keeps every row in its own day, so retention is
always whole-partition drops (apart from the day the cutoff falls in). The cost is one
catalogue check per ingest batch and, rarely, a DDL round trip.

Retention detaches an expired partition (renaming it `expired_events_YYYYMMDD`, so a late
event of that day gets a fresh partition instead of a name clash), deletes its events' keys,
then drops it; a process that dies half-way leaves an `expired_events_*` table that the next
run finishes."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Connection, Engine, text

PARTITION_DAYS_AHEAD = 7
"""Days after today the daily job creates, so a missed day or two never reaches ingest."""
DDL_LOCK_TIMEOUT = "10s"
"""A partition DDL that cannot get its lock in this time fails instead of queueing forever."""
# Serialises partition DDL across processes: "pl-parts" folded into a bigint.
_PARTITION_LOCK_KEY = int.from_bytes(b"pl-parts", "big") & 0x7FFFFFFFFFFFFFFF
_PREFIX = "events_"
EXPIRED_PREFIX = "expired_events_"


def _digits(day: date) -> str:
    """YYYYMMDD, zero-padded for years before 1000 too (strftime's %Y is not, on glibc)."""
    return f"{day.year:04d}{day.month:02d}{day.day:02d}"


def partition_name(day: date) -> str:
    return f"{_PREFIX}{_digits(day)}"


def partition_day(name: str) -> date:
    """The day of a partition's (or an expired partition's) name."""
    digits = name[-8:]
    return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))


def _bounds(day: date) -> str:
    """The partition bound of a UTC day; the last day Python can represent ends at MAXVALUE."""
    start = datetime.combine(day, time(), tzinfo=UTC).isoformat()
    if day == date.max:
        return f"FROM ('{start}') TO (MAXVALUE)"
    end = datetime.combine(day + timedelta(days=1), time(), tzinfo=UTC).isoformat()
    return f"FROM ('{start}') TO ('{end}')"


def attached_partitions(connection: Connection) -> dict[date, str]:
    """Day -> partition name of every partition attached to `events`."""
    names = connection.execute(
        text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'events'::regclass"
        )
    ).scalars()
    return {partition_day(name): name for name in names}


def expired_partitions(connection: Connection) -> list[str]:
    """Detached partitions a retention run has not dropped yet (in the current schema)."""
    return list(
        connection.execute(
            text(
                "SELECT c.relname FROM pg_class c "
                "WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r' "
                "AND c.relname LIKE :pattern ORDER BY c.relname"
            ),
            {"pattern": EXPIRED_PREFIX.replace("_", r"\_") + "%"},
        ).scalars()
    )


def create_partitions(engine: Engine, days: Iterable[date]) -> list[date]:
    """Creates the partitions of `days` that do not exist yet, in a transaction of its own on
    a connection of its own (never inside an ingest transaction: the DDL must commit before
    that transaction's insert can use it). Returns the days it created."""
    wanted = set(days)
    if engine.dialect.name != "postgresql" or not wanted:
        return []
    created: list[date] = []
    with engine.connect() as connection:
        connection.execute(text(f"SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'"))
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PARTITION_LOCK_KEY})
        existing = attached_partitions(connection)
        for day in sorted(wanted - set(existing)):
            name = partition_name(day)
            connection.execute(
                text(f"CREATE TABLE {name} (LIKE events INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
            )
            connection.execute(
                text(f"ALTER TABLE events ATTACH PARTITION {name} FOR VALUES {_bounds(day)}")
            )
            created.append(day)
        connection.commit()
    return created


def create_partitions_ahead(engine: Engine, today: date) -> list[date]:
    """Today's partition and PARTITION_DAYS_AHEAD more: run by the daily jobs."""
    return create_partitions(
        engine, (today + timedelta(days=n) for n in range(PARTITION_DAYS_AHEAD + 1))
    )


MISSING_DAYS_SQL = (
    "SELECT day FROM (SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date AS day FROM {staging}) d "
    "WHERE to_regclass('events_' || to_char(day, 'YYYYMMDD')) IS NULL"
)
"""The days of a staged batch that have no partition yet: one cheap query per batch."""


def detach_expired(connection: Connection, day: date) -> str:
    """Detaches one day's partition and renames it out of the way; returns the new name. The
    caller commits; until then inserts into `events` wait (DETACH takes ACCESS EXCLUSIVE on
    `events` for the moment it runs)."""
    connection.execute(text(f"SET LOCAL lock_timeout = '{DDL_LOCK_TIMEOUT}'"))
    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PARTITION_LOCK_KEY})
    name = partition_name(day)
    expired = f"{EXPIRED_PREFIX}{_digits(day)}"
    connection.execute(text(f"ALTER TABLE events DETACH PARTITION {name}"))
    connection.execute(text(f"ALTER TABLE {name} RENAME TO {expired}"))
    return expired
