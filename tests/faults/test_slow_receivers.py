"""Webhook receivers that hang, refuse or redirect never slow ingestion or the scheduler:
the real sender loop runs in the service (workers on) against real local receivers, and the
sender never holds a database transaction while it waits on one."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from app.core.links import Links
from app.core.settings import Settings
from app.drift.job import run_scheduled_drift
from app.main import create_app
from tests.conftest import new_key
from tests.datasets.support import Headers, register
from tests.faults.support import gated_server
from tests.ingest.factories import event


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return value


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_hanging_refusing_and_redirecting_receivers_never_block_ingest_or_the_scheduler(
    settings: Settings,
) -> None:
    app = create_app(
        settings.model_copy(
            update={
                "webhook_allow_private": True,
                "webhook_timeout_s": 60.0,
                "run_workers": True,
                "worker_poll_s": 0.1,
            }
        )
    )
    auth: Headers = {"Authorization": f"Bearer {new_key(app, 'acme')}"}
    with (
        gated_server(path="/hook") as hanging,
        gated_server(path="/moved") as redirecting,
        TestClient(app) as client,
    ):
        redirecting.status, redirecting.headers = 302, {"location": "http://127.0.0.1:1/x"}
        register(client, auth)

        def webhook(url: str) -> str:
            body = {"url": url, "events": ["alert.opened"]}
            created = client.post("/api/v1/webhooks", json=body, headers=auth)
            assert created.status_code == 201, created.text
            return f"/api/v1/webhooks/{created.json()['id']}"

        hanging_path = webhook(hanging.url)
        hanging.hold()
        client.post(f"{hanging_path}/test", headers=auth)
        assert hanging.waiting.wait(30), "the sender loop never reached the receiver"

        # The sender is stuck inside a POST; everything else carries on meanwhile.
        for number in range(5):
            events = [event(number * 100 + i) for i in range(100)]
            response = client.post("/api/v1/events", json={"events": events}, headers=auth)
            assert response.status_code == 202 and response.json()["accepted"] == 100
        assert client.get("/api/v1/events", headers=auth).status_code == 200
        assert run_scheduled_drift(app.state.sessionmaker, Links.of(app.state.settings)) is not None
        assert hanging.answered == 0, "the receiver answered: the test proved nothing"

        hanging.release()

        def deliveries(path: str) -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = client.get(f"{path}/deliveries", headers=auth).json()[
                "items"
            ]
            return items if items and items[0]["attempts"] > 0 else []

        [delivered] = wait_for(lambda: deliveries(hanging_path), "the held delivery")
        assert delivered["status"] == "succeeded"

        refused_path = webhook(f"http://127.0.0.1:{closed_port()}/hook")
        redirect_path = webhook(redirecting.url)
        client.post(f"{refused_path}/test", headers=auth)
        client.post(f"{redirect_path}/test", headers=auth)
        [refused] = wait_for(lambda: deliveries(refused_path), "the refused delivery")
        [redirected] = wait_for(lambda: deliveries(redirect_path), "the redirected delivery")
        events = [event(1000 + i) for i in range(100)]
        assert (
            client.post("/api/v1/events", json={"events": events}, headers=auth).json()["accepted"]
            == 100
        )
    # Each failure is recorded with its reason and retried later, never followed or waited on.
    assert refused["status"] == "pending" and "connection error" in refused["last_error"]
    assert redirected["last_status_code"] == 302
    assert "redirect not followed" in redirected["last_error"]
    assert len(redirecting.requests) == 1
