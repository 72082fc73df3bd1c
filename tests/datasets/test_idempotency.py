"""add_evaluation with an `Idempotency-Key`: a retried request gets the run the first one made
instead of a second run (which the gate would pool as a repeat of the same checkpoint); the
same key with another request is refused; keys belong to one project."""

from __future__ import annotations

import io
import json
import threading
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.core.auth import authenticate
from app.evaluations import service as runs
from app.evaluations.schemas import EvaluationIn
from app.models import EvaluationRun
from tests.conftest import new_key
from tests.datasets.support import Headers, count_rows, make_dataset, register

ROWS = [{"key": "k1", "input": "hello", "expected": "hi"}, {"key": "k2", "input": "bye"}]
OUTPUTS = [{"key": "k1", "output": "hi"}, {"key": "k2", "output": "ciao"}]
EVALUATORS = [{"name": "exact_match"}]
PATH = "/api/v1/datasets/golden/evaluations"


def golden_and_checkpoint(client: TestClient, auth: Headers) -> int:
    make_dataset(client, auth, "golden", ROWS)
    return register(client, auth)


def post_json(
    client: TestClient, auth: Headers, key: str | None, checkpoint_id: int, **body: Any
) -> httpx.Response:
    body = {"checkpoint_id": checkpoint_id, "evaluators": EVALUATORS, "outputs": OUTPUTS} | body
    keyed = auth | ({"Idempotency-Key": key} if key is not None else {})
    return client.post(PATH, json=body, headers=keyed)


def post_upload(
    client: TestClient, auth: Headers, key: str, checkpoint_id: int, outputs: list[Any]
) -> httpx.Response:
    jsonl = "\n".join(json.dumps(output) for output in outputs).encode()
    return client.post(
        PATH,
        data={"request": json.dumps({"checkpoint_id": checkpoint_id, "evaluators": EVALUATORS})},
        files={"outputs": ("outputs.jsonl", io.BytesIO(jsonl), "application/x-ndjson")},
        headers=auth | {"Idempotency-Key": key},
    )


