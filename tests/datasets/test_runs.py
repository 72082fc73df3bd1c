"""add_evaluation end to end: validation, uploaded outputs, the worker, the SQL summary,
endpoint calls against a local OpenAI-compatible server, restart recovery."""

from __future__ import annotations

import io
import itertools
import json
import math
import statistics
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from app.core.db import utcnow
from app.evaluations import worker
from app.evaluations.worker import work_runs
from app.models import EvalResult, EvaluationRun
from app.models.runs import RunStatus
from tests.datasets.support import (
    Headers,
    all_pages,
    answer_chat,
    count_rows,
    drain_worker,
    local_server,
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
    """One call per row: as many calls as rows, every one a verdict."""
    return {
        "n": n,
        "calls": n,
        "errors": 0,
        "mean_score": pytest.approx(mean_score),
        "pass_rate": pytest.approx(pass_rate),
    }


def evaluator_rates(n: int, mean_score: float, pass_rate: float) -> dict[str, Any]:
    """by_evaluator adds the flip rate, unknown with one call per row."""
    return {**rates(n, mean_score, pass_rate), "flip_rate": None, "flip_rate_se": None}


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
        {"evaluator": "contains", **evaluator_rates(6, 3 / 6, 4 / 6)},
        {"evaluator": "exact_match", **evaluator_rates(6, 4 / 6, 4 / 6)},
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
        **evaluator_rates(6, 4 / 6, 4 / 6),
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
        answer_chat(self, answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def chat_server() -> Iterator[str]:
    ChatHandler.calls = []
    with local_server(ChatHandler) as url:
        yield url


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
        **evaluator_rates(7, 4 / 7, 4 / 7),
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
        project_id = session.get_one(EvaluationRun, resumed_id).project_id
        session.add_all(
            EvalResult(
                project_id=project_id,
                run_id=resumed_id,
                key="k1",
                evaluator=name,
                score=1.0,
                passed=True,
                reason="first",
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


def disagreeing_pairs(verdicts: list[bool]) -> float:
    """Share of ordered pairs of distinct calls of one row that disagree, counted."""
    pairs = list(itertools.permutations(range(len(verdicts)), 2))
    return sum(verdicts[i] != verdicts[j] for i, j in pairs) / len(pairs)


def expected_flip(per_row: list[list[bool]]) -> tuple[float, float]:
    """Mean over rows of the disagreeing share, and its standard error (rows' SD / sqrt(n))."""
    shares = [disagreeing_pairs(calls) for calls in per_row]
    return statistics.fmean(shares), statistics.stdev(shares) / math.sqrt(len(shares))


def test_uploaded_repeats_are_stored_scored_per_call_and_give_flip_rates(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    make_dataset(client, auth, "golden", ROWS)
    checkpoint_id = register(client, auth)
    # Three calls per row: repeat 1 answers k1 vaguely, repeat 2 answers k4 wrongly.
    changed = {(1, "k1"): "Refund soon", (2, "k4"): "wrong"}
    outputs = [
        {**output, "repeat": r, "output": changed.get((r, output["key"]), output["output"])}
        for r in range(3)
        for output in OUTPUTS
    ]
    body = {"checkpoint_id": checkpoint_id, "evaluators": EVALUATORS, "repeats": 3}
    created = add_evaluation(client, auth, **body, outputs=outputs)
    assert created.status_code == 202, created.text
    drain_worker(app)
    run = client.get(f"/api/v1/runs/{created.json()['run_id']}", headers=auth).json()
    assert run["status"] == "succeeded" and run["repeats"] == 3
    assert run["progress"] == {"done": 6, "total": 6}

    results = all_pages(client, auth, f"/api/v1/runs/{run['id']}/results")
    assert len(results) == 6 * 3 * 2
    verdicts: dict[tuple[str, str], list[bool]] = {}
    for result in sorted(results, key=lambda r: r["repeat"]):
        verdicts.setdefault((result["evaluator"], result["key"]), []).append(result["passed"])
    assert verdicts[("exact_match", "k1")] == [True, False, True]
    assert verdicts[("contains", "k4")] == [True, True, False]

    summary = {row["evaluator"]: row for row in run["summary"]["by_evaluator"]}
    assert run["summary"]["repeats"] == 3
    for name in ("exact_match", "contains"):
        per_row = [verdicts[(name, key)] for key, *_ in CASES]
        estimate, standard_error = expected_flip(per_row)
        passes = sum(sum(calls) for calls in per_row)
        assert summary[name]["n"] == 6 and summary[name]["calls"] == 18
        assert summary[name]["pass_rate"] == pytest.approx(passes / 18)
        assert summary[name]["flip_rate"] == pytest.approx(estimate)
        assert summary[name]["flip_rate_se"] == pytest.approx(standard_error)
    assert summary["exact_match"]["flip_rate"] == pytest.approx((2 / 3 + 2 / 3) / 6)
    billing = next(
        c
        for c in run["summary"]["by_cohort"]
        if (c["evaluator"], c["dimension"], c["value"]) == ("exact_match", "route", "billing")
    )
    assert (billing["n"], billing["calls"]) == (3, 9)
    assert billing["pass_rate"] == pytest.approx((2 + 0 + 3) / 9)


def test_repeats_are_validated_before_a_run_exists(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    make_dataset(client, auth, "golden", ROWS)
    checkpoint_id = register(client, auth)
    base = {"checkpoint_id": checkpoint_id, "evaluators": EVALUATORS, "repeats": 2}
    complete = [{**output, "repeat": r} for r in range(2) for output in OUTPUTS]
    cases = [
        ([*complete[:3], {**complete[3], "repeat": None}, *complete[4:]], "outputs[3].repeat"),
        ([*complete[:5], {**complete[5], "repeat": 2}, *complete[6:]], "outputs[5].repeat"),
        ([*complete, complete[7]], "outputs[12].key"),
        (complete[:-1], "outputs"),
        (OUTPUTS, "outputs[0].repeat"),
    ]
    for outputs, field in cases:
        sent = [{k: v for k, v in output.items() if v is not None} for output in outputs]
        response = add_evaluation(client, auth, **base, outputs=sent)
        assert response.status_code == 422, (field, response.text)
        assert response.json().get("field") == field, (field, response.json())
    missing = add_evaluation(client, auth, **base, outputs=complete[:-1]).json()["detail"]
    assert "1 (key, repeat) pair(s)" in missing and "'k6' repeat 1" in missing
    for repeats in (0, 21):
        response = add_evaluation(client, auth, **{**base, "repeats": repeats}, outputs=complete)
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "body.repeats"
    one_call = add_evaluation(
        client, auth, **{**base, "repeats": 1}, outputs=[{**o, "repeat": 1} for o in OUTPUTS]
    )
    assert one_call.status_code == 422 and one_call.json()["field"] == "outputs[0].repeat"
    assert count_rows(app, EvaluationRun) == 0


class FlakyChatHandler(ChatHandler):
    """Answers k1 right on its first call and vaguely on its second: a nondeterministic row."""

    seen: dict[str, int] = {}

    def do_POST(self) -> None:
        length = int(self.headers["content-length"])
        body = self.rfile.read(length)
        question = json.loads(body)["messages"][-1]["content"]
        calls = type(self).seen[question] = type(self).seen.get(question, 0) + 1
        if question == "question k1" and calls % 2 == 0:
            type(self).calls.append(question)
            answer_chat(self, "Soon")
            return
        self.rfile = io.BytesIO(body)
        super().do_POST()


@pytest.fixture
def flaky_server() -> Iterator[str]:
    FlakyChatHandler.calls = []
    FlakyChatHandler.seen = {}
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyChatHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_endpoint_runs_call_every_row_repeats_times(
    app: FastAPI, client: TestClient, auth: Headers, flaky_server: str
) -> None:
    make_dataset(client, auth, "golden", ROWS)
    checkpoint_id = register(
        client, auth, endpoint={"base_url": flaky_server, "model": "support-v1", "timeout_s": 5}
    )
    created = add_evaluation(
        client, auth, checkpoint_id=checkpoint_id, evaluators=EVALUATORS, repeats=2
    )
    assert created.status_code == 202, created.text
    drain_worker(app)
    run = client.get(f"/api/v1/runs/{created.json()['run_id']}", headers=auth).json()
    assert run["status"] == "succeeded" and run["output_source"] == "endpoint"
    assert sorted(FlakyChatHandler.calls) == sorted([f"question {k}" for k, *_ in CASES] * 2)
    k1 = client.get(f"/api/v1/runs/{run['id']}/results", params={"key": "k1"}, headers=auth)
    exact = sorted(
        (r["repeat"], r["passed"]) for r in k1.json()["items"] if r["evaluator"] == "exact_match"
    )
    assert exact == [(0, True), (1, False)]
    summary = {row["evaluator"]: row for row in run["summary"]["by_evaluator"]}
    # k1 is the only row whose two calls disagree (for exact_match): 1 of 6 rows.
    assert summary["exact_match"]["flip_rate"] == pytest.approx(1 / 6)
    assert summary["exact_match"]["calls"] == 12


def test_a_stale_run_with_repeats_resumes_after_its_last_finished_row(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    make_dataset(client, auth, "golden", ROWS)
    checkpoint_id = register(client, auth)
    outputs = [{**output, "repeat": r} for r in range(2) for output in OUTPUTS]
    run_id = add_evaluation(
        client,
        auth,
        checkpoint_id=checkpoint_id,
        evaluators=EVALUATORS,
        outputs=outputs,
        repeats=2,
    ).json()["run_id"]
    with app.state.sessionmaker() as session:
        # A worker died after committing k1's chunk: both calls, both evaluators.
        session.execute(
            update(EvaluationRun)
            .where(EvaluationRun.id == run_id)
            .values(
                status=RunStatus.running,
                attempts=1,
                heartbeat_at=utcnow() - timedelta(minutes=5),
                progress_done=1,
            )
        )
        project_id = session.get_one(EvaluationRun, run_id).project_id
        session.add_all(
            EvalResult(
                project_id=project_id,
                run_id=run_id,
                key="k1",
                repeat=repeat,
                evaluator=name,
                score=1.0,
                passed=True,
                reason="first",
            )
            for name in ("exact_match", "contains")
            for repeat in range(2)
        )
        session.commit()
    drain_worker(app)
    run = client.get(f"/api/v1/runs/{run_id}", headers=auth).json()
    assert run["status"] == "succeeded" and run["progress"] == {"done": 6, "total": 6}
    results = all_pages(client, auth, f"/api/v1/runs/{run_id}/results")
    assert len(results) == 6 * 2 * 2
    assert {r["reason"] for r in results if r["key"] == "k1"} == {"first"}


JUDGE_KEY_ENV = "OPENAI_API_KEY"  # a name the operator allows by default


def run_with_a_judge_that_cannot_judge(
    app: FastAPI, client: TestClient, auth: Headers, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """ROWS scored by exact_match and an llm_judge nothing answers (connection refused, no
    retry: no verdict on any row), k5's output not text (a fail): the succeeded run."""
    monkeypatch.setenv(JUDGE_KEY_ENV, "sk-test")
    make_dataset(client, auth, "golden", ROWS)
    checkpoint_id = register(client, auth)
    judge = {
        "name": "llm_judge",
        "params": {
            "base_url": "http://127.0.0.1:9/v1",
            "model": "j",
            "api_key_env": JUDGE_KEY_ENV,
            "max_retries": 0,
        },
    }
    outputs = [{**o, "output": {"not": "text"}} if o["key"] == "k5" else o for o in OUTPUTS]
    created = add_evaluation(
        client,
        auth,
        checkpoint_id=checkpoint_id,
        evaluators=[{"name": "exact_match"}, judge],
        outputs=outputs,
    )
    assert created.status_code == 202, created.text
    drain_worker(app)
    run: dict[str, Any] = client.get(
        f"/api/v1/runs/{created.json()['run_id']}", headers=auth
    ).json()
    assert run["status"] == "succeeded", run
    return run


def test_an_evaluator_that_cannot_judge_stores_errors_counted_apart_from_fails(
    app: FastAPI, client: TestClient, auth: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The judge cannot be reached: every judge result is an error (score 0, not passed,
    `error` true), the run still succeeds, and the summary counts the errors apart instead of
    reporting a 0 % pass rate. A row's own bad input (k5's output is not text) stays a fail,
    for the judge too."""
    run = run_with_a_judge_that_cannot_judge(app, client, auth, monkeypatch)

    results = all_pages(client, auth, f"/api/v1/runs/{run['id']}/results")
    judged = [r for r in results if r["evaluator"] == "llm_judge" and r["key"] != "k5"]
    assert len(judged) == 5
    assert all(r["error"] and (r["score"], r["passed"]) == (0.0, False) for r in judged)
    assert all("ConnectError" in r["details"]["error"] for r in judged)
    for k5 in (r for r in results if r["key"] == "k5"):
        assert k5["reason"].startswith("invalid input:") and k5["error"] is False
        assert (k5["score"], k5["passed"]) == (0.0, False)
    errors = all_pages(client, auth, f"/api/v1/runs/{run['id']}/results", error="true")
    assert sorted(r["key"] for r in errors) == sorted(r["key"] for r in judged)
    assert {r["evaluator"] for r in errors} == {"llm_judge"}

    summary = run["summary"]
    assert summary["by_evaluator"] == [
        {"evaluator": "exact_match", **evaluator_rates(6, 4 / 6, 4 / 6)},  # k5 failed anyway
        {
            "evaluator": "llm_judge",
            "n": 6,
            "calls": 6,
            "errors": 5,
            "mean_score": 0.0,  # k5's fail, the one verdict
            "pass_rate": 0.0,
            "flip_rate": None,
            "flip_rate_se": None,
        },
    ]
    risks = {r["risk"]: r for r in summary["by_risk"] if r["evaluator"] == "llm_judge"}
    assert (risks["high"]["n"], risks["high"]["errors"], risks["high"]["pass_rate"]) == (3, 2, 0)
    assert (risks["low"]["n"], risks["low"]["errors"], risks["low"]["pass_rate"]) == (2, 2, None)
    assert summary["output_errors"] == 0  # the endpoint's failures, not the evaluators'


LEASE_S = 1.0
SLOW_S = 2.0  # one row or one endpoint call: two leases


def shorten_the_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lease of LEASE_S, renewed every quarter of it, so slow work can take real time."""
    monkeypatch.setattr(worker, "LEASE", timedelta(seconds=LEASE_S))
    monkeypatch.setattr(worker, "HEARTBEAT_EVERY", LEASE_S / 4)


def uploaded_run_with_a_short_lease(
    client: TestClient, auth: Headers, monkeypatch: pytest.MonkeyPatch
) -> int:
    """A queued run of uploaded outputs, the worker's lease shortened: its id."""
    make_dataset(client, auth, "golden", ROWS)
    checkpoint_id = register(client, auth)
    created = add_evaluation(
        client, auth, checkpoint_id=checkpoint_id, evaluators=EVALUATORS, outputs=OUTPUTS
    )
    shorten_the_lease(monkeypatch)
    return int(created.json()["run_id"])


def test_a_worker_keeps_its_lease_through_a_row_that_outlasts_it(
    app: FastAPI, client: TestClient, auth: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first row takes two leases (an LLM judge that times out and retries), and another
    worker runs its loop as it finishes. The heartbeat thread renewed the lease meanwhile, so
    that worker finds nothing stale: every row is evaluated once, on the first attempt.
    Before, the heartbeat was written only between rows: the other worker re-queued the run
    and evaluated (and paid for) every row again."""
    run_id = uploaded_run_with_a_short_lease(client, auth, monkeypatch)
    sessions, settings = app.state.sessionmaker, app.state.settings
    evaluate_row = worker.evaluate_row
    evaluated: list[str] = []
    others: list[bool] = []

    def slow_first_row(*args: Any) -> Any:
        evaluated.append(args[1]["key"])
        if len(evaluated) == 1:
            time.sleep(SLOW_S)
            others.append(work_runs(sessions, settings))
        return evaluate_row(*args)

    monkeypatch.setattr(worker, "evaluate_row", slow_first_row)
    assert work_runs(sessions, settings) is True
    monkeypatch.undo()

    run = client.get(f"/api/v1/runs/{run_id}", headers=auth).json()
    assert run["status"] == "succeeded", (run["status"], run["error"])
    assert run["attempts"] == 1
    assert others == [False]  # the other worker found nothing to recover
    assert evaluated == [row["key"] for row in ROWS]  # once each


def test_a_worker_stops_at_the_next_row_once_its_run_was_taken(
    app: FastAPI, client: TestClient, auth: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another worker takes the run while the first row is slow. The heartbeat thread's next
    renewal finds it taken, and the worker evaluates no further row and writes nothing: the
    new owner's work is not paid for twice, nor overwritten."""
    run_id = uploaded_run_with_a_short_lease(client, auth, monkeypatch)
    sessions, settings = app.state.sessionmaker, app.state.settings
    evaluate_row = worker.evaluate_row
    evaluated: list[str] = []

    def taken_during_the_first_row(*args: Any) -> Any:
        evaluated.append(args[1]["key"])
        if len(evaluated) == 1:
            with sessions() as session:
                session.execute(
                    update(EvaluationRun)
                    .where(EvaluationRun.id == run_id)
                    .values(claimed_by="another-worker")
                )
                session.commit()
            time.sleep(SLOW_S)
        return evaluate_row(*args)

    monkeypatch.setattr(worker, "evaluate_row", taken_during_the_first_row)
    assert work_runs(sessions, settings) is True
    monkeypatch.undo()

    assert evaluated == [ROWS[0]["key"]]
    run = client.get(f"/api/v1/runs/{run_id}", headers=auth).json()
    assert (run["status"], run["progress"]["done"]) == ("running", 0)
    assert count_rows(app, EvalResult) == 0


def test_a_worker_keeps_its_lease_through_an_endpoint_call_that_outlasts_it(
    app: FastAPI,
    client: TestClient,
    auth: Headers,
    monkeypatch: pytest.MonkeyPatch,
    chat_server: str,
) -> None:
    """One endpoint call takes two leases and another worker runs its loop as it returns:
    the lease was renewed meanwhile, so every row's endpoint is called once. Before, the
    heartbeat was written only as answers came in: the other worker re-queued the run and
    called the endpoint for every row again."""
    make_dataset(client, auth, "golden", ROWS)
    served = register(
        client, auth, endpoint={"base_url": chat_server, "model": "support-v1", "timeout_s": 5}
    )
    created = add_evaluation(client, auth, checkpoint_id=served, evaluators=EVALUATORS)
    sessions, settings = app.state.sessionmaker, app.state.settings
    shorten_the_lease(monkeypatch)
    call_endpoint = worker.call_endpoint
    slowed = threading.Lock()
    others: list[bool] = []

    def one_slow_call(*args: Any) -> Any:
        if slowed.acquire(blocking=False):  # the first call only; the lock is never released
            time.sleep(SLOW_S)
            others.append(work_runs(sessions, settings))
        return call_endpoint(*args)

    monkeypatch.setattr(worker, "call_endpoint", one_slow_call)
    assert work_runs(sessions, settings) is True
    monkeypatch.undo()

    run = client.get(f"/api/v1/runs/{created.json()['run_id']}", headers=auth).json()
    assert run["status"] == "succeeded" and run["attempts"] == 1
    assert others == [False]
    assert sorted(ChatHandler.calls) == sorted(row["input"] for row in ROWS)
