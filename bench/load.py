"""Sustained mixed load on a real `plumbline serve` process over PostgreSQL.

For --seconds (default 180), asyncio httpx clients on 127.0.0.1 keep up at once:

* REST ingest: REST_CLIENTS loops posting batches of 1,000 events to /api/v1/events;
* OTLP ingest: OTLP_CLIENTS loops posting gzip protobuf exports to /v1/traces;
* dashboard reads: DASHBOARD_CLIENTS loops over the HTML pages, signed in once with a key
  (the session cookie is kept, as a browser would);
* API reads: API_CLIENTS loops over GET /api/v1/signals, /alerts, /events, /models/{model}.

Each loop stops by itself at the deadline. Ingest answered 429/503 (the server's backpressure)
is retried after Retry-After and counted as throttled, not as an error; any other unexpected
status or a transport error is an error. Reported per endpoint: requests, throughput,
p50/p95/p99 latency, errors; plus events stored per second and the server's peak RSS (VmHWM
of the serving process, from /proc). Results go to bench/results/load.json and load.md.

    .venv/bin/python bench/load.py [--seconds 180] [--url postgresql://...]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from ingest import OTLP_SPANS, free_port, otlp_body, process_tree, rest_event
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from scratch import BENCH_DATABASE_URL, scratch_schema, wait_until_healthy
from sqlalchemy import text

from app.core import migrate
from app.core.db import make_engine, make_sessionmaker
from app.core.settings import Settings
from app.keys import service as keys
from app.models.project import Role

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BATCH_SIZE = 1000
REST_CLIENTS = 2
OTLP_CLIENTS = 1
DASHBOARD_CLIENTS = 2
API_CLIENTS = 2
MODEL = "support-bot"
DASHBOARD_PAGES = ("/", f"/models/{MODEL}", "/drift", "/alerts", "/traces")
API_READS = ("/api/v1/signals", "/api/v1/alerts", "/api/v1/events", f"/api/v1/models/{MODEL}")


@dataclass
class Stats:
    """Latencies and outcomes per endpoint label."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    throttled: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    accepted: int = 0  # events the server acknowledged as newly stored
    server_errors: int = 0  # answers 5xx, among the errors
    error_samples: list[str] = field(default_factory=list)

    def record(self, label: str, seconds: float) -> None:
        self.latencies[label].append(seconds)

    def error(self, label: str, what: str) -> None:
        self.errors[label] += 1
        if what[:1] == "5":  # "<status> <body>" of an unexpected answer
            self.server_errors += 1
        if len(self.error_samples) < 20:
            self.error_samples.append(f"{label}: {what}")


async def timed(
    client: httpx.AsyncClient, stats: Stats, label: str, method: str, path: str, **kw: Any
) -> tuple[httpx.Response | None, float]:
    """The response (None after a transport error, which is counted) and its latency."""
    started = time.perf_counter()
    try:
        response = await client.request(method, path, **kw)
    except httpx.HTTPError as exc:
        stats.error(label, f"{type(exc).__name__}: {exc}")
        return None, 0.0
    return response, time.perf_counter() - started


async def ingest_loop(
    client: httpx.AsyncClient,
    stats: Stats,
    deadline: float,
    label: str,
    path: str,
    bodies: Iterator[bytes],
    headers: dict[str, str],
    expect: int,
) -> None:
    body = next(bodies)
    while time.monotonic() < deadline:
        response, seconds = await timed(
            client, stats, label, "POST", path, content=body, headers=headers
        )
        if response is not None and response.status_code in (429, 503):
            # Refusals are instant and would flatter the latencies: counted apart.
            stats.throttled[label] += 1
            await asyncio.sleep(float(response.headers.get("retry-after", "1")))
            continue  # the same body again, as a client retrying
        if response is not None:
            stats.record(label, seconds)
            if response.status_code != expect:
                stats.error(label, f"{response.status_code} {response.text[:200]}")
            else:
                stats.accepted += accepted_events(response)
        body = next(bodies)


def accepted_events(response: httpx.Response) -> int:
    """What an ingest answer acknowledges: REST says it; an OTLP export of these bodies
    (distinct spans, OTLP_SPANS // 2 of them LLM calls) stores every LLM span not rejected."""
    if response.headers.get("content-type", "").startswith("application/json"):
        return int(response.json()["accepted"])
    answer = ExportTraceServiceResponse.FromString(response.content)
    return OTLP_SPANS // 2 - answer.partial_success.rejected_spans


