"""Gates on runs whose outputs come from the checkpoints' endpoints, some of whose calls were
not answered (HTTP 500 after every retry): the candidate's unanswered calls are its fails,
the baseline's are its outage and no verdict on it (docs/statistics.md §7.6)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any, ClassVar

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.evaluations.endpoint_client import ENDPOINT_ATTEMPTS, misconfigured
from tests.datasets.support import all_pages, answer_chat, local_server
from tests.gates.support import EXPECTED, evaluated
from tests.gates.test_gates import (
    EVALUATOR,
    champion_and_candidate,
    checkpoint,
    comparison,
    gate,
    rows_of,
)

Headers = dict[str, str]


class ServedModels(BaseHTTPRequestHandler):
    """OpenAI-compatible chat completions for the models in `behaviour`: the expected answer
    to a row (its input is its key), another answer to the keys in the model's "wrong", and
    HTTP 500 (Retry-After: 0, so the worker's retries take no time) to those in "down", and
    to those in "down_first" on their first call (every attempt of it) only; HTTP 403 (a
    content filter) to those in "forbidden", and HTTP 401 to every call without the model's
    key in `api_keys`, where it has one; HTTP 404 to a model it does not serve. The worker
    calls each key once at a time, so `attempts` counts without a lock."""

    protocol_version = "HTTP/1.1"  # one connection per worker thread, not one per call
    behaviour: ClassVar[dict[str, dict[str, set[str]]]] = {}
    api_keys: ClassVar[dict[str, str]] = {}
    attempts: ClassVar[Counter[tuple[str, str]]] = Counter()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        key = body["messages"][-1]["content"]
        model = self.behaviour.get(body["model"])
        self.attempts[(body["model"], key)] += 1
        if model is None:
            self.refuse(404)
            return
        first_call = self.attempts[(body["model"], key)] <= ENDPOINT_ATTEMPTS
        api_key = self.api_keys.get(body["model"])
        if api_key is not None and self.headers.get("authorization") != f"Bearer {api_key}":
            self.refuse(401)
            return
        if key in model["forbidden"]:
            self.refuse(403)
            return
        if key in model["down"] or (key in model["down_first"] and first_call):
            self.send_response(500)
            self.send_header("retry-after", "0")
            self.send_header("content-length", "0")
            self.end_headers()
            return
        answer = "another answer" if key in model["wrong"] else EXPECTED
        answer_chat(self, answer)

    def refuse(self, status: int) -> None:
        payload = json.dumps({"error": {"message": f"refused ({status})"}}).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def served() -> Iterator[str]:
    ServedModels.behaviour = {}
    ServedModels.api_keys = {}
    ServedModels.attempts = Counter()
    with local_server(ServedModels) as url:
        yield url


def keys(route: str, numbers: range) -> set[str]:
    return {f"{route}-{i}" for i in numbers}


def served_checkpoint(
    client: TestClient,
    auth: Headers,
    base_url: str,
    version: str,
    down: set[str] = frozenset(),  # type: ignore[assignment]
    wrong: set[str] = frozenset(),  # type: ignore[assignment]
    champion: bool = False,
    down_first: set[str] = frozenset(),  # type: ignore[assignment]
    forbidden: set[str] = frozenset(),  # type: ignore[assignment]
    api_key_env: str | None = None,
) -> int:
    """A checkpoint of model `bot` served at `base_url` (promoted with `champion`), its
    endpoint's key read from `api_key_env`: 500 on `down`, and on `down_first` at the first
    call; 403 on `forbidden`; wrong on `wrong`. Its id."""
    ServedModels.behaviour[version] = {
        "down": set(down),
        "down_first": set(down_first),
        "wrong": set(wrong),
        "forbidden": set(forbidden),
    }
    endpoint = {"base_url": base_url, "model": version, "timeout_s": 5}
    if api_key_env is not None:
        endpoint["api_key_env"] = api_key_env
    registered = client.post(
        "/api/v1/checkpoints",
        json={"model": "bot", "version": version, "endpoint": endpoint},
        headers=auth,
    )
    assert registered.status_code in (200, 201), registered.text
    checkpoint_id = int(registered.json()["id"])
    if champion:
        promoted = client.post(
            "/api/v1/models/bot/promote",
            json={"checkpoint_id": checkpoint_id, "reason": "first champion"},
            headers=auth,
        )
        assert promoted.status_code == 200, promoted.text
    return checkpoint_id


def served_run(
    client: TestClient,
    auth: Headers,
    base_url: str,
    version: str,
    rows: list[dict[str, Any]],
    down: set[str] = frozenset(),  # type: ignore[assignment]
    wrong: set[str] = frozenset(),  # type: ignore[assignment]
    champion: bool = False,
    down_first: set[str] = frozenset(),  # type: ignore[assignment]
    repeats: int = 1,
) -> int:
    """The succeeded run of exact_match on `rows` from the answers of a served_checkpoint,
    `repeats` calls per row."""
    checkpoint_id = served_checkpoint(
        client, auth, base_url, version, down, wrong, champion, down_first
    )
    run = evaluated(
        client,
        auth,
        checkpoint_id,
        rows,
        evaluators=[{"name": EVALUATOR}],
        repeats=repeats,
    )
    assert run["status"] == "succeeded" and run["output_source"] == "endpoint", run
    assert run["summary"]["output_errors"] == len(down) * repeats + len(down_first)
    return int(run["id"])


def test_a_champion_run_taken_during_an_outage_does_not_pass_a_regression(
    app: FastAPI, client: TestClient, auth: Headers, served: str
) -> None:
    """The champion's endpoint timed out on 60 of 200 high-risk rows (30%) during its run; it
    answered the other 140 right. The candidate answers all 200 but gets 20 of those 140
    wrong. Counted as the champion's fails, its outage made it 0.70 against the candidate's
    0.90 and the regression passed. The champion's unanswered calls are no verdict on it:
    on the 140 rows both answered the candidate drops from 1.0 to 0.86, and it blocks."""
    rows = rows_of("safety", 200, "high")
    served_run(client, auth, served, "v1", rows, down=keys("safety", range(60)), champion=True)
    cand_run = served_run(client, auth, served, "v2", rows, wrong=keys("safety", range(60, 80)))
    result = gate(client, auth, cand_run)
    assert result["verdict"] == "block", result["reasons"]
    high = comparison(result, "risk", "high")
    assert (high["n"], high["unjudged"], high["lost"], high["won"]) == (140, 60, 20, 0)
    assert (high["baseline"], high["candidate"]) == (1.0, pytest.approx(120 / 140))
    assert high["status"] == "block"
    assert any("60 call(s) without an output" in note for note in result["notes"])


def test_the_numbers_shown_leave_out_the_calls_the_champion_did_not_answer(
    app: FastAPI, client: TestClient, auth: Headers, served: str
) -> None:
    """The champion's endpoint failed on 120 of 400 rows; the candidate answers every row
    right. Shown, the champion's rate is over the 280 rows it answered (1.0, not 0.70), the
    change is 0 (not +0.30), and the candidate, as good as the champion wherever it can be
    told, passes: the missing verdicts at their worst (the champion's as passes) equal the
    candidate's."""
    rows = rows_of("safety", 400, "high")
    served_run(client, auth, served, "v1", rows, down=keys("safety", range(120)), champion=True)
    cand_run = served_run(client, auth, served, "v2", rows)
    result = gate(client, auth, cand_run)
    assert result["verdict"] == "pass", result["reasons"]
    for dimension, value in [("all", "all"), ("risk", "high"), ("route", "safety")]:
        shown = comparison(result, dimension, value)
        assert (shown["n"], shown["unjudged"]) == (280, 120), (dimension, value)
        assert (shown["baseline"], shown["candidate"], shown["delta"]) == (1.0, 1.0, 0.0)
        assert (shown["lost"], shown["won"]) == (0, 0)
    assert any("120 call(s) without an output" in note for note in result["notes"])


def test_a_row_the_champion_answered_on_one_of_its_calls_keeps_the_answered_call(
    app: FastAPI, client: TestClient, auth: Headers, served: str
) -> None:
    """Two calls per row: the champion's endpoint failed the first call of 60 of 200 rows and
    answered the second, right. Those rows are judged on the calls answered (one each), not
    halved by the outage (0.85 overall) nor left out: n stays 200, the champion's rate is
    1.0 and its calls per row 1.7."""
    rows = rows_of("safety", 200, "high")
    flaky = keys("safety", range(60))
    served_run(client, auth, served, "v1", rows, down_first=flaky, champion=True, repeats=2)
    cand_run = served_run(client, auth, served, "v2", rows, repeats=2)
    result = gate(client, auth, cand_run)
    high = comparison(result, "risk", "high")
    assert (high["n"], high["unjudged"], high["baseline"], high["candidate"]) == (200, 0, 1.0, 1.0)
    assert (high["baseline_repeats"], high["candidate_repeats"]) == (pytest.approx(1.7), 2.0)
    assert any("60 call(s) without an output" in note for note in result["notes"])


def test_the_candidate_calls_its_endpoint_did_not_answer_are_its_fails(
    app: FastAPI, client: TestClient, auth: Headers, served: str
) -> None:
    """The champion answered all 200 high-risk rows right; the candidate's endpoint failed on
    60 of them. A candidate's unanswered call is its failure on that prompt, whatever the
    cause: the 60 rows are paired as lost, and the gate blocks."""
    rows = rows_of("safety", 200, "high")
    served_run(client, auth, served, "v1", rows, champion=True)
    cand_run = served_run(client, auth, served, "v2", rows, down=keys("safety", range(60)))
    result = gate(client, auth, cand_run)
    assert result["verdict"] == "block", result["reasons"]
    high = comparison(result, "risk", "high")
    assert (high["n"], high["unjudged"], high["lost"], high["won"]) == (200, 0, 60, 0)
    assert (high["baseline"], high["candidate"]) == (1.0, pytest.approx(0.7))
    assert not any("without an output" in note for note in result["notes"])


def uploaded_run(
    client: TestClient,
    auth: Headers,
    checkpoint_id: int,
    rows: list[dict[str, Any]],
    unanswered: set[str] = frozenset(),  # type: ignore[assignment]
    wrong: set[str] = frozenset(),  # type: ignore[assignment]
) -> int:
    """A run of exact_match on outputs a harness uploaded: no output (null) for the keys in
    `unanswered` (its calls timed out), another answer for `wrong`, the expected one else."""
    outputs = [
        {"key": row["key"]}
        if row["key"] in unanswered
        else {"key": row["key"], "output": "another answer" if row["key"] in wrong else EXPECTED}
        for row in rows
    ]
    run = evaluated(client, auth, checkpoint_id, rows, [{"name": EVALUATOR}], outputs=outputs)
    assert run["status"] == "succeeded" and run["output_source"] == "uploaded", run
    assert run["summary"]["output_errors"] == len(unanswered)
    return int(run["id"])


def test_uploaded_outputs_without_an_answer_are_calls_without_an_output(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The outage of the first test, through uploaded outputs: the champion's harness timed
    out on 60 of 200 high-risk rows and uploaded them with no output (an upload has to name
    every key, and has no other way to say a call failed); the candidate answers all 200 and
    gets 20 of the champion's 140 wrong. The null outputs were judged as the champion's
    answers and failed, so the champion read 0.70 against the candidate's 0.90 and the
    regression passed. An output with neither content nor tool calls is no answer, as the
    worker's endpoint calls take it: left out on the baseline's side, and the gate blocks.
    The candidate's own unanswered uploads stay its fails."""
    rows = rows_of("safety", 200, "high")
    champion, newcomer = champion_and_candidate(client, auth)
    uploaded_run(client, auth, champion, rows, unanswered=keys("safety", range(60)))
    cand_run = uploaded_run(client, auth, newcomer, rows, wrong=keys("safety", range(60, 80)))
    result = gate(client, auth, cand_run)
    assert result["verdict"] == "block", result["reasons"]
    high = comparison(result, "risk", "high")
    assert (high["n"], high["unjudged"], high["lost"], high["won"]) == (140, 60, 20, 0)
    assert any("60 call(s) without an output" in note for note in result["notes"])

    silent = checkpoint(client, auth, "v3")
    unanswered = keys("safety", range(140, 200))
    silent_gate = gate(client, auth, uploaded_run(client, auth, silent, rows, unanswered))
    assert silent_gate["verdict"] == "block", silent_gate["reasons"]
    own = comparison(silent_gate, "risk", "high")
    assert (own["n"], own["unjudged"], own["lost"], own["candidate"]) == (140, 60, 60, 80 / 140)


def test_an_upload_of_latencies_alone_is_answered_for_latency_budget(
    client: TestClient, auth: Headers
) -> None:
    """A latency-only suite uploads `{key, latency_ms}`: `latency_budget` reads nothing else.
    Review R1 found every row failed "no output" (10 output errors) once a call uploaded
    without output and trajectory became a call without an output; a call carrying a latency
    (or a probability) is an answer."""
    rows = rows_of("safety", 10, "high")
    champion, _newcomer = champion_and_candidate(client, auth)
    run = evaluated(
        client,
        auth,
        champion,
        rows,
        [{"name": "latency_budget", "params": {"max_ms": 500}}],
        outputs=[
            {"key": row["key"], "latency_ms": 100 if i else 900} for i, row in enumerate(rows)
        ],
    )
    assert run["status"] == "succeeded", run
    assert run["summary"]["output_errors"] == 0
    [latency] = run["summary"]["by_evaluator"]
    assert (latency["n"], latency["pass_rate"]) == (10, 0.9)


def test_a_run_its_endpoint_refused_fails_and_a_rerun_with_the_key_fixed_passes_alone(
    app: FastAPI,
    client: TestClient,
    auth: Headers,
    served: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The champion answers all 400 high-risk rows right; the candidate, as good, is served
    behind a key the worker held wrong: its endpoint answered HTTP 401 to every call. The run
    succeeded with 400 calls without an output, the candidate's fails (0/400), the gate
    blocked, and that run, pooled into every later gate on the version, blocked the re-run
    with the key fixed too (0.5 per row). Now the run fails as soon as its refusals are more
    than 5% of its 400 calls (after the first 64), naming the status, the count and the share;
    no gate takes it, it spends no attempt, and the re-run passes alone at attempt 1."""
    rows = rows_of("safety", 400, "high")
    served_run(client, auth, served, "v1", rows, champion=True)
    ServedModels.api_keys["v2"] = "right key"
    monkeypatch.setenv("OPENAI_API_KEY", "wrong key")
    candidate = served_checkpoint(client, auth, served, "v2", api_key_env="OPENAI_API_KEY")
    refused = evaluated(client, auth, candidate, rows, [{"name": EVALUATOR}])
    assert refused["status"] == "failed", refused
    assert "answered HTTP 401 x64: 64 of the 64 calls made (100.0%)" in refused["error"]
    assert "more than 5% of the run's 400" in refused["error"]
    assert "base_url, model and api_key_env" in refused["error"]
    assert sum(ServedModels.attempts[("v2", row["key"])] for row in rows) == 64
    not_gated = client.post("/api/v1/gates", json={"candidate_run_id": refused["id"]}, headers=auth)
    assert not_gated.status_code == 409, not_gated.text

    monkeypatch.setenv("OPENAI_API_KEY", "right key")
    rerun = evaluated(client, auth, candidate, rows, [{"name": EVALUATOR}])
    assert rerun["status"] == "succeeded", rerun
    result = gate(client, auth, rerun["id"])
    assert result["verdict"] == "pass", result["reasons"]
    assert (result["attempt"], result["candidate_run_ids"]) == (1, [rerun["id"]])
    high = comparison(result, "risk", "high")
    assert (high["n"], high["baseline"], high["candidate"]) == (400, 1.0, 1.0)


def test_a_few_prompts_the_endpoint_refused_are_those_rows_errors(
    app: FastAPI, client: TestClient, auth: Headers, served: str
) -> None:
    """A content filter answered HTTP 403 to 2 of the candidate's 400 calls (0.5%, not more
    than 5%): no misconfiguration, the run succeeds and the two calls are those rows' errors
    (calls without an output, the candidate's fails), as any other 4xx."""
    rows = rows_of("safety", 400, "high")
    served_run(client, auth, served, "v1", rows, champion=True)
    filtered = keys("safety", range(2))
    candidate = served_checkpoint(client, auth, served, "v2", forbidden=filtered)
    run = evaluated(client, auth, candidate, rows, [{"name": EVALUATOR}])
    assert run["status"] == "succeeded", run
    assert run["summary"]["output_errors"] == 2
    results = all_pages(client, auth, f"/api/v1/runs/{run['id']}/results")
    failed = {r["key"]: r["reason"] for r in results if not r["passed"]}
    assert sorted(failed) == sorted(filtered)
    assert all(reason.startswith("no output: HTTP 403: ") for reason in failed.values())
    high = comparison(gate(client, auth, run["id"]), "risk", "high")
    assert (high["n"], high["unjudged"], high["lost"]) == (400, 0, 2)


def test_a_run_of_two_calls_both_refused_fails(
    app: FastAPI, client: TestClient, auth: Headers, served: str
) -> None:
    """With fewer than 3 calls, all of them refused is a misconfiguration: a 2-row run whose
    endpoint knows no such model (HTTP 404 to both) fails."""
    candidate = served_checkpoint(client, auth, served, "v2")
    ServedModels.behaviour.pop("v2")  # the endpoint serves no such model
    run = evaluated(client, auth, candidate, rows_of("safety", 2, "high"), [{"name": EVALUATOR}])
    assert run["status"] == "failed", run
    assert "answered HTTP 404 x2: 2 of the 2 calls made (100.0%)" in run["error"]


def test_a_content_filter_refusing_a_high_risk_cohort_blocks_the_gate(
    app: FastAPI, client: TestClient, auth: Headers, served: str
) -> None:
    """Review R1c: the candidate's content filter answered HTTP 403 to its 32 high-risk rows
    (8% of 400 calls). Counted as a misconfiguration, that failed the run: no gate could
    block, so nothing stood against a canary's 'promote'. 403 is what filters answer to the
    prompts they dislike, so those are the candidate's fails, and the gate blocks."""
    rows = rows_of("general", 368, "low") + rows_of("safety", 32, "high")
    served_run(client, auth, served, "v1", rows, champion=True)
    refused = keys("safety", range(32))
    candidate = served_checkpoint(client, auth, served, "v2", forbidden=refused)
    run = evaluated(client, auth, candidate, rows, [{"name": EVALUATOR}])
    assert run["status"] == "succeeded", run
    assert run["summary"]["output_errors"] == 32
    result = gate(client, auth, run["id"])
    assert result["verdict"] == "block", result
    high = comparison(result, "risk", "high")
    assert (high["n"], high["lost"]) == (32, 32)


def test_one_prompt_refused_at_each_repeat_counts_as_one_prompt() -> None:
    """Review R1c: with repeats, one prompt answered 404 at each of its 3 repeats of a
    19-row run was 3 of 57 calls (5.3%, at the floor of 3) and failed the run. The floor is
    in rows: 3 rows' worth of calls."""
    assert not misconfigured(3, 57, repeats=3)
    assert misconfigured(9, 57, repeats=3)
    assert misconfigured(3, 20, repeats=1)
    assert not misconfigured(2, 20, repeats=1)
    assert misconfigured(2, 2, repeats=1)
