"""Golden datasets: immutable, content-hashed versions of keyed rows.

A version is written in one transaction, rows inserted in chunks as they are parsed
(parsing.py), so a bad row anywhere leaves nothing behind."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, insert, literal, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core import audit
from app.core.auth import Principal
from app.core.errors import Conflict, NotFound, Unprocessable
from app.core.pagination import paginate
from app.datasets import parsing
from app.datasets.parsing import ParsedRows, row_problem, row_values, validate_row
from app.datasets.schemas import FromTracesIn
from app.models import Dataset, DatasetRow, DatasetVersion, Event
from app.models.datasets import ExpectedBehavior

INSERT_CHUNK = 5_000


def create_dataset(
    session: Session, principal: Principal, name: str, description: str | None
) -> Dataset:
    dataset = Dataset(project_id=principal.project_id, name=name, description=description)
    session.add(dataset)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"a dataset named '{name}' already exists", field="name") from None
    audit.record(session, principal, "dataset.created", "dataset", dataset.id, {"name": name})
    session.commit()
    return dataset


def get_dataset(session: Session, project_id: int, name: str, *, lock: bool = False) -> Dataset:
    """`lock` serializes version numbering on PostgreSQL (SQLite's BEGIN IMMEDIATE already
    does)."""
    stmt = select(Dataset).where(Dataset.project_id == project_id, Dataset.name == name)
    dataset = session.scalar(stmt.with_for_update() if lock else stmt)
    if dataset is None:
        raise NotFound(f"no dataset named '{name}'")
    return dataset


def list_datasets(
    session: Session, project_id: int, cursor: str | None, limit: int
) -> tuple[Sequence[Dataset], str | None]:
    return paginate(
        session, select(Dataset).where(Dataset.project_id == project_id), Dataset.id, cursor, limit
    )


def get_version(
    session: Session, project_id: int, name: str, number: int | None = None
) -> DatasetVersion:
    """Version `number` of a dataset, or its latest when `number` is None."""
    dataset = get_dataset(session, project_id, name)
    stmt = select(DatasetVersion).where(
        DatasetVersion.project_id == dataset.project_id, DatasetVersion.dataset_id == dataset.id
    )
    if number is None:
        stmt = stmt.order_by(DatasetVersion.version.desc()).limit(1)
    else:
        stmt = stmt.where(DatasetVersion.version == number)
    version = session.scalar(stmt)
    if version is None:
        which = "no versions yet" if number is None else f"no version {number}"
        raise NotFound(f"dataset '{name}' has {which}")
    return version


def list_versions(
    session: Session, project_id: int, name: str, cursor: str | None, limit: int
) -> tuple[Sequence[DatasetVersion], str | None]:
    dataset = get_dataset(session, project_id, name)
    stmt = select(DatasetVersion).where(
        DatasetVersion.project_id == dataset.project_id, DatasetVersion.dataset_id == dataset.id
    )
    return paginate(session, stmt, DatasetVersion.id, cursor, limit)


def list_rows(
    session: Session, project_id: int, name: str, number: int, cursor: str | None, limit: int
) -> tuple[Sequence[DatasetRow], str | None]:
    version = get_version(session, project_id, name, number)
    stmt = select(DatasetRow).where(
        DatasetRow.project_id == version.project_id, DatasetRow.version_id == version.id
    )
    return paginate(session, stmt, DatasetRow.id, cursor, limit, oldest_first=True)


def add_version(
    session: Session,
    principal: Principal,
    name: str,
    rows: ParsedRows,
    source: str,
    note: str | None = None,
    cohort_risk: Any = None,
) -> tuple[DatasetVersion, bool]:
    """Returns (version, created). Rows and declared cohort risk equal to the latest
    version's (same content hash) create nothing and return that version, so re-uploading in
    CI is harmless. Every declared cohort must be a dimension value some row has."""
    try:
        declared = parsing.cohort_risk(cohort_risk)
        dataset = get_dataset(session, principal.project_id, name, lock=True)
        version = _new_version(session, dataset, source, note, declared)
        seen: dict[str, int] = {}
        present: set[tuple[str, str]] = set()
        chunk: list[dict[str, Any]] = []
        for number, raw in rows:
            row = validate_row(number, raw)
            parsing.refuse_reserved_dimensions(number, row)
            if row.key in seen:
                raise row_problem(number, "key", f"duplicate key (first on row {seen[row.key]})")
            seen[row.key] = number
            present.update(item for item in row.cohort.items() if item[0] in declared)
            chunk.append(row_values(version, row))
            if len(chunk) >= INSERT_CHUNK:
                session.execute(insert(DatasetRow), chunk)
                chunk = []
        if chunk:
            session.execute(insert(DatasetRow), chunk)
        if not seen:
            raise Unprocessable("rows: a version needs at least one row", field="rows")
        _check_declared_present(declared, present)
        return _finish_version(session, principal, dataset, version)
    except BaseException:
        session.rollback()
        raise


def _check_declared_present(
    declared: dict[str, dict[str, str]], present: set[tuple[str, str]]
) -> None:
    for dimension, values in sorted(declared.items()):
        for value in sorted(values):
            if (dimension, value) not in present:
                where = f"cohort_risk.{dimension}.{value}"
                raise Unprocessable(
                    f"{where}: no row of this version has {dimension}={value}", field=where
                )


def version_from_traces(
    session: Session, principal: Principal, name: str, body: FromTracesIn
) -> tuple[DatasetVersion, bool]:
    """A new version: the base version's rows plus one row per served event of the traces,
    keyed `trace:<trace_id>[:<span_id>]`. The row copies what it needs (input, output as
    expected, cohort, label, should_refuse as expected_behavior), so it outlives the trace.
    The base version's declared cohort risk carries over."""
    try:
        events = session.scalars(
            select(Event)
            .where(Event.project_id == principal.project_id, Event.trace_id.in_(body.trace_ids))
            # Served answers only: a shadow answer never reached the user.
            .where(Event.shadow_of.is_(None))
            .order_by(Event.id)
        ).all()
        found = {event.trace_id for event in events}
        for index, trace_id in enumerate(body.trace_ids):
            if trace_id not in found:
                raise Unprocessable(
                    f"trace_ids[{index}]: no events for trace '{trace_id}'",
                    field=f"trace_ids[{index}]",
                )
        trace_rows = [
            validate_row(index + 1, _row_from_event(event, body))
            for index, event in enumerate(events)
        ]
        dataset = get_dataset(session, principal.project_id, name, lock=True)
        base = (
            get_version(session, principal.project_id, name, body.base_version)
            if body.base_version is not None
            else _latest_or_none(session, dataset)
        )
        declared = base.cohort_risk if base is not None else {}
        version = _new_version(session, dataset, "traces", body.note, declared)
        new_keys = {row.key for row in trace_rows}
        if base is not None:
            _copy_rows(session, base, version, exclude_keys=new_keys)
        values = {row.key: row_values(version, row) for row in trace_rows}
        session.execute(insert(DatasetRow), list(values.values()))
        return _finish_version(session, principal, dataset, version)
    except BaseException:
        session.rollback()
        raise


