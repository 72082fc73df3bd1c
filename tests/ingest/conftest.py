"""Ingest fixtures: a registered checkpoint, and the app served by a real uvicorn server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient


@pytest.fixture
def checkpoint(client: TestClient, auth: dict[str, str]) -> dict[str, Any]:
    """support-bot v1 and v2 registered; returns v1."""
    first = client.post(
        "/api/v1/checkpoints", json={"model": "support-bot", "version": "v1"}, headers=auth
    )
    client.post("/api/v1/checkpoints", json={"model": "support-bot", "version": "v2"}, headers=auth)
    body: dict[str, Any] = first.json()
    return body


@pytest.fixture
def live_server(app: FastAPI, checkpoint: dict[str, Any]) -> Iterator[str]:
    """The test's app behind uvicorn on 127.0.0.1 (a free port), for real HTTP clients."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()
