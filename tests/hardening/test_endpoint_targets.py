"""Where the run worker may call a checkpoint's endpoint: private and loopback addresses (where
self-hosted models live), never a cloud metadata, link-local or reserved address, whose answer
would land in the run's outputs for the project to read."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.datasets.support import drain_worker, endpoint_run, make_dataset, register

Headers = dict[str, str]


def test_a_checkpoint_endpoint_on_the_metadata_address_is_never_called(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    endpoint = {"base_url": "http://169.254.169.254/latest", "model": "m", "timeout_s": 5}
    run = endpoint_run(app, client, auth, endpoint)
    assert run["status"] == "failed", run
    assert "cloud metadata address" in run["error"]


def test_an_llm_judge_on_the_metadata_address_is_never_called(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The judge's endpoint is the project's to choose too: each row records an evaluator
    error naming the refused address, and nothing is sent."""
    make_dataset(client, auth, "golden", [{"key": "k1", "input": "hello", "expected": "hi"}])
    checkpoint_id = register(client, auth)
    judge = {"name": "llm_judge", "params": {"base_url": "http://169.254.169.254/v1", "model": "j"}}
    created = client.post(
        "/api/v1/datasets/golden/evaluations",
        json={
            "checkpoint_id": checkpoint_id,
            "evaluators": [judge],
            "outputs": [{"key": "k1", "output": "hi"}],
        },
        headers=auth,
    )
    assert created.status_code == 202, created.text
    drain_worker(app)
    run_id = created.json()["run_id"]
    run = client.get(f"/api/v1/runs/{run_id}", headers=auth).json()
    assert run["status"] == "succeeded", run
    [result] = client.get(f"/api/v1/runs/{run_id}/results", headers=auth).json()["items"]
    assert result["error"] and "cloud metadata address" in result["reason"], result
