"""add_evaluation end to end: validation, uploaded outputs, the worker, the SQL summary,
endpoint calls against a local OpenAI-compatible server, restart recovery."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.core.db import utcnow
from app.evaluations.worker import work_runs
from app.models import EvalResult, EvaluationRun
from app.models.runs import RunStatus
from tests.datasets.support import (
    Headers,
    all_pages,
    count_rows,
    drain_worker,
    make_dataset,
    register,
)

# (key, risk, cohort, expected, output, exact_match score, contains score)
CASES = [
    ("k1", "high", {"route": "billing"}, "Refund in 5 days", "Refund in 5 days", 1, 1.0),
    ("k2", "high", {"route": "billing"}, "Refund in 3 days", "Refund soon", 0, 0.5),
    ("k3", "low", {"route": "billing"}, "No", "No", 1, 0.0),
    ("k4", "medium", {"route": "shipping"}, "Ships in 2 days", "Ships in 2 days", 1, 0.5),
    ("k5", "high", {"route": "shipping"}, "Lost", "Found", 0, 0.0),
    (
        "k6",
        "low",
        {"route": "shipping", "user_segment": "free"},
        "Refund 7 days",
        "Refund 7 days",
        1,
        1.0,
    ),
]
ROWS = [
    {"key": k, "input": f"question {k}", "risk": risk, "cohort": cohort, "expected": expected}
    for k, risk, cohort, expected, *_ in CASES
]
OUTPUTS = [{"key": k, "output": output} for k, _r, _c, _e, output, *_ in CASES]
EVALUATORS = [
    {"name": "exact_match"},
    {"name": "contains", "threshold": 0.5, "params": {"substrings": ["Refund", "days"]}},
]


def add_evaluation(client: TestClient, auth: Headers, dataset: str = "golden", **body: Any) -> Any:
    return client.post(f"/api/v1/datasets/{dataset}/evaluations", json=body, headers=auth)


def rates(n: int, mean_score: float, pass_rate: float) -> dict[str, Any]:
    return {"n": n, "mean_score": pytest.approx(mean_score), "pass_rate": pytest.approx(pass_rate)}


def test_uploaded_outputs_are_evaluated_and_summarized_in_sql(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    make_dataset(client, auth, "golden", ROWS)
    checkpoint_id = register(client, auth)
    created = add_evaluation(
        client, auth, checkpoint_id=checkpoint_id, evaluators=EVALUATORS, outputs=OUTPUTS
    )
    assert created.status_code == 202, created.text
    run_id = created.json()["run_id"]
    assert created.json()["status"] == "queued"
    queued = client.get(f"/api/v1/runs/{run_id}", headers=auth).json()
    assert queued["progress"] == {"done": 0, "total": 6} and queued["summary"] is None

    assert drain_worker(app) == 1
    run = client.get(f"/api/v1/runs/{run_id}", headers=auth).json()
    assert run["status"] == "succeeded", run
    assert run["progress"] == {"done": 6, "total": 6} and run["attempts"] == 1
    assert run["dataset"] == "golden" and run["dataset_version"] == 1
    assert run["evaluators"][1]["params"]["mode"] == "all"  # snapshot has the defaults

    # Hand-computed from CASES: exact scores 1,0,1,1,0,1; contains 1,.5,0,.5,0,1 (pass >= .5).
    summary = run["summary"]
    assert summary["by_evaluator"] == [
        {"evaluator": "contains", **rates(6, 3 / 6, 4 / 6)},
        {"evaluator": "exact_match", **rates(6, 4 / 6, 4 / 6)},
    ]
    assert summary["by_risk"] == [
        {"evaluator": "contains", "risk": "high", **rates(3, 1.5 / 3, 2 / 3)},
        {"evaluator": "contains", "risk": "low", **rates(2, 0.5, 0.5)},
        {"evaluator": "contains", "risk": "medium", **rates(1, 0.5, 1.0)},
        {"evaluator": "exact_match", "risk": "high", **rates(3, 1 / 3, 1 / 3)},
        {"evaluator": "exact_match", "risk": "low", **rates(2, 1.0, 1.0)},
        {"evaluator": "exact_match", "risk": "medium", **rates(1, 1.0, 1.0)},
    ]
    cohorts = {(c["evaluator"], c["dimension"], c["value"]): c for c in summary["by_cohort"]}
    assert cohorts[("exact_match", "all", "all")] == {
        "evaluator": "exact_match",
        "dimension": "all",
        "value": "all",
        **rates(6, 4 / 6, 4 / 6),
    }
    assert cohorts[("exact_match", "route", "billing")]["mean_score"] == pytest.approx(2 / 3)
    assert cohorts[("contains", "route", "shipping")]["mean_score"] == pytest.approx(0.5)
    assert cohorts[("contains", "route", "shipping")]["pass_rate"] == pytest.approx(2 / 3)
    assert cohorts[("contains", "user_segment", "free")]["n"] == 1
    assert len(cohorts) == 2 * 4  # all, route=billing, route=shipping, user_segment=free
    assert summary["output_errors"] == 0

    results = all_pages(client, auth, f"/api/v1/runs/{run_id}/results", limit=5)
    assert len(results) == 12
    failed_exact = all_pages(
        client,
        auth,
        f"/api/v1/runs/{run_id}/results",
        evaluator="exact_match",
        passed="false",
    )
    assert sorted(r["key"] for r in failed_exact) == ["k2", "k5"]
    k2 = client.get(f"/api/v1/runs/{run_id}/results", params={"key": "k2"}, headers=auth)
    assert {r["evaluator"]: r["score"] for r in k2.json()["items"]} == {
        "exact_match": 0.0,
        "contains": 0.5,
    }
    listed = client.get(f"/api/v1/runs?checkpoint_id={checkpoint_id}", headers=auth).json()
    assert [r["id"] for r in listed["items"]] == [run_id]
    assert client.get("/api/v1/runs?checkpoint_id=999", headers=auth).json()["items"] == []
    checkpoint = client.get(f"/api/v1/checkpoints/{checkpoint_id}", headers=auth).json()
    assert checkpoint["status"] == "evaluated"


def test_add_evaluation_validates_everything_before_creating_a_run(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    make_dataset(client, auth, "golden", ROWS)
    checkpoint_id = register(client, auth)
    base = {"checkpoint_id": checkpoint_id, "evaluators": EVALUATORS, "outputs": OUTPUTS}
    bad_outputs = [*OUTPUTS[:2], {"key": "nope", "output": "x"}, *OUTPUTS[3:]]
    cases = [
        ({"evaluators": [EVALUATORS[0], {"name": "vibes"}]}, "evaluators[1].name"),
        (
            {"evaluators": [{"name": "contains", "params": {"substrings": "Refund"}}]},
            "evaluators[0].params.substrings",
        ),
        ({"evaluators": [{"name": "exact_match", "threshold": 2}]}, "evaluators[0].threshold"),
        ({"evaluators": [EVALUATORS[0], EVALUATORS[0]]}, "evaluators[1].name"),
        ({"outputs": bad_outputs}, "outputs[2].key"),
        ({"outputs": [*OUTPUTS, OUTPUTS[0]]}, "outputs[6].key"),
        ({"outputs": OUTPUTS[:5]}, "outputs"),
        ({"outputs": None}, "outputs"),  # the checkpoint has no endpoint
        ({"suite": "missing", "evaluators": None}, "suite"),
        ({"checkpoint_id": 999}, "checkpoint_id"),
    ]
    for change, field in cases:
        body = {k: v for k, v in {**base, **change}.items() if v is not None}
        response = add_evaluation(client, auth, **body)
        assert response.status_code == 422, (change, response.text)
        assert response.json().get("field") == field, (change, response.json())
    both = add_evaluation(client, auth, **base, suite="x")
    assert both.status_code == 422 and "exactly one" in both.text
    assert add_evaluation(client, auth, dataset="nope", **base).status_code == 404
    assert add_evaluation(client, auth, **base, dataset_version=7).status_code == 404
    assert count_rows(app, EvaluationRun) == 0


def test_outputs_upload_as_jsonl_and_suites_saved_by_name(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    make_dataset(client, auth, "golden", ROWS)
    checkpoint_id = register(client, auth)
    saved = client.put("/api/v1/suites/support", json={"evaluators": EVALUATORS}, headers=auth)
    assert saved.status_code == 201, saved.text
    assert saved.json()["evaluators"][0] == {
        "name": "exact_match",
        "threshold": 1.0,
        "params": {"case_sensitive": True, "strip": True, "normalize_whitespace": False},
    }
    replaced = client.put(
        "/api/v1/suites/support",
        json={"description": "v2", "evaluators": EVALUATORS},
        headers=auth,
    )
    assert replaced.status_code == 200 and replaced.json()["description"] == "v2"
    bad = client.put(
        "/api/v1/suites/broken", json={"evaluators": [{"name": "regex"}]}, headers=auth
    )
    assert bad.status_code == 422 and bad.json()["field"].startswith("evaluators[0].params")
    assert [s["name"] for s in client.get("/api/v1/suites", headers=auth).json()["items"]] == [
        "support"
    ]
    assert client.get("/api/v1/suites/broken", headers=auth).status_code == 404

    jsonl = "\n".join(json.dumps(output) for output in OUTPUTS).encode()
    created = client.post(
        "/api/v1/datasets/golden/evaluations",
        data={"request": json.dumps({"checkpoint_id": checkpoint_id, "suite": "support"})},
        files={"outputs": ("outputs.jsonl", io.BytesIO(jsonl), "application/x-ndjson")},
        headers=auth,
    )
    assert created.status_code == 202, created.text
    drain_worker(app)
    run = client.get(f"/api/v1/runs/{created.json()['run_id']}", headers=auth).json()
    assert run["status"] == "succeeded" and run["suite"] == "support"
    assert run["summary"]["by_evaluator"][1] == {
        "evaluator": "exact_match",
        **rates(6, 4 / 6, 4 / 6),
    }

    bad_line = b'{"key": "k1", "output": "x"}\n{"key": "k2", "probability": 3}\n'
    rejected = client.post(
        "/api/v1/datasets/golden/evaluations",
        data={"request": json.dumps({"checkpoint_id": checkpoint_id, "suite": "support"})},
        files={"outputs": ("outputs.jsonl", io.BytesIO(bad_line), "application/x-ndjson")},
        headers=auth,
    )
    assert rejected.status_code == 422
    assert rejected.json()["field"] == "outputs line 2.probability"
    assert count_rows(app, EvaluationRun) == 1


class ChatHandler(BaseHTTPRequestHandler):
    """OpenAI-compatible /v1/chat/completions: echoes the question, fails on 'boom'."""

    calls: list[str] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        question = body["messages"][-1]["content"]
        type(self).calls.append(question)
        if "boom" in question:
            self.send_response(503)
            self.end_headers()
            return
        key = question.removeprefix("question ")
        answer = dict((k, output) for k, *_r, output, _s, _t in CASES).get(key, "?")
        payload = json.dumps(
            {"choices": [{"index": 0, "message": {"role": "assistant", "content": answer}}]}
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def chat_server() -> Iterator[str]:
    ChatHandler.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), ChatHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_endpoint_outputs_with_a_failing_row_that_never_fails_the_run(
    app: FastAPI, client: TestClient, auth: Headers, chat_server: str
) -> None:
    rows = [*ROWS, {"key": "k7", "input": "boom", "risk": "high"}]
    make_dataset(client, auth, "golden", rows)
    checkpoint_id = register(
        client, auth, endpoint={"base_url": chat_server, "model": "support-v1", "timeout_s": 5}
    )
    created = add_evaluation(client, auth, checkpoint_id=checkpoint_id, evaluators=EVALUATORS)
    assert created.status_code == 202, created.text
    drain_worker(app)
    run = client.get(f"/api/v1/runs/{created.json()['run_id']}", headers=auth).json()
    assert run["status"] == "succeeded" and run["output_source"] == "endpoint"
    assert run["progress"] == {"done": 7, "total": 7}
    assert run["summary"]["output_errors"] == 1
    # Six rows as in the uploaded case, plus k7 failing every evaluator.
    assert run["summary"]["by_evaluator"][1] == {
        "evaluator": "exact_match",
        **rates(7, 4 / 7, 4 / 7),
    }
    failed = client.get(
        f"/api/v1/runs/{run['id']}/results", params={"key": "k7"}, headers=auth
    ).json()["items"]
    assert {r["passed"] for r in failed} == {False}
    assert "HTTP 503" in failed[0]["reason"] and "3 attempts" in failed[0]["reason"]
    assert ChatHandler.calls.count("boom") == 3  # retried
    assert len(ChatHandler.calls) == 6 + 3


def test_a_run_left_running_by_a_dead_worker_resumes_then_fails_after_three_attempts(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    make_dataset(client, auth, "golden", ROWS)
    checkpoint_id = register(client, auth)
    body = {"checkpoint_id": checkpoint_id, "evaluators": EVALUATORS, "outputs": OUTPUTS}
    resumed_id = add_evaluation(client, auth, **body).json()["run_id"]
    doomed_id = add_evaluation(client, auth, **body).json()["run_id"]
    stale = utcnow() - timedelta(minutes=5)
    with app.state.sessionmaker() as session:
        # A worker died after writing k1's results on its first attempt...
        session.execute(
            update(EvaluationRun)
            .where(EvaluationRun.id == resumed_id)
            .values(status=RunStatus.running, attempts=1, heartbeat_at=stale, progress_done=1)
        )
        session.add_all(
            EvalResult(
                run_id=resumed_id, key="k1", evaluator=name, score=1.0, passed=True, reason="first"
            )
            for name in ("exact_match", "contains")
        )
        # ...and another run already died three times.
        session.execute(
            update(EvaluationRun)
            .where(EvaluationRun.id == doomed_id)
            .values(status=RunStatus.running, attempts=3, heartbeat_at=stale)
        )
        session.commit()
    assert work_runs(app.state.sessionmaker, app.state.settings) is True
    drain_worker(app)

    resumed = client.get(f"/api/v1/runs/{resumed_id}", headers=auth).json()
    assert resumed["status"] == "succeeded" and resumed["attempts"] == 2
    assert resumed["progress"] == {"done": 6, "total": 6}
    k1 = client.get(f"/api/v1/runs/{resumed_id}/results", params={"key": "k1"}, headers=auth)
    assert {r["reason"] for r in k1.json()["items"]} == {"first"}  # not evaluated twice
    assert len(all_pages(client, auth, f"/api/v1/runs/{resumed_id}/results")) == 12

    doomed = client.get(f"/api/v1/runs/{doomed_id}", headers=auth).json()
    assert doomed["status"] == "failed" and "3 attempts" in doomed["error"]
    with app.state.sessionmaker() as session:
        statuses = set(session.scalars(select(EvaluationRun.status)))
    assert RunStatus.running not in statuses and RunStatus.queued not in statuses