def _row_from_event(event: Event, body: FromTracesIn) -> dict[str, Any]:
    if event.input is None:
        raise Unprocessable(
            f"trace_ids: trace '{event.trace_id}' has an event without input", field="trace_ids"
        )
    cohort = {
        dimension: str(value)
        for dimension, value in (event.cohort or {}).items()
        if value is not None and str(value)
    }
    for dimension in ("route", "prompt_version", "user_segment"):
        value = getattr(event, dimension)
        if value:
            cohort[dimension] = value
    behavior = None
    if event.should_refuse is not None:
        behavior = ExpectedBehavior.refuse if event.should_refuse else ExpectedBehavior.answer
    key = f"trace:{event.trace_id}" + (f":{event.span_id}" if event.span_id else "")
    return {
        "key": key,
        "input": event.input,
        "expected": event.output,
        "cohort": cohort,
        "risk": body.risk,
        "expected_behavior": behavior,
        "label": event.label,
        "metadata": {
            "source": "trace",
            "trace_id": event.trace_id,
            "span_id": event.span_id,
            "checkpoint_id": event.checkpoint_id,
            "ts": event.ts.isoformat(),
            "feedback": event.feedback,
        },
    }


def _latest_or_none(session: Session, dataset: Dataset) -> DatasetVersion | None:
    return session.scalar(
        select(DatasetVersion)
        .where(
            DatasetVersion.project_id == dataset.project_id,
            DatasetVersion.dataset_id == dataset.id,
        )
        .order_by(DatasetVersion.version.desc())
        .limit(1)
    )


