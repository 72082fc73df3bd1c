"""The Python client's add_evaluation across a network that loses answers: a real loopback
proxy in front of the app passes each request on (the server commits the run) and drops, or
replaces with a gateway error, the answers it is told to. The client re-sends with the same
Idempotency-Key and the server makes one run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.models import EvaluationRun
from plumbline.client import Plumbline, PlumblineError
from tests.conftest import new_key
from tests.datasets.support import count_rows, local_server, make_dataset, register

ROWS = [{"key": "k1", "input": "hello", "expected": "hi"}]
OUTPUTS = [{"key": "k1", "output": "hi"}]
FORWARDED_HEADERS = ("authorization", "content-type", "idempotency-key")


class LossyProxy:
    """What the proxy saw, and how many answers to add_evaluation it still spoils: `drop`
    closes the connection without an answer, `502` answers a gateway error (a 503 with
    `retry_after` as its Retry-After when given)."""

    def __init__(self, spoil: str, times: int, retry_after: str | None = None) -> None:
        self.spoil = spoil
        self.times = times
        self.retry_after = retry_after  # when set, the spoiled answer is a 503 carrying it
        self.keys: list[str | None] = []


@contextmanager
def lossy_proxy(http: TestClient, proxy: LossyProxy) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.forward()

        def do_POST(self) -> None:
            self.forward()

        def forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            headers = {k: v for k, v in self.headers.items() if k.lower() in FORWARDED_HEADERS}
            answer = http.request(self.command, self.path, content=body, headers=headers)
            if self.command == "POST" and self.path.endswith("/evaluations"):
                proxy.keys.append(self.headers.get("idempotency-key"))
                if proxy.times > 0:
                    proxy.times -= 1
                    if proxy.spoil == "drop":
                        self.close_connection = True
                        return  # the run is committed; its answer never reaches the client
                    answer = httpx.Response(502, text="upstream timed out")
                    if proxy.retry_after is not None:
                        answer = httpx.Response(
                            503, text="busy", headers={"retry-after": proxy.retry_after}
                        )
            self.send_response(answer.status_code)
            self.send_header("content-type", answer.headers.get("content-type", "text/plain"))
            self.send_header("content-length", str(len(answer.content)))
            if "retry-after" in answer.headers:
                self.send_header("retry-after", answer.headers["retry-after"])
            self.end_headers()
            self.wfile.write(answer.content)

        def log_message(self, *args: Any) -> None:
            pass

    with local_server(Handler) as base_url:
        yield base_url.removesuffix("/v1")


@pytest.fixture
def golden(client: TestClient, auth: dict[str, str]) -> int:
    make_dataset(client, auth, "golden", ROWS)
    return register(client, auth)


@pytest.mark.parametrize("spoil", ["drop", "502"])
def test_a_lost_answer_is_retried_with_the_same_key_and_makes_one_run(
    app: FastAPI, client: TestClient, golden: int, spoil: str
) -> None:
    proxy = LossyProxy(spoil, times=2)
    with lossy_proxy(client, proxy) as url:
        plumbline = Plumbline(url, new_key(app, "acme"), retry_backoff_s=0)
        run = plumbline.dataset("golden").add_evaluation(
            golden, [{"name": "exact_match"}], outputs=OUTPUTS
        )
        assert run.refresh().data["status"] == "queued"
    assert len(proxy.keys) == 3 and len(set(proxy.keys)) == 1
    assert count_rows(app, EvaluationRun) == 1


def test_the_client_gives_up_after_its_attempts_having_made_one_run(
    app: FastAPI, client: TestClient, golden: int
) -> None:
    proxy = LossyProxy("drop", times=10)
    with lossy_proxy(client, proxy) as url:
        plumbline = Plumbline(url, new_key(app, "acme"), attempts=3, retry_backoff_s=0)
        with pytest.raises(httpx.RemoteProtocolError):
            plumbline.dataset("golden").add_evaluation(
                golden, [{"name": "exact_match"}], outputs=OUTPUTS
            )
    assert len(proxy.keys) == 3
    assert count_rows(app, EvaluationRun) == 1


def test_each_call_has_a_fresh_key_unless_the_caller_names_one(
    app: FastAPI, client: TestClient, golden: int
) -> None:
    proxy = LossyProxy("drop", times=0)
    with lossy_proxy(client, proxy) as url:
        dataset = Plumbline(url, new_key(app, "acme"), retry_backoff_s=0).dataset("golden")
        evaluate = dict(checkpoint=golden, evaluators=[{"name": "exact_match"}], outputs=OUTPUTS)
        # Two deliberate calls are two runs.
        first, second = dataset.add_evaluation(**evaluate), dataset.add_evaluation(**evaluate)
        assert first.id != second.id
        # A named key makes the whole call repeatable (a re-run notebook cell, a CI retry).
        named = dataset.add_evaluation(**evaluate, idempotency_key="nightly-v7")
        assert dataset.add_evaluation(**evaluate, idempotency_key="nightly-v7").id == named.id
        with pytest.raises(PlumblineError) as refused:
            dataset.add_evaluation(**evaluate, repeats=2, idempotency_key="nightly-v7")
        assert refused.value.status == 422
        assert refused.value.problem["field"] == "Idempotency-Key"
    assert len(set(proxy.keys)) == 3 and proxy.keys[2:] == ["nightly-v7"] * 3
    assert count_rows(app, EvaluationRun) == 3


def test_an_answer_the_api_gave_on_purpose_is_not_retried(
    app: FastAPI, client: TestClient, golden: int
) -> None:
    proxy = LossyProxy("drop", times=0)
    with lossy_proxy(client, proxy) as url:
        dataset = Plumbline(url, new_key(app, "acme"), retry_backoff_s=0).dataset("golden")
        with pytest.raises(PlumblineError) as refused:
            dataset.add_evaluation(golden, [{"name": "vibes"}], outputs=OUTPUTS)
    assert refused.value.status == 422
    assert len(proxy.keys) == 1
    assert count_rows(app, EvaluationRun) == 0


def test_attempts_must_be_at_least_one() -> None:
    with pytest.raises(ValueError, match="attempts"):
        Plumbline("http://plumbline.test", "pl_key", attempts=0)


@pytest.mark.parametrize("retry_after", ["nan", "-1", "soon", "Wed, 21 Oct 2037 07:28:00 GMT"])
def test_a_retry_after_that_is_no_number_of_seconds_is_waited_as_the_backoff(
    app: FastAPI, client: TestClient, golden: int, retry_after: str
) -> None:
    """A proxy's Retry-After that is not a usable count of seconds (NaN, a date, a word) is
    not a reason to fail the call: "nan" reached time.sleep and raised ValueError instead of
    retrying, so the caller lost the run the server had made."""
    proxy = LossyProxy("503", times=1, retry_after=retry_after)
    with lossy_proxy(client, proxy) as url:
        plumbline = Plumbline(url, new_key(app, "acme"), retry_backoff_s=0)
        run = plumbline.dataset("golden").add_evaluation(
            golden, [{"name": "exact_match"}], outputs=OUTPUTS
        )
        assert run.refresh().data["status"] == "queued"
    assert len(proxy.keys) == 2 and len(set(proxy.keys)) == 1
    assert count_rows(app, EvaluationRun) == 1
