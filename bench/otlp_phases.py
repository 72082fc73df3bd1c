"""Where an OTLP event's server CPU goes, in-process on PostgreSQL, phase by phase.

`bench/ingest.py` measures OTLP end to end through a server, where the phases cannot be told
apart. This runs the receiver's steps on the same export requests (`otlp_body` of
`bench/ingest.py`: 1,000 spans, an LLM span under a server span, 500 events each) without
HTTP, and reports the process CPU time (user + system) per stored event of each step:

* decode: gunzip and parse the ExportTraceServiceRequest;
* map: `spans_to_events`, spans to event dicts;
* validate: `validate_built_events`, event dicts to EventIn;
* ingest: `ingest_events`, checkpoints, rows, binary COPY, the exactly-once insert, commit.

The phases run in the heap the server has once started (`settle_heap`, as app.main's
lifespan calls it): measured without it, the collector's walks of the process's every
object were charged to whichever phase they fell in (validate 28 -> 17 us per event).

`fixed_ingest_cpu_us_per_request` is the ingest CPU of a one-event request (what every
request pays whatever its size; REST's 10,000-event batches hardly notice it, OTLP
exporters send 512 spans by default). CPU time, not wall time: PostgreSQL runs beside it on
the same cores, and its share is what `bench/ingest.py` compares with a raw COPY.

    nice -n 10 .venv/bin/python bench/otlp_phases.py [--requests 20]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from ingest import otlp_body
from scratch import BENCH_DATABASE_URL, scratch_schema
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import make_engine, make_sessionmaker
from app.core.heap import settle_heap
from app.core.settings import Settings
from app.ingest import otlp
from app.ingest import service as ingest
from app.keys import service as keys
from app.models import Checkpoint, Model
from app.models.registry import CheckpointKind

PHASES = ("decode", "map", "validate", "ingest")
FIXED_COST_REQUESTS = 200


def setup(session: Session) -> int:
    """The benchmark's project with its one checkpoint, support-bot v1; returns the project."""
    project = keys.get_or_create_project(session, "bench")
    model = Model(project_id=project.id, name="support-bot")
    session.add(model)
    session.flush()
    session.add(
        Checkpoint(
            project_id=project.id,
            model_id=model.id,
            version="v1",
            kind=CheckpointKind.full,
            spec_hash="bench",
        )
    )
    session.commit()
    return project.id


def cpu_of(call: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """call(*args) and the CPU seconds this process spent in it."""
    started = time.process_time()
    result = call(*args)
    return result, time.process_time() - started


def one_request(
    sessions: sessionmaker[Session], project_id: int, body: bytes, settings: Settings
) -> tuple[int, dict[str, float]]:
    """Stored events and the CPU seconds of each phase for one export request."""
    request, decode_s = cpu_of(
        otlp.decode_export_request,
        body,
        otlp.PROTOBUF_CONTENT_TYPE,
        "gzip",
        settings.max_body_bytes,
    )
    (events, _rejections), map_s = cpu_of(otlp.spans_to_events, request)
    batch, validate_s = cpu_of(ingest.validate_built_events, events)
    with sessions() as session:
        outcome, ingest_s = cpu_of(
            ingest.ingest_events, session, project_id, batch, settings, "otlp"
        )
    seconds = dict(zip(PHASES, (decode_s, map_s, validate_s, ingest_s), strict=True))
    return outcome.accepted, seconds


def run(url: str, requests: int) -> dict[str, Any]:
    settings = Settings(database_url=url)
    engine = make_engine(settings)
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        project_id = setup(session)
    one_request(sessions, project_id, otlp_body(requests), settings)  # staging table, partitions
    settle_heap()  # as the server does once started: the collector walks only what requests make
    totals = dict.fromkeys(PHASES, 0.0)
    stored = 0
    for index in range(requests):
        accepted, seconds = one_request(sessions, project_id, otlp_body(index), settings)
        stored += accepted
        for phase, spent in seconds.items():
            totals[phase] += spent
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE events, event_keys"))
    request = otlp.decode_export_request(
        otlp_body(0), otlp.PROTOBUF_CONTENT_TYPE, "gzip", settings.max_body_bytes
    )
    events, _ = otlp.spans_to_events(request)
    singles = [ingest.validate_built_events([event]) for event in events[: 2 * FIXED_COST_REQUESTS]]
    fixed_s = 0.0
    for index, batch in enumerate(singles):
        with sessions() as session:
            _, spent = cpu_of(ingest.ingest_events, session, project_id, batch, settings, "otlp")
        if index >= FIXED_COST_REQUESTS:  # the first half warms the pool and the caches
            fixed_s += spent
    engine.dispose()
    return {
        "requests": requests,
        "events_stored": stored,
        "cpu_us_per_event": {
            **{phase: round(spent / stored * 1e6, 1) for phase, spent in totals.items()},
            "total": round(sum(totals.values()) / stored * 1e6, 1),
        },
        "fixed_ingest_cpu_us_per_request": round(fixed_s / FIXED_COST_REQUESTS * 1e6),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    with scratch_schema(BENCH_DATABASE_URL, "bench_otlp_phases") as url:
        print(json.dumps(run(url, args.requests), indent=2))


if __name__ == "__main__":
    main()