def _new_version(
    session: Session,
    dataset: Dataset,
    source: str,
    note: str | None,
    cohort_risk: dict[str, dict[str, str]],
) -> DatasetVersion:
    latest = _latest_or_none(session, dataset)
    version = DatasetVersion(
        project_id=dataset.project_id,
        dataset_id=dataset.id,
        version=(latest.version if latest else 0) + 1,
        content_hash="",
        row_count=0,
        source=source,
        note=note,
        cohort_risk=cohort_risk,
    )
    session.add(version)
    session.flush()
    return version


def _copy_rows(
    session: Session, base: DatasetVersion, target: DatasetVersion, exclude_keys: set[str]
) -> None:
    """INSERT ... SELECT inside the database: a base version is never loaded into Python.
    Both versions belong to one dataset, so to one project."""
    table = cast(Table, DatasetRow.__table__)
    columns = [column for column in table.c if column.name != "id"]
    source = select(
        *(
            literal(target.id).label("version_id") if column.name == "version_id" else column
            for column in columns
        )
    ).where(table.c.project_id == base.project_id, table.c.version_id == base.id)
    if exclude_keys:
        source = source.where(table.c.key.not_in(sorted(exclude_keys)))
    session.execute(insert(table).from_select([column.name for column in columns], source))


def content_hash(session: Session, version: DatasetVersion) -> tuple[str, int]:
    """sha256 over the row hashes in key order (sorted here, so the order is the same on
    every database whatever its collation), then the declared cohort risk if any (it changes
    what a gate guards, so it is part of what a version is); returns (hash, row count)."""
    pairs = session.execute(
        select(DatasetRow.key, DatasetRow.row_hash).where(
            DatasetRow.project_id == version.project_id, DatasetRow.version_id == version.id
        )
    ).all()
    digest = hashlib.sha256()
    for _key, row_hash in sorted(pairs):
        digest.update(row_hash.encode() + b"\n")
    if version.cohort_risk:
        digest.update(b"cohort_risk " + parsing.canonical_json(version.cohort_risk).encode())
    return digest.hexdigest(), len(pairs)


def _finish_version(
    session: Session, principal: Principal, dataset: Dataset, version: DatasetVersion
) -> tuple[DatasetVersion, bool]:
    version.content_hash, version.row_count = content_hash(session, version)
    previous = session.scalar(
        select(DatasetVersion).where(
            DatasetVersion.project_id == dataset.project_id,
            DatasetVersion.dataset_id == dataset.id,
            DatasetVersion.version == version.version - 1,
        )
    )
    if previous is not None and previous.content_hash == version.content_hash:
        session.rollback()
        return previous, False
    audit.record(
        session,
        principal,
        "dataset.version_created",
        "dataset",
        dataset.id,
        {
            "name": dataset.name,
            "version": version.version,
            "rows": version.row_count,
            "content_hash": version.content_hash,
            "source": version.source,
            "cohort_risk": version.cohort_risk,
        },
    )
    session.commit()
    return version, True
