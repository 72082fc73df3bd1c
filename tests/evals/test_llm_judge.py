"""LLMJudge against a real OpenAI-compatible HTTP server running on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from plumbline.evals import EvaluationError, LLMJudge
from plumbline.evals.llm_judge import parse_verdict

KEY_ENV = "PLUMBLINE_TEST_JUDGE_KEY"
SECRET = "sk-test-0123456789abcdef"


@dataclass
class Reply:
    status: int = 200
    body: str = ""
    delay_s: float = 0.0


def completion(content: str) -> Reply:
    message = {"role": "assistant", "content": content}
    return Reply(body=json.dumps({"choices": [{"index": 0, "message": message}]}))


@dataclass
class FakeChatServer:
    """Serves scripted replies in order and records every request it received."""

    replies: list[Reply] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    base_url: str = ""


def _handler(state: FakeChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            state.requests.append(
                {"path": self.path, "headers": dict(self.headers), "json": json.loads(body)}
            )
            reply = state.replies.pop(0) if state.replies else Reply(500, "no reply scripted")
            time.sleep(reply.delay_s)
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply.body.encode())))
                self.end_headers()
                self.wfile.write(reply.body.encode())
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def server() -> Iterator[FakeChatServer]:
    state = FakeChatServer()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def judge(server: FakeChatServer, monkeypatch: pytest.MonkeyPatch) -> LLMJudge:
    monkeypatch.setenv(KEY_ENV, SECRET)
    return LLMJudge(
        base_url=server.base_url,
        model="judge-small",
        api_key_env=KEY_ENV,
        rubric="Is the answer correct?",
        timeout_s=5,
        max_retries=2,
        backoff_s=0.01,
    )


def test_good_answer_is_scored_and_request_is_well_formed(
    judge: LLMJudge, server: FakeChatServer
) -> None:
    server.replies = [completion('{"score": 0.8, "reason": "mostly right"}')]
    result = judge.evaluate(input="2+2?", output="4", expected="4", context=["arithmetic"])
    assert (result.score, result.passed, result.reason) == (0.8, True, "mostly right")
    assert result.details == {"model": "judge-small", "attempts": 1}
    [request] = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert request["json"]["model"] == "judge-small"
    assert request["json"]["temperature"] == 0
    system, user = request["json"]["messages"]
    assert "Is the answer correct?" in system["content"]
    assert (
        user["content"] == 'INPUT:\n2+2?\n\nOUTPUT:\n4\n\nEXPECTED:\n4\n\nCONTEXT:\n["arithmetic"]'
    )


def test_fenced_json_is_accepted(judge: LLMJudge, server: FakeChatServer) -> None:
    server.replies = [completion('```json\n{"score": 0.25, "reason": "weak"}\n```')]
    result = judge.evaluate(output="4")
    assert (result.score, result.passed) == (0.25, False)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("The answer looks right, 9/10.", "judge reply is not JSON"),
        ('Sure! {"score": 1, "reason": "ok"}', "judge reply is not JSON"),
        ('{"score": 1.2, "reason": "great"}', "judge score must be a number in [0, 1]"),
        ('{"score": "0.9", "reason": "x"}', "judge score must be a number in [0, 1]"),
        ('{"score": true, "reason": "x"}', "judge score must be a number in [0, 1]"),
        ('{"score": 0.5}', 'exactly "score" and "reason"'),
        ('{"score": 0.5, "reason": "x", "confidence": 1}', 'exactly "score" and "reason"'),
        ('[0.5, "x"]', 'exactly "score" and "reason"'),
        ('{"score": 0.5, "reason": 3}', "judge reason must be a string"),
    ],
)
def test_anything_but_the_strict_verdict_fails_clearly(
    judge: LLMJudge, server: FakeChatServer, content: str, problem: str
) -> None:
    server.replies = [completion(content)]
    result = judge.evaluate(output="4")
    assert (result.score, result.passed, result.error) == (0.0, False, True)
    assert problem in result.reason
    assert result.details["raw"] == content
    assert len(server.requests) == 1  # a bad verdict is not retried


def test_server_error_is_retried_until_success(judge: LLMJudge, server: FakeChatServer) -> None:
    server.replies = [
        Reply(500, "{}"),
        Reply(429, "{}"),
        completion('{"score": 1, "reason": "ok"}'),
    ]
    result = judge.evaluate(output="4")
    assert (result.score, result.details["attempts"]) == (1.0, 3)
    assert len(server.requests) == 3


def test_retries_are_bounded(judge: LLMJudge, server: FakeChatServer) -> None:
    server.replies = [Reply(503, "{}")] * 5
    result = judge.evaluate(output="4")
    assert (result.score, result.error) == (0.0, True)  # no verdict: an error, not a fail
    assert result.reason == "judge endpoint failed 3 time(s), last: HTTP 503"
    assert len(server.requests) == 3


def test_client_error_is_not_retried_and_key_is_redacted(
    judge: LLMJudge, server: FakeChatServer
) -> None:
    server.replies = [Reply(401, json.dumps({"error": f"bad key {SECRET}"}))]
    result = judge.evaluate(output="4")
    assert result.reason == "judge endpoint rejected the request: HTTP 401"
    assert result.details["status"] == 401
    assert "[redacted]" in result.details["body"]
    assert SECRET not in json.dumps(result.details)
    assert len(server.requests) == 1


def test_timeout_fails_after_retries_then_recovers(judge: LLMJudge, server: FakeChatServer) -> None:
    impatient = LLMJudge(**{**judge.spec()["params"], "timeout_s": 0.3})
    server.replies = [Reply(delay_s=1.0, body="{}")] * 3
    result = impatient.evaluate(output="4")
    assert result.reason == "judge endpoint failed 3 time(s), last: ReadTimeout"
    server.replies = [Reply(delay_s=1.0, body="{}"), completion('{"score": 0.6, "reason": "ok"}')]
    recovered = impatient.evaluate(output="4")
    assert (recovered.score, recovered.details["attempts"]) == (0.6, 2)


def test_unreachable_endpoint_fails_the_row(monkeypatch: pytest.MonkeyPatch) -> None:
    judge = LLMJudge(base_url="http://127.0.0.1:9/v1", model="m", max_retries=1, backoff_s=0)
    result = judge.evaluate(output="4")
    assert result.reason == "judge endpoint failed 2 time(s), last: ConnectError"


def test_response_without_message_content_fails(judge: LLMJudge, server: FakeChatServer) -> None:
    server.replies = [Reply(body='{"choices": []}')]
    result = judge.evaluate(output="4")
    assert result.reason == "judge response has no choices[0].message.content"


def test_missing_key_variable_fails_before_any_request(
    judge: LLMJudge, server: FakeChatServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV)
    result = judge.evaluate(output="4")
    assert result.reason == f"environment variable {KEY_ENV} (judge API key) is not set"
    assert result.error is True
    assert server.requests == []


def test_no_key_configured_sends_no_authorization(server: FakeChatServer) -> None:
    server.replies = [completion('{"score": 1, "reason": "ok"}')]
    LLMJudge(base_url=server.base_url + "/", model="m").evaluate(output="4")
    assert "Authorization" not in server.requests[0]["headers"]
    assert server.requests[0]["path"] == "/v1/chat/completions"


def test_wrong_output_type_fails_without_calling_the_judge(
    judge: LLMJudge, server: FakeChatServer
) -> None:
    result = judge.evaluate(output={"a": 1})
    assert result.details["error"] == "output must be a string, got dict"
    assert result.error is False  # the row's own output: a fail
    assert server.requests == []


def test_key_never_appears_in_spec_or_logs(
    judge: LLMJudge, server: FakeChatServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.replies = [Reply(500, "{}"), completion('{"score": 1, "reason": "ok"}')]
    with caplog.at_level(logging.DEBUG):
        judge.evaluate(output="4")
    assert "llm_judge attempt 1/3 failed: HTTP 500" in caplog.text
    assert SECRET not in caplog.text
    assert SECRET not in json.dumps(judge.spec())
    assert judge.spec()["params"]["api_key_env"] == KEY_ENV


def test_parse_verdict_accepts_integer_scores_and_untagged_fences() -> None:
    assert parse_verdict('```\n{"score": 1, "reason": "ok"}\n```') == (1.0, "ok")
    with pytest.raises(EvaluationError, match="not JSON"):
        parse_verdict("")
