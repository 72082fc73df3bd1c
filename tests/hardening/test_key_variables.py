"""A key variable a project names (a checkpoint endpoint's or an LLM judge's `api_key_env`) is
sent as `Authorization: Bearer` to a URL the same project chooses. The service's own settings
(`PLUMBLINE_*`: the secret key that signs every project's dashboard sessions, the database URL
with its password) must never be one of them, or any writer could read them off its own
server; nor may any variable the operator did not list (PLUMBLINE_EVALUATOR_KEY_ENVS), such
as the cloud credentials of the machine (AWS_SECRET_ACCESS_KEY)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import update

from app.core.settings import Settings
from app.models import Checkpoint, EvaluationRun
from tests.datasets.support import (
    drain_worker,
    endpoint_run,
    local_server,
    make_dataset,
    register,
)

Headers = dict[str, str]
SERVICE_SECRET = "the-service-secret-key-0123456789"
ROWS = [{"key": "k1", "input": "hello", "expected": "hi"}]
CLOUD_SECRET = "aws-secret-0123456789"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The operator allows its own endpoint key beside the default provider names."""
    allowed = f"SUPPORT_BOT_KEY,{Settings().evaluator_key_envs}"
    return settings.model_copy(update={"evaluator_key_envs": allowed})


class RecordingHandler(BaseHTTPRequestHandler):
    """An OpenAI-compatible server that keeps every Authorization header it is sent."""

    authorizations: list[str] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        RecordingHandler.authorizations.append(self.headers.get("authorization", ""))
        body = json.dumps({"choices": [{"message": {"content": "hi"}}]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def recording_server() -> Iterator[str]:
    RecordingHandler.authorizations = []
    with local_server(RecordingHandler) as url:
        yield url


@pytest.mark.parametrize("variable", ["PLUMBLINE_SECRET_KEY", "PLUMBLINE_DATABASE_URL"])
def test_a_checkpoint_endpoint_cannot_name_a_service_setting_as_its_key(
    client: TestClient,
    auth: Headers,
    monkeypatch: pytest.MonkeyPatch,
    recording_server: str,
    variable: str,
) -> None:
    monkeypatch.setenv(variable, SERVICE_SECRET)
    endpoint = {"base_url": recording_server, "model": "m", "api_key_env": variable}
    response = client.post(
        "/api/v1/checkpoints",
        json={"model": "support-bot", "version": "v1", "endpoint": endpoint},
        headers=auth,
    )
    assert response.status_code == 422, response.text
    assert "endpoint.api_key_env" in response.text
    assert SERVICE_SECRET not in response.text


def test_a_key_variable_of_the_operators_own_is_still_sent(
    app: FastAPI,
    client: TestClient,
    auth: Headers,
    monkeypatch: pytest.MonkeyPatch,
    recording_server: str,
) -> None:
    monkeypatch.setenv("SUPPORT_BOT_KEY", "sk-operator")
    endpoint = {"base_url": recording_server, "model": "m", "api_key_env": "SUPPORT_BOT_KEY"}
    assert endpoint_run(app, client, auth, endpoint)["status"] == "succeeded"
    assert RecordingHandler.authorizations == ["Bearer sk-operator"]


def test_the_worker_never_sends_a_service_setting_stored_before_the_check(
    app: FastAPI,
    client: TestClient,
    auth: Headers,
    monkeypatch: pytest.MonkeyPatch,
    recording_server: str,
) -> None:
    """A checkpoint registered before the check existed keeps its endpoint: the run fails
    with the reason instead of sending the service's secret key to the project's URL."""
    monkeypatch.setenv("PLUMBLINE_SECRET_KEY", SERVICE_SECRET)
    make_dataset(client, auth, "golden", ROWS)
    checkpoint_id = register(client, auth, endpoint={"base_url": recording_server, "model": "m"})
    with app.state.sessionmaker() as session:
        session.execute(
            update(Checkpoint)
            .where(Checkpoint.id == checkpoint_id)
            .values(
                endpoint={
                    "base_url": recording_server,
                    "model": "m",
                    "api_key_env": "PLUMBLINE_SECRET_KEY",
                    "timeout_s": 5,
                }
            )
        )
        session.commit()
    created = client.post(
        "/api/v1/datasets/golden/evaluations",
        json={"checkpoint_id": checkpoint_id, "evaluators": [{"name": "exact_match"}]},
        headers=auth,
    )
    assert created.status_code == 202, created.text
    drain_worker(app)
    assert not any(SERVICE_SECRET in header for header in RecordingHandler.authorizations)
    run = client.get(f"/api/v1/runs/{created.json()['run_id']}", headers=auth).json()
    assert run["status"] == "failed"
    assert "PLUMBLINE_SECRET_KEY" in json.dumps(run) and SERVICE_SECRET not in json.dumps(run)


def judge(variable: str, base_url: str) -> dict[str, Any]:
    return {
        "name": "llm_judge",
        "params": {"base_url": base_url, "model": "judge", "api_key_env": variable},
    }


def judged_run_and_suite(
    client: TestClient, auth: Headers, variable: str, base_url: str
) -> tuple[httpx.Response, httpx.Response]:
    """(an evaluation run, a suite) asking for a judge keyed by `variable`."""
    make_dataset(client, auth, "golden", ROWS)
    evaluators = [judge(variable, base_url)]
    created = client.post(
        "/api/v1/datasets/golden/evaluations",
        json={
            "checkpoint_id": register(client, auth),
            "evaluators": evaluators,
            "outputs": [{"key": "k1", "output": "hi"}],
        },
        headers=auth,
    )
    suite = client.put("/api/v1/suites/judged", json={"evaluators": evaluators}, headers=auth)
    return created, suite


def test_an_llm_judge_cannot_name_a_service_setting_as_its_key(
    client: TestClient, auth: Headers, monkeypatch: pytest.MonkeyPatch, recording_server: str
) -> None:
    monkeypatch.setenv("PLUMBLINE_SECRET_KEY", SERVICE_SECRET)
    created, suite = judged_run_and_suite(client, auth, "PLUMBLINE_SECRET_KEY", recording_server)
    assert created.status_code == 422, created.text
    assert "evaluators[0].params.api_key_env" in created.text
    assert suite.status_code == 422, suite.text
    assert "evaluators[0].params.api_key_env" in suite.text
    assert RecordingHandler.authorizations == []


def test_the_default_allow_list_names_the_usual_provider_keys() -> None:
    allowed = Settings(evaluator_key_envs=" OPENAI_API_KEY, ANTHROPIC_API_KEY ,").key_variables
    assert allowed == {"OPENAI_API_KEY", "ANTHROPIC_API_KEY"}
    assert {"OPENAI_API_KEY", "ANTHROPIC_API_KEY"} <= Settings().key_variables
    assert "AWS_SECRET_ACCESS_KEY" not in Settings().key_variables


def test_an_llm_judge_cannot_name_a_variable_the_operator_did_not_allow(
    client: TestClient, auth: Headers, monkeypatch: pytest.MonkeyPatch, recording_server: str
) -> None:
    """Before, a writer's judge with api_key_env AWS_SECRET_ACCESS_KEY and its own base_url
    was accepted (202), and the worker sent the machine's cloud secret to that URL. Now a
    422 names the variable and the setting, for runs and suites alike."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CLOUD_SECRET)
    created, suite = judged_run_and_suite(client, auth, "AWS_SECRET_ACCESS_KEY", recording_server)
    assert created.status_code == 422, created.text
    assert created.headers["content-type"] == "application/problem+json"
    assert "evaluators[0].params.api_key_env" in created.text
    assert "AWS_SECRET_ACCESS_KEY" in created.text
    assert "PLUMBLINE_EVALUATOR_KEY_ENVS" in created.text
    assert suite.status_code == 422, suite.text
    assert "AWS_SECRET_ACCESS_KEY" in suite.text
    assert RecordingHandler.authorizations == []


def test_a_checkpoint_endpoint_cannot_name_a_variable_the_operator_did_not_allow(
    client: TestClient, auth: Headers, monkeypatch: pytest.MonkeyPatch, recording_server: str
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CLOUD_SECRET)
    endpoint = {"base_url": recording_server, "model": "m", "api_key_env": "AWS_SECRET_ACCESS_KEY"}
    response = client.post(
        "/api/v1/checkpoints",
        json={"model": "support-bot", "version": "v1", "endpoint": endpoint},
        headers=auth,
    )
    assert response.status_code == 422, response.text
    assert "endpoint.api_key_env" in response.text and "AWS_SECRET_ACCESS_KEY" in response.text
    assert CLOUD_SECRET not in response.text


def test_the_worker_never_sends_a_variable_the_operator_did_not_allow(
    app: FastAPI,
    client: TestClient,
    auth: Headers,
    monkeypatch: pytest.MonkeyPatch,
    recording_server: str,
) -> None:
    """A run stored before the allow-list (or before the operator narrowed it) names
    AWS_SECRET_ACCESS_KEY for its judge: the run fails with the reason, nothing is sent."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CLOUD_SECRET)
    make_dataset(client, auth, "golden", ROWS)
    checkpoint_id = register(client, auth)
    created = client.post(
        "/api/v1/datasets/golden/evaluations",
        json={
            "checkpoint_id": checkpoint_id,
            "evaluators": [judge("OPENAI_API_KEY", recording_server)],
            "outputs": [{"key": "k1", "output": "hi"}],
        },
        headers=auth,
    )
    assert created.status_code == 202, created.text
    run_id = created.json()["run_id"]
    with app.state.sessionmaker() as session:
        session.execute(
            update(EvaluationRun)
            .where(EvaluationRun.id == run_id)
            .values(evaluators=[judge("AWS_SECRET_ACCESS_KEY", recording_server)])
        )
        session.commit()
    drain_worker(app)
    assert RecordingHandler.authorizations == []
    run = client.get(f"/api/v1/runs/{run_id}", headers=auth).json()
    assert run["status"] == "failed"
    assert "AWS_SECRET_ACCESS_KEY" in json.dumps(run) and CLOUD_SECRET not in json.dumps(run)