async def read_loop(
    client: httpx.AsyncClient, stats: Stats, deadline: float, paths: tuple[str, ...], offset: int
) -> None:
    for path in itertools.islice(itertools.cycle(paths), offset, None):
        if time.monotonic() >= deadline:
            return
        label = f"GET {path}"
        response, seconds = await timed(client, stats, label, "GET", path)
        if response is not None:
            stats.record(label, seconds)
            if response.status_code != 200:
                stats.error(label, f"{response.status_code} {response.text[:200]}")


def rest_bodies(start: int) -> Iterator[bytes]:
    """Endless distinct batches; `start` keeps each client's trace ids apart."""
    for first in itertools.count(start, BATCH_SIZE * REST_CLIENTS):
        events = [rest_event(first + i) for i in range(BATCH_SIZE)]
        now = datetime.now(UTC).isoformat()
        for e in events:
            e["timestamp"] = now  # today's traffic, as drift and the dashboards read it
        yield json.dumps({"events": events}).encode()


def otlp_bodies(start: int) -> Iterator[bytes]:
    for index in itertools.count(start, OTLP_CLIENTS):
        yield otlp_body(index)


async def sign_in(client: httpx.AsyncClient, key: str) -> None:
    page = await client.get("/login")
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match, "no CSRF token on the login page"
    answer = await client.post("/login", data={"csrf_token": match.group(1), "api_key": key})
    assert answer.status_code in (302, 303), f"login failed: {answer.status_code}"


async def drive(base: str, key: str, seconds: float) -> tuple[Stats, float]:
    stats = Stats()
    auth = {"Authorization": f"Bearer {key}"}
    limits = httpx.Limits(max_connections=20)
    async with (
        httpx.AsyncClient(base_url=base, timeout=120, trust_env=False, limits=limits) as api,
        httpx.AsyncClient(base_url=base, timeout=120, trust_env=False) as browser,
    ):
        await sign_in(browser, key)
        api.headers.update(auth)
        json_headers = {"content-type": "application/json"}
        otlp_headers = {"content-type": "application/x-protobuf", "content-encoding": "gzip"}
        started = time.monotonic()
        deadline = started + seconds
        loops = [
            ingest_loop(
                api,
                stats,
                deadline,
                "POST /api/v1/events (1,000 events)",
                "/api/v1/events",
                rest_bodies(10**9 + i * BATCH_SIZE),
                json_headers,
                202,
            )
            for i in range(REST_CLIENTS)
        ]
        loops += [
            ingest_loop(
                api,
                stats,
                deadline,
                "POST /v1/traces (OTLP)",
                "/v1/traces",
                otlp_bodies(i),
                otlp_headers,
                200,
            )
            for i in range(OTLP_CLIENTS)
        ]
        loops += [
            read_loop(browser, stats, deadline, DASHBOARD_PAGES, i)
            for i in range(DASHBOARD_CLIENTS)
        ]
        loops += [read_loop(api, stats, deadline, API_READS, i) for i in range(API_CLIENTS)]
        await asyncio.gather(*loops)
        elapsed = time.monotonic() - started
    return stats, elapsed


