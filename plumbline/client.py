"""A small Python client for Plumbline's REST API, mirroring the seed's workflow:

    client = Plumbline("http://127.0.0.1:8000", api_key)
    ckpt = client.register_checkpoint(model="support-bot", version="v7", kind="lora")
    run = client.dataset("support-golden").add_evaluation(
        checkpoint=ckpt, evaluators=[Groundedness(), JSONValidation(schema=...)], outputs=outputs
    )
    run.wait(timeout=300).summary

Evaluator objects from `plumbline.evals` become specs through their `.spec()`; plain dicts
({name, threshold?, params?}) work too. Any httpx.Client may be injected (tests pass the
app's TestClient).

`add_evaluation` is safe to retry: it sends an `Idempotency-Key` and re-sends the request
with the same key when no answer came back, so a run is made once however often it is sent."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import httpx


class PlumblineError(Exception):
    """The API answered with a problem+json error."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(f"HTTP {status}: {problem.get('detail', problem)}")
        self.status = status
        self.problem = problem


class HasSpec(Protocol):
    def spec(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Checkpoint:
    id: int
    model: str
    version: str
    data: dict[str, Any]


# Failures after which a keyed request is sent again: no answer came back (the server may
# have acted on the request), and the key makes a second delivery harmless.
RETRIED_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)
# Answers after which a keyed request is sent again: the server (or a proxy before it) failed
# or was overloaded, and the key makes a second delivery harmless.
RETRIED_STATUSES = frozenset({429, 500, 502, 503, 504})
# The longest wait between two attempts, whatever a Retry-After asks for.
MAX_RETRY_WAIT_S = 30.0


class Plumbline:
    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        http: httpx.Client | None = None,
        timeout_s: float = 60.0,
        attempts: int = 4,
        retry_backoff_s: float = 0.5,
    ) -> None:
        """`attempts` (at least 1) bounds how often a keyed request (`add_evaluation`) is
        sent; the waits between them double from `retry_backoff_s`."""
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.http = http or httpx.Client(timeout=timeout_s)
        self.attempts = attempts
        self.retry_backoff_s = retry_backoff_s

    def request(
        self, method: str, path: str, *, idempotency_key: str | None = None, **kwargs: Any
    ) -> Any:
        """The answer's JSON; anything but a 2xx raises PlumblineError with the status. A
        redirect is not followed (a POST must not be re-sent blindly): its error names the
        Location, usually a `url` that should be https or carry a path prefix.

        With an `idempotency_key` (sent as the `Idempotency-Key` header) the request is sent
        again, with the same key, up to `attempts` times in all, when no answer came back (a
        timeout, a connection refused, reset or closed without an answer: the server may
        have acted on it) or the answer was a 429, 500, 502, 503 or 504; the wait doubles
        from `retry_backoff_s`, or is the answer's Retry-After, and is at most 30 s. The last
        failure is raised as it came: httpx's error or PlumblineError."""
        headers = self.headers
        if idempotency_key is not None:
            headers = {**headers, "Idempotency-Key": idempotency_key}
        attempts_left = self.attempts if idempotency_key is not None else 1
        wait = self.retry_backoff_s
        while True:
            attempts_left -= 1
            try:
                response = self.http.request(method, f"{self.url}{path}", headers=headers, **kwargs)
            except RETRIED_ERRORS:
                if not attempts_left:
                    raise
                time.sleep(min(wait, MAX_RETRY_WAIT_S))
            else:
                if response.status_code not in RETRIED_STATUSES or not attempts_left:
                    if not response.is_success:
                        raise PlumblineError(response.status_code, _problem(response))
                    return response.json()
                time.sleep(min(_retry_after(response, wait), MAX_RETRY_WAIT_S))
            wait *= 2

    def register_checkpoint(self, **body: Any) -> Checkpoint:
        """POST /api/v1/checkpoints; registering the same body again returns the same one."""
        data = self.request("POST", "/api/v1/checkpoints", json=body)
        return Checkpoint(data["id"], data["model"], data["version"], data)

    def dataset(self, name: str) -> Dataset:
        return Dataset(self, name)

    def run(self, run_id: int) -> Run:
        return Run(self, run_id)

    def save_suite(
        self, name: str, evaluators: Iterable[HasSpec | Mapping[str, Any]], description: str = ""
    ) -> dict[str, Any]:
        body = {"evaluators": [as_spec(e) for e in evaluators], "description": description or None}
        return self.request("PUT", f"/api/v1/suites/{segment(name)}", json=body)


def _problem(response: httpx.Response) -> dict[str, Any]:
    """The API's problem+json object as it is; any other body (a proxy's HTML or JSON that is
    not an object) becomes its `detail`, so the status always reaches the caller."""
    if response.is_redirect:
        return {"detail": f"redirected to {response.headers.get('location')}"}
    try:
        body = response.json()
    except ValueError:
        return {"detail": response.text}
    return body if isinstance(body, dict) else {"detail": body}


def _retry_after(response: httpx.Response, default_s: float) -> float:
    """The answer's Retry-After in seconds, else `default_s` (no header, an HTTP date, or
    a value that is no number of seconds such as "nan", which time.sleep refuses)."""
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except ValueError:
        return default_s
    return max(seconds, 0.0) if math.isfinite(seconds) else default_s


