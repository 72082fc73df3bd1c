"""Two champion changes of one model at the same moment (two processes, N=2), each allowed
on its own: the second must be decided on the champion the first left, not the one both
read. A first request's whole unit of work is held open (committed to a savepoint of an
outer transaction) while the second arrives over HTTP.

On PostgreSQL the second waits for the first's model lock, then reads the new champion;
on SQLite every transaction takes the write lock at BEGIN (BEGIN IMMEDIATE), so the second
already waited for the whole of the first."""

from __future__ import annotations

import threading
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from app.core.auth import authenticate
from app.core.links import Links
from app.core.settings import Settings
from app.models import Checkpoint
from app.models.registry import CheckpointStatus
from app.registry import service as registry
from tests.conftest import new_key
from tests.datasets.test_idempotency import someone_waits_for
from tests.gates.support import add_run
from tests.gates.test_gates import EVALUATOR, checkpoint, gate, passing, rows_of

Headers = dict[str, str]


def passing_candidates(client: TestClient, auth: Headers) -> dict[str, int]:
    """The champion v1 and two candidates, v2 and v3, each with a gate that passes against
    v1 (400 rows all three pass alike): every checkpoint's id, and each candidate's gate."""
    rows = rows_of("general", 400, "low")
    ids = {version: checkpoint(client, auth, version) for version in ("v1", "v2", "v3")}
    first = {"checkpoint_id": ids["v1"], "reason": "first champion"}
    assert client.post("/api/v1/models/bot/promote", json=first, headers=auth).status_code == 200
    add_run(client, auth, ids["v1"], rows, {EVALUATOR: passing(rows)})
    for version in ("v2", "v3"):
        decided = gate(
            client, auth, add_run(client, auth, ids[version], rows, {EVALUATOR: passing(rows)})
        )
        assert decided["verdict"] == "pass", decided
        ids[f"gate {version}"] = decided["id"]
    return ids


def while_held_open(
    app: FastAPI, settings: Settings, first: Any, second: Any
) -> tuple[Any, httpx.Response]:
    """Runs `first(session, principal, links)` to its commit inside a transaction held open,
    starts `second()` (an HTTP request) meanwhile, and lets the first's transaction end once
    the second waits for it (PostgreSQL) or has been started (SQLite)."""
    answers: list[httpx.Response] = []
    racer = threading.Thread(target=lambda: answers.append(second()))
    key = new_key(app, "acme", name="first")
    with app.state.engine.connect() as conn:
        outer = conn.begin()
        with Session(bind=conn, join_transaction_mode="create_savepoint") as session:
            result = first(session, authenticate(session, key), Links.of(settings))
        racer.start()
        if conn.dialect.name == "postgresql":
            xid = conn.execute(text("SELECT CAST(pg_current_xact_id() AS text)")).scalar_one()
            while not someone_waits_for(app, xid) and racer.is_alive():
                racer.join(0.01)
        outer.commit()
    racer.join(60)
    [answer] = answers
    return result, answer


def champions(app: FastAPI) -> list[str]:
    with app.state.sessionmaker() as session:
        return list(
            session.scalars(
                select(Checkpoint.version).where(Checkpoint.status == CheckpointStatus.champion)
            )
        )


def test_two_promotions_at_once_replace_the_champion_once(
    app: FastAPI, client: TestClient, auth: Headers, settings: Settings
) -> None:
    """v2 and v3 each passed a gate against the champion v1. Promoted at the same moment,
    both read v1 as the champion; until 2026-12-01 both were promoted over it: v3 became the
    champion on a gate against v1 although v2 was serving, v2 kept the status `champion`
    beside it, the history said v3 replaced v1, and `champion.changed` announced both
    replacing v1. The second now sees v2 and refuses v3's gate, which compared with v1."""
    ids = passing_candidates(client, auth)

    def promote_v2(session: Session, principal: Any, links: Links) -> Any:
        return registry.promote(
            session, principal, links, "bot", ids["v2"], ids["gate v2"], False, None
        )

    def promote_v3() -> httpx.Response:
        body = {"checkpoint_id": ids["v3"], "gate_id": ids["gate v3"]}
        return client.post("/api/v1/models/bot/promote", json=body, headers=auth)

    _, second = while_held_open(app, settings, promote_v2, promote_v3)
    assert second.status_code == 409, second.text
    assert f"not with the champion (checkpoint {ids['v2']})" in second.json()["detail"]
    state = client.get("/api/v1/models/bot", headers=auth).json()
    assert state["champion"]["version"] == "v2"
    assert [entry["checkpoint_id"] for entry in state["history"]] == [ids["v2"], ids["v1"]]
    assert champions(app) == ["v2"]


def test_a_rollback_and_a_promotion_at_once_change_the_champion_once(
    app: FastAPI, client: TestClient, auth: Headers, settings: Settings
) -> None:
    """v2 was promoted over v1 on a passing gate, then v3 gated against v2. A rollback of
    v2 (back to v1) and v3's promotion over v2 arrive together. Until 2026-12-01 both went
    through: v3 became the champion over a v2 that had just been rolled back for cause, v1
    kept the status `champion` beside it, and the rollback's target was not serving. The
    promotion now sees v1 back and refuses v3's gate against v2."""
    ids = passing_candidates(client, auth)
    body = {"checkpoint_id": ids["v2"], "gate_id": ids["gate v2"]}
    assert client.post("/api/v1/models/bot/promote", json=body, headers=auth).status_code == 200
    rows = rows_of("general", 400, "low")
    add_run(client, auth, ids["v2"], rows, {EVALUATOR: passing(rows)})
    v3_runs = client.get(f"/api/v1/gates/{ids['gate v3']}", headers=auth).json()
    against_v2 = gate(client, auth, v3_runs["candidate_run_id"])
    assert against_v2["verdict"] == "pass", against_v2

    def roll_back(session: Session, principal: Any, links: Links) -> Any:
        return registry.rollback(session, principal, links, "bot", None, "refusals doubled")

    def promote_v3() -> httpx.Response:
        body = {"checkpoint_id": ids["v3"], "gate_id": against_v2["id"]}
        return client.post("/api/v1/models/bot/promote", json=body, headers=auth)

    _, second = while_held_open(app, settings, roll_back, promote_v3)
    assert second.status_code == 409, second.text
    state = client.get("/api/v1/models/bot", headers=auth).json()
    assert state["champion"]["version"] == "v1"
    assert [entry["action"] for entry in state["history"]] == ["rollback", "promote", "promote"]
    assert champions(app) == ["v1"]
