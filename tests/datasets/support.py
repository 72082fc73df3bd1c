"""Shared steps for the dataset and run tests: everything goes through the public API,
except driving the worker, which the tests do in-process (workers are off in tests)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.evaluations.worker import work_runs

Headers = dict[str, str]


def make_dataset(
    client: TestClient, auth: Headers, name: str, rows: list[dict[str, Any]]
) -> dict[str, Any]:
    created = client.post("/api/v1/datasets", json={"name": name}, headers=auth)
    assert created.status_code == 201, created.text
    version = client.post(f"/api/v1/datasets/{name}/versions", json={"rows": rows}, headers=auth)
    assert version.status_code == 201, version.text
    return version.json()  # type: ignore[no-any-return]


def register(client: TestClient, auth: Headers, **body: Any) -> int:
    body.setdefault("model", "support-bot")
    body.setdefault("version", "v1")
    response = client.post("/api/v1/checkpoints", json=body, headers=auth)
    assert response.status_code in (200, 201), response.text
    return response.json()["id"]  # type: ignore[no-any-return]


def drain_worker(app: FastAPI) -> int:
    """Runs the worker until it finds nothing to do; returns how many units it did."""
    units = 0
    while work_runs(app.state.sessionmaker, app.state.settings):
        units += 1
        assert units < 100, "the worker never settles"
    return units


def all_pages(client: TestClient, auth: Headers, path: str, **params: Any) -> list[Any]:
    items: list[Any] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        page = client.get(path, params=query, headers=auth)
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items


def count_rows(app: FastAPI, model: type[Any]) -> int:
    """In a short session of its own: on SQLite an open transaction holds the write lock."""
    with app.state.sessionmaker() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


@contextmanager
def local_server(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """`handler` served on a free loopback port for the block: its OpenAI-style base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def answer_chat(handler: BaseHTTPRequestHandler, content: str) -> None:
    """Sends `content` as an OpenAI-style chat completion: what a served checkpoint answers."""
    payload = json.dumps(
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
    ).encode()
    handler.send_response(200)
    handler.send_header("content-type", "application/json")
    handler.send_header("content-length", str(len(payload)))
    handler.end_headers()
    handler.wfile.write(payload)


def endpoint_run(
    app: FastAPI, client: TestClient, auth: Headers, endpoint: dict[str, Any]
) -> dict[str, Any]:
    """A one-row golden set evaluated by `exact_match` on the answers of a checkpoint served
    at `endpoint`, the worker drained: the run as the API gives it."""
    make_dataset(client, auth, "golden", [{"key": "k1", "input": "hello", "expected": "hi"}])
    checkpoint_id = register(client, auth, endpoint=endpoint)
    created = client.post(
        "/api/v1/datasets/golden/evaluations",
        json={"checkpoint_id": checkpoint_id, "evaluators": [{"name": "exact_match"}]},
        headers=auth,
    )
    assert created.status_code == 202, created.text
    drain_worker(app)
    run: dict[str, Any] = client.get(
        f"/api/v1/runs/{created.json()['run_id']}", headers=auth
    ).json()
    return run
