"""Calling a checkpoint's OpenAI-compatible endpoint for one dataset row.

`POST {base_url}/chat/completions`; retried on timeouts, connection errors, 429 and 5xx,
honouring Retry-After. A row whose call fails keeps the error in its output record."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx

ENDPOINT_ATTEMPTS = 3

REFUSED_STATUSES = frozenset({401, 404, 405})
"""What an endpoint answers a request it is not set up to take (a wrong key, model name or
URL): every call of a misconfigured run alike. Not 403: content filters and WAFs answer it to
the prompts they dislike, which are the model's answers to those prompts (review R1c: a
candidate refused on its 8% of high-risk rows failed the run, so no gate blocked it, and a
canary's 'promote' could then promote it without force)."""

MISCONFIGURED_SHARE = 0.05

MISCONFIGURED_AT_LEAST = 3

_HTTP_ERROR = "HTTP {status}: "


def chat_messages(row_input: Any) -> list[dict[str, Any]]:
    """A row's input as chat messages: text becomes one user message; a list of messages or
    an object with `messages` is sent as given."""
    if isinstance(row_input, str):
        return [{"role": "user", "content": row_input}]
    if isinstance(row_input, dict) and isinstance(row_input.get("messages"), list):
        return list(row_input["messages"])
    if isinstance(row_input, list) and all(isinstance(m, dict) for m in row_input):
        return row_input
    raise ValueError("input must be text, a list of chat messages or {messages: [...]}")


def call_endpoint(client: httpx.Client, endpoint: dict[str, Any], row_input: Any) -> dict[str, Any]:
    """One row's output record; failures become `error`, never an exception. Retries
    timeouts, connection errors, 429 and 5xx with backoff (honouring a short Retry-After)."""
    record: dict[str, Any] = {
        "output": None,
        "trajectory": None,
        "probability": None,
        "latency_ms": None,
        "error": None,
    }
    try:
        body = {"model": endpoint["model"], "messages": chat_messages(row_input)}
    except ValueError as exc:
        return {**record, "error": str(exc)}
    url = endpoint["base_url"].rstrip("/") + "/chat/completions"
    problem = "not attempted"
    for attempt in range(ENDPOINT_ATTEMPTS):
        if attempt:
            time.sleep(_backoff(attempt, problem))
        started = time.perf_counter()
        try:
            response = client.post(url, json=body)
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
            continue
        latency_ms = (time.perf_counter() - started) * 1000
        if response.status_code == 429 or response.status_code >= 500:
            problem = f"HTTP {response.status_code}"
            retry_after = response.headers.get("retry-after", "")
            if retry_after.isdigit():
                problem += f" retry-after {retry_after}"
            continue
        if response.status_code >= 400:
            error = _HTTP_ERROR.format(status=response.status_code) + response.text[:300]
            return {**record, "error": error}
        return {**record, "latency_ms": latency_ms, **_parse_completion(response)}
    return {**record, "error": f"failed after {ENDPOINT_ATTEMPTS} attempts: {problem}"[:2000]}


def refused_status(error: str | None) -> int | None:
    """The status of REFUSED_STATUSES an output's stored `error` says the endpoint answered
    (call_endpoint's own format), None for any other error or none."""
    for status in REFUSED_STATUSES:
        if error is not None and error.startswith(_HTTP_ERROR.format(status=status)):
            return status
    return None


def misconfigured(refused: int, calls: int, repeats: int) -> bool:
    """Whether `refused` answers of REFUSED_STATUSES among a run's `calls` calls to one
    endpoint (its rows x `repeats`) say it is misconfigured: more than MISCONFIGURED_SHARE of
    the calls, and at least MISCONFIGURED_AT_LEAST rows' worth (that many times `repeats`:
    one prompt refused at each of its repeats is one prompt; all of them, with fewer calls).
    Monotone in `refused`, so a run can be failed as soon as its count gets there
    (docs/statistics.md §7.6)."""
    floor = min(MISCONFIGURED_AT_LEAST * repeats, calls)
    return refused > MISCONFIGURED_SHARE * calls and refused >= floor


def refusal_problem(
    who: str, statuses: Counter[int], made: int, calls: int, repeats: int, fix: str
) -> str | None:
    """Why a run fails when `who`'s answers `statuses` (REFUSED_STATUSES counted) among the
    `made` of its `calls` calls made so far (rows x `repeats`) say it is misconfigured, None
    while they do not."""
    refused = sum(statuses.values())
    if not misconfigured(refused, calls, repeats):
        return None
    answered = ", ".join(f"HTTP {status} x{count}" for status, count in sorted(statuses.items()))
    return (
        f"{who} answered {answered}: {refused} of the {made} calls made ({refused / made:.1%}), "
        f"more than {MISCONFIGURED_SHARE:.0%} of the run's {calls} — not a few refused prompts "
        f"but a misconfiguration; check {fix}"
    )


def _backoff(attempt: int, problem: str) -> float:
    _, _, retry_after = problem.partition(" retry-after ")
    if retry_after:
        return min(float(retry_after), 5.0)
    return 0.2 * 2 ** (attempt - 1)


def _parse_completion(response: httpx.Response) -> dict[str, Any]:
    try:
        message = response.json()["choices"][0]["message"]
        content, tool_calls = message.get("content"), message.get("tool_calls")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return {"error": f"not an OpenAI chat completion: {response.text[:300]}"}
    if content is None and not tool_calls:
        return {"error": "the completion has neither content nor tool calls"}
    return {"output": content, "trajectory": tool_calls or None}
