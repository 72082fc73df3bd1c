"""PostgreSQL going away under a running service, for real: the app reaches the shared server
through a TCP proxy that the test cuts and restores (the server itself is never stopped).

These run on PostgreSQL only: SQLite is a file inside the service process, with no server to lose;
its one transient failure, "database is locked", waits on busy_timeout instead of failing, and
is answered like an outage (503) if the wait ever runs out."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, text

from app.core.db import make_engine, make_sessionmaker
from app.core.settings import Settings
from app.evaluations.worker import ENDPOINT_CHUNK, work_runs
from app.main import create_app
from app.models import EvaluationRun, Event
from app.models.runs import RunStatus
from tests.conftest import new_key
from tests.datasets.support import make_dataset, register
from tests.faults.support import (
    Headers,
    TcpProxy,
    chat_answer,
    chat_prompts,
    gated_server,
    proxy_to,
    through,
)
from tests.ingest.factories import event

BATCHES = 12
BATCH_SIZE = 200
# Generous: the point is "fails instead of hanging", not a latency figure.
FAIL_FAST_S = 15.0
# Only PostgreSQL can go away: SQLite is a file inside the service process. The tests are
# parametrized for PostgreSQL alone (not skipped on SQLite), and CI makes PostgreSQL mandatory.
pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


@pytest.fixture
def proxy(database_url: str) -> Iterator[TcpProxy]:
    with proxy_to(database_url) as tcp_proxy:
        yield tcp_proxy


@pytest.fixture
def proxied_app(proxy: TcpProxy, settings: Settings) -> FastAPI:
    url = through(proxy, settings.database_url, f"plumbline-fault-{uuid.uuid4().hex[:8]}")
    return create_app(settings.model_copy(update={"database_url": url, "db_connect_timeout_s": 2}))


def stored(database_url: str, column: Any, *conditions: Any) -> list[Any]:
    """Read straight from the database, around the proxy."""
    sessions = make_sessionmaker(make_engine(Settings(database_url=database_url)))
    with sessions() as session:
        return list(session.scalars(select(column).where(*conditions)))


def batch(number: int) -> list[dict[str, Any]]:
    first = number * BATCH_SIZE
    return [event(first + i) for i in range(BATCH_SIZE)]


def assert_unavailable(response: Any, started: float) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) > 0
    assert time.monotonic() - started < FAIL_FAST_S


def test_ingest_fails_fast_while_the_database_is_away_and_loses_nothing_acknowledged(
    proxy: TcpProxy, proxied_app: FastAPI, database_url: str
) -> None:
    key = new_key(proxied_app, "acme")
    auth = {"Authorization": f"Bearer {key}"}
    acknowledged: set[str] = set()
    statuses: list[int] = []
    third_batch_in = threading.Event()

    def outage() -> None:
        third_batch_in.wait(60)
        proxy.cut()  # while batches keep arriving, possibly in the middle of one
        time.sleep(1.5)
        proxy.restore()

    with TestClient(proxied_app) as client:
        register(client, auth)
        cutter = threading.Thread(target=outage)
        cutter.start()
        for number in range(BATCHES):
            while True:  # the client's retry loop: a refused batch is resent whole
                started = time.monotonic()
                response = client.post(
                    "/api/v1/events", json={"events": batch(number)}, headers=auth
                )
                statuses.append(response.status_code)
                if response.status_code == 202:
                    result = response.json()
                    assert result["accepted"] + result["duplicates"] == BATCH_SIZE
                    acknowledged |= {e["trace_id"] for e in batch(number)}
                    break
                assert_unavailable(response, started)
                time.sleep(0.2)
            if number == 2:
                third_batch_in.set()
        cutter.join()
        # Reads fail the same way while it is away, and recover by themselves.
        proxy.cut()
        started = time.monotonic()
        assert_unavailable(client.get("/api/v1/events", headers=auth), started)
        proxy.restore()
        assert client.get("/api/v1/events", headers=auth).status_code == 200

    assert 503 in statuses, "the outage was never observed"
    assert set(statuses) == {202, 503}
    in_database = stored(database_url, Event.trace_id)
    assert len(in_database) == len(set(in_database)) == BATCHES * BATCH_SIZE
    assert acknowledged <= set(in_database)


def test_a_run_interrupted_by_the_outage_resumes_when_the_database_returns(
    proxy: TcpProxy, proxied_app: FastAPI, database_url: str
) -> None:
    auth: Headers = {"Authorization": f"Bearer {new_key(proxied_app, 'acme')}"}
    rows = [{"key": f"k{i}", "input": f"q{i}", "expected": f"answer to q{i}"} for i in range(100)]
    with gated_server(chat_answer, "/v1") as chat, TestClient(proxied_app) as client:
        make_dataset(client, auth, "golden", rows)
        checkpoint_id = register(client, auth, endpoint={"base_url": chat.url, "model": "m"})
        created = client.post(
            "/api/v1/datasets/golden/evaluations",
            json={"checkpoint_id": checkpoint_id, "evaluators": [{"name": "exact_match"}]},
            headers=auth,
        )
        run_id = created.json()["run_id"]
        sessions, settings = proxied_app.state.sessionmaker, proxied_app.state.settings
        chat.hold()
        worker = threading.Thread(target=work_runs, args=(sessions, settings))
        worker.start()
        assert chat.waiting.wait(30), "the worker never called the endpoint"
        proxy.cut()  # the worker is between endpoint calls and its next write
        chat.release()
        worker.join(60)
        # Not failed over an outage: still the worker's, waiting for the database.
        [status] = stored(database_url, EvaluationRun.status, EvaluationRun.id == run_id)
        assert status == RunStatus.running
        assert work_runs(sessions, settings) is False  # still away: nothing lost, nothing done
        proxy.restore()
        while work_runs(sessions, settings):
            pass
        run = client.get(f"/api/v1/runs/{run_id}", headers=auth).json()
    assert run["status"] == "succeeded", run
    assert run["attempts"] == 1  # resumed under the same claim, not re-queued
    assert run["progress"] == {"done": 100, "total": 100}
    assert run["summary"]["by_evaluator"][0]["pass_rate"] == 1.0
    # Only the chunk whose outputs were in hand when the write failed is asked again.
    asked = chat_prompts(chat)
    assert set(asked) == {r["input"] for r in rows}
    assert len(asked) <= len(rows) + ENDPOINT_CHUNK


def test_backend_connections_terminated_by_the_server_are_replaced(
    proxy: TcpProxy, proxied_app: FastAPI, database_url: str
) -> None:
    """A failover or an admin's pg_terminate_backend kills pooled connections server-side."""
    name = f"plumbline-terminated-{uuid.uuid4().hex[:8]}"
    url = through(proxy, database_url, name)
    app = create_app(proxied_app.state.settings.model_copy(update={"database_url": url}))
    auth = {"Authorization": f"Bearer {new_key(app, 'acme')}"}
    admin = make_engine(Settings(database_url=database_url))
    with TestClient(app) as client:
        assert client.get("/api/v1/events", headers=auth).status_code == 200
        with admin.begin() as conn:
            killed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = :name"
                ),
                {"name": name},
            ).scalar_one()
        assert killed >= 1
        # pool_pre_ping notices the dead connection and opens a new one: no error at all.
        assert client.get("/api/v1/events", headers=auth).status_code == 200
    admin.dispose()
