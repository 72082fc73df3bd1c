"""Interning of event cohorts: every distinct cohort JSON of a project gets one row of
`event_cohorts`, and each stored event carries that row's id (`events.cohort_id`).

Why: the daily drift scan groups a day's events by their whole cohort. Grouping by the JSON
hashes and compares it for every event, which was half of the scan's cost
(bench/drift_profile.py); grouping by an integer costs next to nothing, and the few distinct
cohorts are joined back afterwards (app/drift/rollup.py).

Invariants:
* equal cohorts share one id whatever their key order (the digest is taken over the
  canonical JSON, keys sorted), and two projects never share one;
* ids are read from the database for every batch, never cached across requests: a cache
  would outlive a restored backup or a rolled-back insert and point events at the wrong
  cohort, silently. The read is one indexed SELECT per batch (measured in bench/ingest.py);
* concurrent batches inserting the same new cohort both end with the one committed row
  (INSERT ... ON CONFLICT DO NOTHING, then a read), and they insert in digest order, so two
  batches with several new cohorts wait on each other instead of deadlocking.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any, cast

from sqlalchemy import Table, bindparam, select
from sqlalchemy.orm import Session

from app.core.db import insert_ignoring_conflicts
from app.models import EventCohort

LOOKUP_CHUNK = 5000
COHORTS_TABLE = cast(Table, EventCohort.__table__)
_IDS_BY_DIGEST = select(EventCohort.digest, EventCohort.id).where(
    EventCohort.project_id == bindparam("project_id"),
    EventCohort.digest.in_(bindparam("digests", expanding=True)),
)


def cohort_digest(cohort: dict[str, Any]) -> str:
    """SHA-256 of the cohort's canonical JSON: equal for equal cohorts in any key order."""
    canonical = json.dumps(cohort, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def assign_cohort_ids(session: Session, project_id: int, rows: Sequence[dict[str, Any]]) -> None:
    """Sets `cohort_id` on every event row, inserting the cohorts the project has not seen
    (in the caller's transaction, which must be the one writing the events)."""
    # The items tuple is a cheap per-event key; equal cohorts sent with their keys in another
    # order become two keys here, which the digest then unites.
    digests: dict[tuple[Any, ...], str] = {}
    first_row: dict[str, dict[str, Any]] = {}
    keys = [tuple(row["cohort"].items()) for row in rows]
    for row, items in zip(rows, keys, strict=True):
        if items not in digests:
            digest = digests[items] = cohort_digest(row["cohort"])
            first_row.setdefault(digest, row)
    ids = _ids(session, project_id, first_row)
    missing = sorted(set(first_row) - set(ids))
    if missing:
        insert_ignoring_conflicts(
            session,
            COHORTS_TABLE,
            [
                {
                    "project_id": project_id,
                    "digest": digest,
                    **{
                        name: first_row[digest][name]
                        for name in ("cohort", "route", "prompt_version", "user_segment")
                    },
                }
                for digest in missing
            ],
            ["project_id", "digest"],
        )
        ids.update(_ids(session, project_id, missing))
    by_items = {items: ids[digest] for items, digest in digests.items()}
    for row, items in zip(rows, keys, strict=True):
        row["cohort_id"] = by_items[items]


def _ids(session: Session, project_id: int, digests: Iterable[str]) -> dict[str, int]:
    ordered = sorted(digests)
    found: dict[str, int] = {}
    # In chunks: SQLite allows 32,766 parameters and a batch may carry that many cohorts.
    for start in range(0, len(ordered), LOOKUP_CHUNK):
        chunk = ordered[start : start + LOOKUP_CHUNK]
        rows = session.execute(_IDS_BY_DIGEST, {"project_id": project_id, "digests": chunk})
        found.update({digest: id_ for digest, id_ in rows.all()})
    return found
