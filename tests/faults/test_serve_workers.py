"""`plumbline serve --workers 2`: two real worker processes on one port and one database,
each running the whole service (API, background loops, scheduler) at the same time. Every
evaluation row, webhook delivery and scheduled period is done exactly once, and ingest
through the shared port stores every event once."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.core.db import today_utc
from app.core.settings import Settings
from app.drift.job import DRIFT_JOB
from app.models import DriftRun, Event, JobRun
from tests.datasets.support import Headers, make_dataset, register
from tests.faults.support import ROOT, chat_answer, chat_prompts, gated_server

RUNS, DELIVERIES, ROWS = 3, 6, 12


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhook_allow_private": True})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@contextmanager
def served(settings: Settings, workers: int) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = _free_port()
    env = {
        **os.environ,
        "PLUMBLINE_DATABASE_URL": settings.database_url,
        "PLUMBLINE_SECRET_KEY": settings.secret_key or "",
        "PLUMBLINE_DATA_DIR": str(settings.data_dir),
        "PLUMBLINE_WEBHOOK_ALLOW_PRIVATE": "true",
        "PLUMBLINE_WORKER_POLL_S": "0.1",
        "PLUMBLINE_PRINT_ADMIN_KEY": "false",
        "PLUMBLINE_LOG_LEVEL": "WARNING",
        "PLUMBLINE_PORT": str(port),
    }
    command = [sys.executable, "-m", "app.cli", "serve", "--workers", str(workers)]
    process = subprocess.Popen(command, env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, "plumbline serve exited"
            assert time.monotonic() < deadline, "plumbline serve never answered"
            try:
                if httpx.get(base + "/healthz", trust_env=False, timeout=30).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield base, process
    finally:
        process.terminate()
        process.wait(60)


def _settled(client: TestClient, auth: Headers, run_ids: list[int], webhook_id: int) -> bool:
    runs = [client.get(f"/api/v1/runs/{run_id}", headers=auth).json() for run_id in run_ids]
    log = client.get(f"/api/v1/webhooks/{webhook_id}/deliveries", headers=auth).json()
    return all(run["status"] == "succeeded" for run in runs) and all(
        delivery["status"] == "succeeded" for delivery in log["items"]
    )


def _post_events(http: httpx.Client, batch: list[dict[str, str]]) -> dict[str, Any]:
    """Sends one batch as a well-behaved client does: a 429 or 503 (busy, or the database
    briefly unavailable while both workers run their start-up jobs on a loaded machine) is
    retried after Retry-After, which the exactly-once keys make safe; any other failure fails
    the test with the server's answer."""
    for _ in range(10):
        reply = http.post("/api/v1/events", json={"events": batch})
        if reply.status_code not in (429, 503):
            break
        time.sleep(float(reply.headers.get("Retry-After", "1")))
    assert reply.status_code == 202, (reply.status_code, reply.text)
    answer: dict[str, Any] = reply.json()
    return answer


def test_two_worker_processes_do_each_piece_of_work_exactly_once(
    app: FastAPI, client: TestClient, auth: Headers, settings: Settings
) -> None:
    rows = [{"key": f"k{i}", "input": f"q{i}", "expected": f"answer to q{i}"} for i in range(ROWS)]
    make_dataset(client, auth, "golden", rows)
    with gated_server(chat_answer, "/v1") as chat, gated_server(path="/hook") as receiver:
        checkpoint_id = register(client, auth, endpoint={"base_url": chat.url, "model": "m"})
        run_ids = [
            client.post(
                "/api/v1/datasets/golden/evaluations",
                json={"checkpoint_id": checkpoint_id, "evaluators": [{"name": "exact_match"}]},
                headers=auth,
            ).json()["run_id"]
            for _ in range(RUNS)
        ]
        webhook = client.post(
            "/api/v1/webhooks",
            json={"url": receiver.url, "events": ["alert.opened"]},
            headers=auth,
        ).json()
        msg_ids = [
            client.post(f"/api/v1/webhooks/{webhook['id']}/test", headers=auth).json()["msg_id"]
            for _ in range(DELIVERIES)
        ]
        with served(settings, workers=2) as (base, process):
            assert len(_children(process.pid)) >= 2, "serve did not start two workers"
            # An hour ago: inside the retention window (the workers' start-up retention job
            # would purge an older day between the batches and their resend) and not ahead
            # of the server's clock.
            sent_at = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
            events = [
                {
                    "trace_id": f"t{n}",
                    "timestamp": sent_at,
                    "checkpoint_id": checkpoint_id,
                }
                for n in range(400)
            ]
            # A generous timeout: a loaded CI machine may take seconds to create the day's partition
            # while both workers run their start-up jobs (this test asserts outcomes, not speed).
            with httpx.Client(base_url=base, headers=auth, trust_env=False, timeout=60) as http:
                answers = [
                    _post_events(http, events[i : i + 50]) for i in range(0, len(events), 50)
                ] + [_post_events(http, events[:50])]
            deadline = time.monotonic() + 120
            while not _settled(client, auth, run_ids, webhook["id"]):
                assert time.monotonic() < deadline, "the workers never finished the work"
                time.sleep(0.2)
            yesterday = (today_utc() - timedelta(days=1)).isoformat()
            while True:  # both processes fire the catch-up drift job as they start
                with app.state.sessionmaker() as session:
                    claims = session.execute(
                        select(JobRun.period, JobRun.status).where(JobRun.job == DRIFT_JOB)
                    ).all()
                if (yesterday, "succeeded") in claims:
                    break
                assert time.monotonic() < deadline, "the scheduled drift job never ran"
                time.sleep(0.2)

    assert sum(a["accepted"] for a in answers) == len(events)
    assert answers[-1] == {"accepted": 0, "duplicates": 50, "rejected": []}
    for run_id in run_ids:
        run = client.get(f"/api/v1/runs/{run_id}", headers=auth).json()
        assert (run["status"], run["attempts"], run["progress"]["done"]) == ("succeeded", 1, ROWS)
    # Each row of each run was sent to the model once: never twice by two processes.
    assert Counter(chat_prompts(chat)) == {row["input"]: RUNS for row in rows}
    assert sorted(h["webhook-id"] for h, _ in receiver.requests) == sorted(msg_ids)
    with app.state.sessionmaker() as session:
        stored = session.scalar(select(func.count()).select_from(Event))
        claims = session.execute(
            select(JobRun.period, func.count())
            .where(JobRun.job == DRIFT_JOB)
            .group_by(JobRun.period)
        ).all()
        drift_runs = session.execute(
            select(DriftRun.day, func.count()).group_by(DriftRun.day)
        ).all()
    assert stored == len(events)
    assert claims and all(count == 1 for _, count in claims)
    assert drift_runs and all(count == 1 for _, count in drift_runs)
