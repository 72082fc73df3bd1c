"""Ingest throughput on PostgreSQL, end to end through a real uvicorn server process.

* REST: BATCHES x BATCH_SIZE events posted to /api/v1/events by CLIENTS concurrent clients
  (bodies encoded before the clock starts); the clock stops when the last 202 arrives, i.e.
  when every event is committed. The stored count is checked afterwards.
* OTLP: OTLP_REQUESTS gzip protobuf export requests of OTLP_SPANS spans (the plumbline.*
  convention, an LLM span under a server span) posted to /v1/traces by CLIENTS clients.
* Baselines on the same rows: a binary COPY and a 1,000-row multi-row INSERT with psycopg,
  no validation, no HTTP; the ratios say what the service costs on top of the database.
* The server is `plumbline serve --workers N`, run once with N = 1 and once with N = 2 on
  the same data (the events table is emptied in between). The top-level `rest`, `otlp` and
  `ratios` are N = 1 (comparable with runs before --workers existed); `workers_2` holds the
  same for N = 2.
* Server memory: the RSS of every server process (the supervisor and each worker), sampled
  every 50 ms; `server_rss_mb.peak` is the largest single process over both runs, `idle`
  the largest single process before the first request.
* Server CPU: user + system CPU time of all server processes (from /proc) across each phase;
  `otlp.server_cpu_ms_per_span` is that delta divided by the spans sent.

    .venv/bin/python bench/ingest.py
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from psycopg.types.json import Jsonb
from scratch import BENCH_DATABASE_URL, scratch_schema, wait_until_healthy
from sqlalchemy import text

from app.core.db import make_engine, make_sessionmaker
from app.core.settings import Settings
from app.keys import service as keys
from app.models.project import Role

BATCHES, BATCH_SIZE, CLIENTS = 20, 10_000, 4
OTLP_REQUESTS, OTLP_SPANS = 100, 1_000
# Two days ago at midnight: inside the event retention (ingest refuses older events) and never
# ahead of the server's clock.
EPOCH = datetime.combine(
    datetime.now(UTC).date() - timedelta(days=2), datetime.min.time(), tzinfo=UTC
)
COLUMNS = [
    "project_id",
    "model_id",
    "checkpoint_id",
    "trace_id",
    "span_id",
    "ts",
    "route",
    "prompt_version",
    "user_segment",
    "cohort",
    "input",
    "output",
    "truncated",
    "eval_passed",
    "fallback",
    "refusal",
    "should_refuse",
    "feedback",
    "latency_ms",
    "probability",
    "label",
    "attributes",
    "source",
    "received_at",
]
COPY_TYPES = [
    "int4",
    "int4",
    "int4",
    "varchar",
    "varchar",
    "timestamptz",
    "varchar",
    "varchar",
    "varchar",
    "jsonb",
    "text",
    "text",
    "bool",
    "bool",
    "bool",
    "bool",
    "bool",
    "int2",
    "float8",
    "float8",
    "varchar",
    "jsonb",
    "varchar",
    "timestamptz",
]
SEGMENTS = ("free", "pro", "enterprise")


def rest_event(n: int) -> dict[str, Any]:
    """A realistic event: a few hundred characters of text, three cohort dimensions."""
    return {
        "trace_id": f"{n:032x}",
        "span_id": f"{n:016x}",
        "timestamp": (EPOCH + timedelta(milliseconds=n)).isoformat(),
        "model": "support-bot",
        "checkpoint_version": "v1",
        "cohort": {"route": f"/r{n % 7}", "prompt_version": "p3", "user_segment": SEGMENTS[n % 3]},
        "input": f"Customer {n} asks: where is my order? It was due last week. " * 3,
        "output": f"Order {n} left the warehouse yesterday and arrives tomorrow. " * 4,
        "eval_passed": n % 10 != 0,
        "fallback": n % 50 == 0,
        "latency_ms": 100.0 + n % 900,
        "attributes": {"input_tokens": 40 + n % 30, "output_tokens": 60},
    }


def _kv(key: str, value: str | bool | float) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def otlp_body(request_index: int) -> bytes:
    """One export request: per call a server span carrying http.route and an LLM span."""
    export = ExportTraceServiceRequest()
    scope = export.resource_spans.add().scope_spans.add()
    for i in range(OTLP_SPANS // 2):
        n = request_index * OTLP_SPANS + i
        trace_id = (10**9 + n).to_bytes(16, "big")
        start = int((EPOCH + timedelta(milliseconds=n)).timestamp() * 1e9)
        server = scope.spans.add(
            trace_id=trace_id,
            span_id=(2 * n + 1).to_bytes(8, "big"),
            name="POST /chat",
            kind=Span.SPAN_KIND_SERVER,
            start_time_unix_nano=start,
            end_time_unix_nano=start + 400_000_000,
        )
        server.attributes.extend([_kv("http.route", "/chat"), _kv("session.id", f"s{n}")])
        llm = scope.spans.add(
            trace_id=trace_id,
            span_id=(2 * n + 2).to_bytes(8, "big"),
            parent_span_id=server.span_id,
            name="chat support-ft",
            start_time_unix_nano=start + 1_000_000,
            end_time_unix_nano=start + 350_000_000,
        )
        llm.attributes.extend(
            [
                _kv("plumbline.model", "support-bot"),
                _kv("plumbline.checkpoint", "v1"),
                _kv("plumbline.user_segment", SEGMENTS[n % 3]),
                _kv("gen_ai.operation.name", "chat"),
                _kv("gen_ai.input.messages.0.role", "user"),
                _kv("gen_ai.input.messages.0.content", f"Where is order {n}? " * 5),
                _kv("gen_ai.output.messages.0.role", "assistant"),
                _kv("gen_ai.output.messages.0.content", f"Order {n} ships tomorrow. " * 6),
                _kv("plumbline.eval_passed", n % 10 != 0),
            ]
        )
    return gzip.compress(export.SerializeToString(), compresslevel=1)


def db_row(event: dict[str, Any], ids: tuple[int, int, int], received: datetime) -> tuple[Any, ...]:
    cohort = event["cohort"]
    values = {
        "project_id": ids[0],
        "model_id": ids[1],
        "checkpoint_id": ids[2],
        "trace_id": event["trace_id"],
        "span_id": event["span_id"],
        "ts": datetime.fromisoformat(event["timestamp"]),
        "route": cohort["route"],
        "prompt_version": cohort["prompt_version"],
        "user_segment": cohort["user_segment"],
        "cohort": Jsonb(cohort),
        "input": event["input"],
        "output": event["output"],
        "truncated": False,
        "eval_passed": event["eval_passed"],
        "fallback": event["fallback"],
        "refusal": None,
        "should_refuse": None,
        "feedback": None,
        "latency_ms": event["latency_ms"],
        "probability": None,
        "label": None,
        "attributes": Jsonb(event["attributes"]),
        "source": "rest",
        "received_at": received,
    }
    return tuple(values[column] for column in COLUMNS)


def raw_copy(conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> float:
    started = time.perf_counter()
    with conn.cursor() as cursor:
        statement = f"COPY events ({', '.join(COLUMNS)}) FROM STDIN (FORMAT BINARY)"
        with cursor.copy(statement) as copy:
            copy.set_types(COPY_TYPES)
            for row in rows:
                copy.write_row(row)
    conn.commit()
    return time.perf_counter() - started


def raw_multirow_insert(conn: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> float:
    chunk = 1000
    placeholders = "(" + ", ".join(["%s"] * len(COLUMNS)) + ")"
    started = time.perf_counter()
    with conn.cursor() as cursor:
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            cursor.execute(
                f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES "
                + ", ".join([placeholders] * len(part))
                # No conflict target: events holds no unique key of its own once partitioned
                # (the service claims keys in event_keys); any unique index still counts.
                + " ON CONFLICT DO NOTHING",
                [value for row in part for value in row],
            )
    conn.commit()
    return time.perf_counter() - started


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def server_process(url: str, workers: int) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    env = {
        **os.environ,
        "PLUMBLINE_DATABASE_URL": url,
        "PLUMBLINE_RUN_WORKERS": "false",
        "PLUMBLINE_RUN_SCHEDULER": "false",
        "PLUMBLINE_PRINT_ADMIN_KEY": "false",
        "PLUMBLINE_LOG_LEVEL": "WARNING",
        "PLUMBLINE_SECRET_KEY": "bench-secret-key-bench-secret-key",
        "PLUMBLINE_HOST": "127.0.0.1",
        "PLUMBLINE_PORT": str(port),
    }
    command = [sys.executable, "-m", "app.cli", "serve", "--workers", str(workers)]
    process = subprocess.Popen(command, env=env, cwd=Path(__file__).resolve().parent.parent)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, process, 60)
        deadline = time.monotonic() + 60
        while workers > 1 and len(process_tree(process.pid)) < workers + 1:
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not start")
            time.sleep(0.1)
        time.sleep(1)  # every worker past its startup
        yield base, process
    finally:
        process.terminate()
        process.wait(timeout=30)


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, grew = {pid}, True
    while grew:
        found = {child for child, parent in parents.items() if parent in tree} - tree
        grew = bool(found)
        tree |= found
    return sorted(tree)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class RssSampler:
    """Peak resident memory of each server process, from /proc, every 50 ms."""

    def __init__(self, pid: int) -> None:
        self.pids = process_tree(pid)
        self.peak_mb, self.stop = dict.fromkeys(self.pids, 0.0), threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def current_mb(self) -> float:
        """The largest single process now."""
        return max(rss_mb(pid) for pid in self.pids)

    def _run(self) -> None:
        while not self.stop.wait(0.05):
            for pid in self.pids:
                self.peak_mb[pid] = max(self.peak_mb[pid], rss_mb(pid))

    def __enter__(self) -> RssSampler:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


THROTTLED: list[int] = []


def post_all(
    base: str, path: str, bodies: list[bytes], headers: dict[str, str], expect: int
) -> float:
    """Posts every body with CLIENTS concurrent clients, retrying 429/503 after Retry-After
    (each one counted in THROTTLED); wall seconds."""

    def send(client: httpx.Client, body: bytes) -> None:
        while True:
            response = client.post(path, content=body, headers=headers)
            if response.status_code in (429, 503):
                THROTTLED.append(response.status_code)
                time.sleep(float(response.headers.get("retry-after", "1")))
                continue
            if response.status_code != expect:
                raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
            return

    clients = [httpx.Client(base_url=base, timeout=300, trust_env=False) for _ in range(CLIENTS)]
    started = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(send, clients[i % CLIENTS], b) for i, b in enumerate(bodies)]
        for future in futures:
            future.result()
    elapsed = time.perf_counter() - started
    for client in clients:
        client.close()
    return elapsed


def serve_and_send(
    url: str, workers: int, headers: dict[str, str], bodies: list[bytes], otlp_bodies: list[bytes]
) -> dict[str, Any]:
    """One server with `workers` processes: the REST bodies, the OTLP bodies, a retry."""
    engine = make_engine(Settings(database_url=url))

    def count_events() -> int:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM events")).scalar_one())

    with engine.begin() as conn:
        conn.execute(text("TRUNCATE events, event_keys"))  # keys too: a rerun stores anew
    events = BATCHES * BATCH_SIZE
    with server_process(url, workers) as (base, process), RssSampler(process.pid) as rss:
        idle_mb = rss.current_mb()
        cpu_before = cpu_seconds(rss.pids)
        THROTTLED.clear()
        rest_s = post_all(base, "/api/v1/events", bodies, headers, 202)
        rest_throttled = len(THROTTLED)
        rest_cpu = cpu_seconds(rss.pids) - cpu_before
        rest_stored = count_events()
        otlp_headers = {
            "Authorization": headers["Authorization"],
            "content-type": "application/x-protobuf",
            "content-encoding": "gzip",
        }
        cpu_before = cpu_seconds(rss.pids)
        THROTTLED.clear()
        otlp_s = post_all(base, "/v1/traces", otlp_bodies, otlp_headers, 200)
        otlp_throttled = len(THROTTLED)
        otlp_cpu = cpu_seconds(rss.pids) - cpu_before
        otlp_stored = count_events() - rest_stored
        retry_s = post_all(base, "/api/v1/events", bodies[:2], headers, 202)
        final_mb = rss.current_mb()
    assert count_events() == rest_stored + otlp_stored, "a retry was counted twice"
    engine.dispose()
    spans = OTLP_REQUESTS * OTLP_SPANS
    return {
        "workers": workers,
        "rest": {
            "events": events,
            "stored": rest_stored,
            "batches": BATCHES,
            "batch_size": BATCH_SIZE,
            "clients": CLIENTS,
            "seconds": round(rest_s, 2),
            "events_per_s": round(events / rest_s),
            "server_cpu_us_per_event": round(rest_cpu / events * 1e6, 1),
            "throttled": rest_throttled,
        },
        "otlp": {
            "requests": OTLP_REQUESTS,
            "spans": spans,
            "llm_spans_stored": otlp_stored,
            "seconds": round(otlp_s, 2),
            "spans_per_s": round(spans / otlp_s),
            "events_per_s": round(otlp_stored / otlp_s),
            "server_cpu_ms_per_span": round(otlp_cpu / spans * 1e3, 4),
            "throttled": otlp_throttled,
        },
        "retry_of_two_batches_seconds": round(retry_s, 2),
        "server_rss_mb": {
            "idle": round(idle_mb),
            "peak": round(max(rss.peak_mb.values())),
            "final": round(final_mb),
            "peak_per_process": [round(mb) for mb in rss.peak_mb.values()],
        },
    }


def ratios(result: dict[str, Any], copy_rate: float, insert_rate: float) -> dict[str, float]:
    rest_rate = result["rest"]["events"] / result["rest"]["seconds"]
    otlp_rate = result["otlp"]["llm_spans_stored"] / result["otlp"]["seconds"]
    return {
        "rest_vs_binary_copy": round(rest_rate / copy_rate, 3),
        "rest_vs_multirow_insert": round(rest_rate / insert_rate, 3),
        "otlp_events_vs_binary_copy": round(otlp_rate / copy_rate, 3),
    }


def run(url: str) -> dict[str, Any]:
    load_before = os.getloadavg()
    settings = Settings(database_url=url)
    engine = make_engine(settings)
    with make_sessionmaker(engine)() as session:
        project = keys.get_or_create_project(session, "bench")
        _row, key = keys.create_key(session, project.id, Role.write, "bench")
        session.commit()
    headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
    with (
        server_process(url, 1) as (base, _process),
        httpx.Client(base_url=base, trust_env=False) as client,
    ):
        created = client.post(
            "/api/v1/checkpoints",
            json={"model": "support-bot", "version": "v1"},
            headers=headers,
        )
        created.raise_for_status()
    events = [rest_event(n) for n in range(BATCHES * BATCH_SIZE)]
    bodies = [
        json.dumps({"events": events[i : i + BATCH_SIZE]}).encode()
        for i in range(0, len(events), BATCH_SIZE)
    ]
    otlp_bodies = [otlp_body(i) for i in range(OTLP_REQUESTS)]
    one = serve_and_send(url, 1, headers, bodies, otlp_bodies)
    two = serve_and_send(url, 2, headers, bodies, otlp_bodies)

    with engine.connect() as conn:
        ids = conn.execute(text("SELECT project_id, model_id, id FROM checkpoints LIMIT 1")).one()
    received = datetime.now(UTC)
    rows = [db_row(event, tuple(ids), received) for event in events]
    with psycopg.connect(url) as raw:
        raw.execute("TRUNCATE events")
        raw.commit()
        copy_s = raw_copy(raw, rows)
        raw.execute("TRUNCATE events")
        raw.commit()
        insert_s = raw_multirow_insert(raw, rows)
    engine.dispose()

    total = len(events)
    copy_rate, insert_rate = total / copy_s, total / insert_s
    two["ratios"] = ratios(two, copy_rate, insert_rate)
    return {
        "rest": one["rest"],
        "otlp": one["otlp"],
        "retry_of_two_batches_seconds": one["retry_of_two_batches_seconds"],
        "baseline": {
            "binary_copy_rows_per_s": round(copy_rate),
            "multirow_insert_rows_per_s": round(insert_rate),
        },
        "ratios": ratios(one, copy_rate, insert_rate),
        "server_rss_mb": {
            "idle": max(one["server_rss_mb"]["idle"], two["server_rss_mb"]["idle"]),
            "peak": max(one["server_rss_mb"]["peak"], two["server_rss_mb"]["peak"]),
            "workers_1": one["server_rss_mb"],
            "workers_2": two["server_rss_mb"],
        },
        "workers_2": {key: two[key] for key in ("rest", "otlp", "ratios")},
        "load_average": {"before": load_before, "after": os.getloadavg()},
    }


def main() -> None:
    with scratch_schema(BENCH_DATABASE_URL, "bench_ingest") as url:
        print(json.dumps(run(url), indent=2))


if __name__ == "__main__":
    main()