@contextmanager
def serve(url: str) -> Iterator[tuple[str, int]]:
    """`plumbline serve` (migrate, then uvicorn in the same process) with its background
    workers and scheduler on, as in production."""
    port = free_port()
    env = {
        **os.environ,
        "PLUMBLINE_DATABASE_URL": url,
        "PLUMBLINE_HOST": "127.0.0.1",
        "PLUMBLINE_PORT": str(port),
        "PLUMBLINE_PRINT_ADMIN_KEY": "false",
        "PLUMBLINE_LOG_LEVEL": "WARNING",
        "PLUMBLINE_SECRET_KEY": "load-test-secret-key-load-test-secret-key",
    }
    command = [sys.executable, "-m", "app.cli", "serve"]
    process = subprocess.Popen(command, env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(base, process, 60)
        yield base, process.pid
    finally:
        process.terminate()
        process.wait(timeout=60)


def memory_mb(pid: int) -> dict[str, Any]:
    """VmHWM is the kernel's own peak-RSS mark for a process: no sampling gaps. Read for the
    server and each of its worker processes; the peak is the largest single process."""
    per_process = []
    for member in process_tree(pid):
        fields = {}
        for line in Path(f"/proc/{member}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS"):
                fields[name] = round(int(value.split()[0]) / 1024, 1)
        per_process.append(fields)
    return {
        "peak_rss_mb": max(fields["VmHWM"] for fields in per_process),
        "final_rss_mb": max(fields["VmRSS"] for fields in per_process),
        "peak_rss_mb_per_process": [fields["VmHWM"] for fields in per_process],
    }


def summarize(
    stats: Stats, elapsed: float, events: int, memory: dict[str, float]
) -> dict[str, Any]:
    endpoints = {}
    for label in sorted(stats.latencies.keys() | stats.errors.keys()):
        ms = np.array(stats.latencies[label]) * 1000
        p50, p95, p99 = (np.percentile(ms, q) if ms.size else float("nan") for q in (50, 95, 99))
        endpoints[label] = {
            "requests": int(ms.size),
            "per_s": round(ms.size / elapsed, 2),
            "p50_ms": round(float(p50), 1),
            "p95_ms": round(float(p95), 1),
            "p99_ms": round(float(p99), 1),
            "errors": stats.errors[label],
            "throttled": stats.throttled[label],
        }
    return {
        "seconds": round(elapsed, 1),
        "events_stored": events,
        "events_accepted": stats.accepted,
        "events_per_s": round(events / elapsed),
        "requests": sum(e["requests"] for e in endpoints.values()),
        "errors": sum(stats.errors.values()),
        "error_samples": stats.error_samples,
        "server": memory,
        "clients": {
            "rest_ingest": REST_CLIENTS,
            "otlp_ingest": OTLP_CLIENTS,
            "dashboard": DASHBOARD_CLIENTS,
            "api_reads": API_CLIENTS,
        },
        "endpoints": endpoints,
    }


def markdown(result: dict[str, Any], command: str) -> str:
    lines = [
        "# Load test",
        "",
        f"`{command}` on {result['measured_on']}, PostgreSQL {result['postgres']}, "
        f"{result['cpus']} CPUs shared with other work (load average before the run: "
        f"{', '.join(map(str, result['load_average_before']))}); server and driver on one host.",
        "",
        f"{result['seconds']} s; {result['events_stored']:,} events stored "
        f"({result['events_per_s']:,}/s); {result['requests']:,} requests; "
        f"{result['errors']} errors; server peak RSS {result['server']['peak_rss_mb']} MB.",
        "",
        "| endpoint | requests | req/s | p50 ms | p95 ms | p99 ms | errors | throttled |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, e in result["endpoints"].items():
        lines.append(
            f"| `{label}` | {e['requests']} | {e['per_s']} | {e['p50_ms']} | {e['p95_ms']} "
            f"| {e['p99_ms']} | {e['errors']} | {e['throttled']} |"
        )
    return "\n".join(lines) + "\n"


def run(url: str, seconds: float) -> dict[str, Any]:
    load_before = [round(x, 2) for x in os.getloadavg()]  # how quiet the machine was
    migrate.upgrade(url)
    engine = make_engine(Settings(database_url=url))
    with make_sessionmaker(engine)() as session:
        project = keys.get_or_create_project(session, "load")
        _row, key = keys.create_key(session, project.id, Role.admin, "load")
        session.commit()
    with serve(url) as (base, pid):
        headers = {"Authorization": f"Bearer {key}"}
        for version in ("v1", "v2"):
            httpx.post(
                base + "/api/v1/checkpoints",
                json={"model": MODEL, "version": version},
                headers=headers,
                trust_env=False,
            ).raise_for_status()
        stats, elapsed = asyncio.run(drive(base, key, seconds))
        memory = memory_mb(pid)
    with engine.connect() as conn:
        events = int(conn.execute(text("SELECT count(*) FROM events")).scalar_one())
        postgres = conn.execute(text("SHOW server_version")).scalar_one()
    engine.dispose()
    result = summarize(stats, elapsed, events, memory)
    result["postgres"] = postgres
    result["measured_on"] = datetime.now(UTC).date().isoformat()
    result["cpus"] = os.cpu_count()
    result["load_average_before"] = load_before
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument(
        "--url", default=BENCH_DATABASE_URL, help="PostgreSQL; a schema is made and dropped"
    )
    parser.add_argument("--no-write", action="store_true", help="print only, keep bench/results")
    args = parser.parse_args()
    with scratch_schema(args.url, "bench_load") as url:
        result = run(url, args.seconds)
    print(json.dumps(result, indent=2))
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "load.json").write_text(json.dumps(result, indent=2) + "\n")
        command = f".venv/bin/python bench/load.py --seconds {args.seconds:g}"
        (RESULTS / "load.md").write_text(markdown(result, command))


if __name__ == "__main__":
    main()
