"""What the outbox queues, and how senders in several processes share it."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from app.core.settings import Settings
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
