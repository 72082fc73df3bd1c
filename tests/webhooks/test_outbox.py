"""What the outbox queues, and how senders in several processes share it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from app.core.db import utcnow
from app.core.settings import Settings
from app.webhooks import sender
from app.webhooks.delivery import DeliveryAttempt, send
from app.webhooks.sender import deliver_webhooks
from tests.canaries.support import candidate_and_champion
from tests.webhooks.receiver import receiver

Headers = dict[str, str]


def drain(app: FastAPI, settings: Settings) -> None:
    while deliver_webhooks(app.state.sessionmaker, settings):
        pass


def test_an_event_emitted_while_the_endpoint_is_paused_is_sent_once_it_is_re_enabled(
    app: FastAPI, client: TestClient, auth: Headers, settings: Settings
) -> None:
    with receiver() as hook:
        created = client.post(
            "/api/v1/webhooks", json={"url": hook.url, "events": ["champion.changed"]}, headers=auth
        ).json()
        path = f"/api/v1/webhooks/{created['id']}"
        paused = client.patch(path, json={"status": "paused"}, headers=auth)
        assert paused.json()["status"] == "paused"

        candidate_and_champion(client, auth)  # promotes v1: a champion.changed event
        drain(app, settings)
        assert hook.requests == []  # paused: held, not sent
        [held] = client.get(f"{path}/deliveries", headers=auth).json()["items"]
        assert (held["event_type"], held["status"]) == ("champion.changed", "pending")

        client.patch(path, json={"status": "active"}, headers=auth).raise_for_status()
        drain(app, settings)
        [(headers, body)] = hook.requests
        payload = Webhook(created["secret"]).verify(body, headers)
        assert headers["webhook-id"] == held["msg_id"]
        assert payload["type"] == "champion.changed" and payload["data"]["version"] == "v1"


def test_a_batch_outlasting_its_lease_never_sends_a_delivery_another_sender_took_over(
    app: FastAPI,
    client: TestClient,
    auth: Headers,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sender A claims three deliveries at once and sends them one after another; each send
    takes 60% of a lease, so while A sends the second, the third's claim has run out and
    sender B (another process) takes it over. Every message must still go out once."""
    lease = timedelta(seconds=2 * settings.webhook_timeout_s + 30)
    clock = [utcnow()]
    monkeypatch.setattr(sender, "utcnow", lambda: clock[0])
    sent_by_a = [0]

    def slow_send(*args: Any, **kwargs: Any) -> DeliveryAttempt:
        attempt = send(*args, **kwargs)
        if sent_by_a[0] >= 0:  # sender A, not B
            sent_by_a[0] += 1
            clock[0] += 0.6 * lease
            if sent_by_a[0] == 2:
                sent_by_a[0] = -1
                deliver_webhooks(app.state.sessionmaker, settings)  # sender B
                sent_by_a[0] = 2
        return attempt

    monkeypatch.setattr(sender, "send", slow_send)
    with receiver() as hook:
        created = client.post(
            "/api/v1/webhooks", json={"url": hook.url, "events": ["alert.opened"]}, headers=auth
        ).json()
        path = f"/api/v1/webhooks/{created['id']}"
        queued = [client.post(f"{path}/test", headers=auth).json()["msg_id"] for _ in range(3)]
        clock[0] = utcnow()
        deliver_webhooks(app.state.sessionmaker, settings)  # sender A

        received = [headers["webhook-id"] for headers, _ in hook.requests]
        assert sorted(received) == sorted(queued)
        log = client.get(f"{path}/deliveries", headers=auth).json()["items"]
        assert [(d["status"], d["attempts"]) for d in log] == [("succeeded", 1)] * 3
