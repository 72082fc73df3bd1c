"""`gate.blocked` payloads say why the gate blocked, a standing block included."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from app.core.settings import Settings
from app.webhooks.sender import deliver_webhooks
from tests.gates.support import add_run
from tests.gates.test_gates import (
    EVALUATOR,
    champion_and_candidate,
    checkpoint,
    gate,
    passing,
    rows_of,
)
from tests.webhooks.receiver import receiver

Headers = dict[str, str]


def test_a_standing_block_is_sent_with_the_reasons_it_still_blocks(
    app: FastAPI, client: TestClient, auth: Headers, settings: Settings
) -> None:
    checkpoint(client, auth, "v0")
    client.put("/api/v1/models/bot/gate-policy", json={"margin": 0.1}, headers=auth)
    rows = rows_of("core", 200, "high")
    worse = {f"core-{i}" for i in range(40)}
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)})
    with receiver() as hook:
        created = client.post(
            "/api/v1/webhooks", json={"url": hook.url, "events": ["gate.blocked"]}, headers=auth
        ).json()
        first = gate(
            client, auth, add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows, worse)})
        )
        second = gate(
            client, auth, add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows)})
        )
        assert (first["verdict"], second["verdict"], second["previously_blocked"]) == (
            "block",
            "block",
            True,
        )
        while deliver_webhooks(app.state.sessionmaker, settings):
            pass
        payloads = {
            headers["webhook-id"]: Webhook(created["secret"]).verify(body, headers)["data"]
            for headers, body in hook.requests
        }
        assert set(payloads) == {f"gate.{first['id']}.blocked", f"gate.{second['id']}.blocked"}
        assert payloads[f"gate.{first['id']}.blocked"]["reasons"] != []
        standing = payloads[f"gate.{second['id']}.blocked"]["reasons"]
        assert standing[0]["message"].startswith("blocked earlier on this dataset version")


def test_an_exploratory_block_sends_no_gate_blocked(
    app: FastAPI, client: TestClient, auth: Headers, settings: Settings
) -> None:
    """A what-if policy (a margin in the request) blocks. Before, that exploratory block was
    sent as `gate.blocked`, which a deploy pipeline reads as "stop this checkpoint", though
    promotion does not count it; only the real gate's block (the same margin, stored) is."""
    rows = rows_of("core", 200, "high")
    worse = {f"core-{i}" for i in range(40)}
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)})
    run = add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows, worse)})
    with receiver() as hook:
        client.post(
            "/api/v1/webhooks", json={"url": hook.url, "events": ["gate.blocked"]}, headers=auth
        ).raise_for_status()
        explored = gate(client, auth, run, policy={"margin": 0.01})
        strict = client.put("/api/v1/models/bot/gate-policy", json={"margin": 0.01}, headers=auth)
        assert strict.status_code == 200, strict.text
        real = gate(client, auth, run)
        assert (explored["exploratory"], explored["verdict"]) == (True, "block")
        assert (real["exploratory"], real["verdict"]) == (False, "block")
        while deliver_webhooks(app.state.sessionmaker, settings):
            pass
        assert [headers["webhook-id"] for headers, _body in hook.requests] == [
            f"gate.{real['id']}.blocked"
        ]