def segment(name: str) -> str:
    """A name as one path segment: names may hold `#`, `?`, `%` or spaces, which sent raw
    would cut the path (a fragment, a query) or be decoded into another name ("r%41" is "rA")
    and reach another resource, or none."""
    return quote(name, safe="")


def as_spec(evaluator: HasSpec | Mapping[str, Any]) -> dict[str, Any]:
    return dict(evaluator) if isinstance(evaluator, Mapping) else evaluator.spec()


class Dataset:
    def __init__(self, client: Plumbline, name: str) -> None:
        self.client = client
        self.name = name
        self.path = f"/api/v1/datasets/{segment(name)}"

    def create(self, description: str | None = None) -> dict[str, Any]:
        body = {"name": self.name, "description": description}
        return self.client.request("POST", "/api/v1/datasets", json=body)

    def add_version(
        self,
        rows: list[dict[str, Any]] | None = None,
        *,
        file: str | Path | None = None,
        cohort_risk: Mapping[str, Mapping[str, str]] | None = None,
    ) -> dict[str, Any]:
        """From row dicts, or by uploading a .jsonl / .csv file (streamed by the server).
        `cohort_risk` declares cohorts the gate guards, e.g. {"route": {"billing": "high"}}.
        Rows and a file together are refused: one of them would silently not be the version."""
        if rows is not None and file is not None:
            raise ValueError("add_version takes rows or file, not both")
        path = f"{self.path}/versions"
        declared = {"cohort_risk": json.dumps(cohort_risk)} if cohort_risk else {}
        if file is None:
            body = {"rows": rows, **({"cohort_risk": cohort_risk} if cohort_risk else {})}
            return self.client.request("POST", path, json=body)
        with Path(file).open("rb") as handle:
            return self.client.request(
                "POST", path, data=declared, files={"file": (Path(file).name, handle)}
            )

    def add_evaluation(
        self,
        checkpoint: Checkpoint | int,
        evaluators: Iterable[HasSpec | Mapping[str, Any]] | None = None,
        *,
        suite: str | None = None,
        outputs: Iterable[Mapping[str, Any]] | None = None,
        dataset_version: int | None = None,
        repeats: int = 1,
        idempotency_key: str | None = None,
    ) -> Run:
        """Queues a run (the server answers 202) and returns its handle; without outputs the
        server calls the checkpoint's endpoint for every row, `repeats` times. With repeats
        > 1, uploaded outputs carry `repeat` (0..repeats-1) and cover every key that often.

        The request carries an `Idempotency-Key`: a fresh UUID per call unless given. When
        the answer is lost (a timeout, a dropped connection) or is a 429, 500, 502, 503 or
        504, the call is sent again with the same key, up to the client's `attempts` in all,
        and the server answers the run the first delivery made instead of making a second
        one (which the gate would pool as a repeat of the checkpoint). Pass your own key
        (e.g. naming the CI job and checkpoint) to make re-running the whole call, a
        notebook cell or a retried job, return the same run; the same key with a different
        request is a 422."""
        body: dict[str, Any] = {
            "checkpoint_id": checkpoint.id if isinstance(checkpoint, Checkpoint) else checkpoint,
        }
        if evaluators is not None:
            body["evaluators"] = [as_spec(e) for e in evaluators]
        if suite is not None:
            body["suite"] = suite
        if outputs is not None:
            body["outputs"] = [dict(output) for output in outputs]
        if dataset_version is not None:
            body["dataset_version"] = dataset_version
        if repeats != 1:
            body["repeats"] = repeats
        created = self.client.request(
            "POST",
            f"{self.path}/evaluations",
            json=body,
            idempotency_key=str(uuid.uuid4()) if idempotency_key is None else idempotency_key,
        )
        return Run(self.client, created["run_id"])


class Run:
    def __init__(self, client: Plumbline, run_id: int) -> None:
        self.client = client
        self.id = run_id
        self.data: dict[str, Any] = {}

    def refresh(self) -> Run:
        self.data = self.client.request("GET", f"/api/v1/runs/{self.id}")
        return self

    @property
    def status(self) -> str:
        return str(self.refresh().data["status"])

    @property
    def summary(self) -> dict[str, Any] | None:
        if self.data.get("status") not in ("succeeded", "failed"):
            self.refresh()
        return self.data.get("summary")

    def wait(self, timeout: float = 300.0, poll_s: float = 0.5) -> Run:
        """Until the run succeeds (returns) or fails (raises); TimeoutError past `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.refresh().data["status"]
            if status == "succeeded":
                return self
            if status == "failed":
                raise RuntimeError(f"run {self.id} failed: {self.data.get('error')}")
            if time.monotonic() > deadline:
                progress = self.data["progress"]
                raise TimeoutError(
                    f"run {self.id} still {status} after {timeout} s "
                    f"({progress['done']}/{progress['total']} rows)"
                )
            time.sleep(poll_s)

    def results(self, **filters: Any) -> list[dict[str, Any]]:
        """Every per-row result, following cursors; filters: evaluator, passed, key, error.
        A filter given as None is left out, as on the API (sent, it would be an empty value:
        `evaluator=` matches nothing, `passed=` is a 422)."""
        items: list[dict[str, Any]] = []
        params = {name: value for name, value in filters.items() if value is not None}
        params["limit"] = 1000
        while True:
            page = self.client.request("GET", f"/api/v1/runs/{self.id}/results", params=params)
            items += page["items"]
            if page["next_cursor"] is None:
                return items
            params["cursor"] = page["next_cursor"]