def test_the_same_request_with_one_key_makes_one_run(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    checkpoint_id = golden_and_checkpoint(client, auth)
    first = post_json(client, auth, "ci-job-41", checkpoint_id)
    assert first.status_code == 202, first.text
    assert "idempotent-replayed" not in first.headers
    # The retry after a lost answer; key order and a spelled-out default do not matter.
    again = post_json(client, auth, "ci-job-41", checkpoint_id, repeats=1)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    # The draft standard's quoted form names the same key.
    quoted = post_json(client, auth, '"ci-job-41"', checkpoint_id)
    assert (quoted.status_code, quoted.json()) == (200, first.json())
    assert count_rows(app, EvaluationRun) == 1
    # Without a key, or with another, a request makes a run of its own, as before.
    assert post_json(client, auth, None, checkpoint_id).status_code == 202
    assert post_json(client, auth, "ci-job-42", checkpoint_id).status_code == 202
    assert count_rows(app, EvaluationRun) == 3


def test_an_uploaded_outputs_file_is_part_of_the_request(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    checkpoint_id = golden_and_checkpoint(client, auth)
    first = post_upload(client, auth, "upload-1", checkpoint_id, OUTPUTS)
    assert first.status_code == 202, first.text
    again = post_upload(client, auth, "upload-1", checkpoint_id, OUTPUTS)
    assert (again.status_code, again.json()) == (200, first.json())
    changed = [OUTPUTS[0], {"key": "k2", "output": "bye"}]
    refused = post_upload(client, auth, "upload-1", checkpoint_id, changed)
    assert refused.status_code == 422, refused.text
    assert refused.json()["field"] == "Idempotency-Key"
    assert count_rows(app, EvaluationRun) == 1


@pytest.mark.parametrize(
    "change",
    [
        {"outputs": [OUTPUTS[0], {"key": "k2", "output": "bye"}]},
        {"evaluators": [{"name": "exact_match"}, {"name": "contains"}]},
        {"repeats": 2, "outputs": [{**o, "repeat": r} for o in OUTPUTS for r in range(2)]},
    ],
    ids=["outputs", "evaluators", "repeats"],
)
def test_the_same_key_with_another_request_is_refused_and_makes_no_run(
    app: FastAPI, client: TestClient, auth: Headers, change: dict[str, Any]
) -> None:
    checkpoint_id = golden_and_checkpoint(client, auth)
    first = post_json(client, auth, "nightly", checkpoint_id)
    assert first.status_code == 202, first.text
    refused = post_json(client, auth, "nightly", checkpoint_id, **change)
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["field"] == "Idempotency-Key"
    assert problem["run_id"] == first.json()["run_id"]
    assert "'nightly' was used for another request" in problem["detail"]
    assert count_rows(app, EvaluationRun) == 1


def test_another_dataset_under_the_same_key_is_another_request(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    checkpoint_id = golden_and_checkpoint(client, auth)
    make_dataset(client, auth, "silver", ROWS)
    assert post_json(client, auth, "k", checkpoint_id).status_code == 202
    body = {"checkpoint_id": checkpoint_id, "evaluators": EVALUATORS, "outputs": OUTPUTS}
    other = client.post(
        "/api/v1/datasets/silver/evaluations", json=body, headers=auth | {"Idempotency-Key": "k"}
    )
    assert other.status_code == 422, other.text
    assert count_rows(app, EvaluationRun) == 1


def test_projects_have_keys_of_their_own(app: FastAPI, client: TestClient, auth: Headers) -> None:
    other = {"Authorization": f"Bearer {new_key(app, 'globex')}"}
    ours = post_json(client, auth, "shared-key", golden_and_checkpoint(client, auth))
    theirs_checkpoint = golden_and_checkpoint(client, other)
    theirs = post_json(client, other, "shared-key", theirs_checkpoint)
    assert (ours.status_code, theirs.status_code) == (202, 202), theirs.text
    assert theirs.json()["run_id"] != ours.json()["run_id"]
    # Another project's request under the key is not "another request" here: no 422, and
    # the replay of each answers its own project's run.
    replay = post_json(client, other, "shared-key", theirs_checkpoint)
    assert (replay.status_code, replay.json()) == (200, theirs.json())
    assert client.get(f"/api/v1/runs/{theirs.json()['run_id']}", headers=auth).status_code == 404
    assert count_rows(app, EvaluationRun) == 2


@pytest.mark.parametrize("key", ["", '""', "a" * 256, "has space", "clé"])
def test_a_key_that_is_not_one_is_refused_naming_the_header(
    app: FastAPI, client: TestClient, auth: Headers, key: str
) -> None:
    checkpoint_id = golden_and_checkpoint(client, auth)
    refused = client.post(
        PATH,
        json={"checkpoint_id": checkpoint_id, "evaluators": EVALUATORS, "outputs": OUTPUTS},
        headers=auth | {"Idempotency-Key": key.encode()},  # type: ignore[dict-item]
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["field"] == "Idempotency-Key"
    assert count_rows(app, EvaluationRun) == 0


def someone_waits_for(app: FastAPI, xid: str) -> bool:
    """Whether a PostgreSQL backend waits for transaction `xid` to end."""
    waiting = text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' "
        "AND transactionid = CAST(:xid AS xid) AND NOT granted"
    )
    with app.state.engine.connect() as conn:
        return bool(conn.execute(waiting, {"xid": xid}).scalar())


def test_concurrent_requests_with_one_key_make_one_run(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """A first request's run is flushed but not committed when the second arrives. On
    PostgreSQL the second waits on the unique key, then answers the winner's run; on SQLite
    it waits for the write lock, then finds the run."""
    checkpoint_id = golden_and_checkpoint(client, auth)
    body = EvaluationIn.model_validate(
        {"checkpoint_id": checkpoint_id, "evaluators": EVALUATORS, "outputs": OUTPUTS}
    )
    assert body.outputs is not None
    answers: list[httpx.Response] = []
    second = threading.Thread(
        target=lambda: answers.append(post_json(client, auth, "race", checkpoint_id))
    )
    first_key = new_key(app, "acme", name="first")
    with app.state.engine.connect() as conn:
        outer = conn.begin()
        # The first request's whole unit of work, committed to a savepoint of a transaction
        # held open: the run exists for no one else yet.
        with Session(bind=conn, join_transaction_mode="create_savepoint") as first:
            principal = authenticate(first, first_key)
            run, created = runs.create_run(
                first, principal, "golden", body, runs.json_outputs(body.outputs), "race"
            )
            assert created
            run_id = run.id
        second.start()
        if conn.dialect.name == "postgresql":
            xid = conn.execute(text("SELECT CAST(pg_current_xact_id() AS text)")).scalar_one()
            while not someone_waits_for(app, xid) and second.is_alive():
                second.join(0.01)
            assert second.is_alive(), answers  # it waits for the first's key, not done
        outer.commit()
    second.join(30)
    [answer] = answers
    assert (answer.status_code, answer.json()["run_id"]) == (200, run_id), answer.text
    assert count_rows(app, EvaluationRun) == 1
