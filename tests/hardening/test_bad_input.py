"""Hostile and broken input everywhere: every bad request gets a 4xx problem naming what is
wrong and writes nothing; injection strings are stored verbatim and rendered escaped."""

from __future__ import annotations

import gzip
from typing import Any
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.core.errors import PROBLEM_JSON
from app.core.settings import Settings
from app.models import (
    Checkpoint,
    Dataset,
    DatasetRow,
    DatasetVersion,
    Event,
    Feedback,
    Model,
    WebhookEndpoint,
)
from tests.web.test_pages import sign_in

Headers = dict[str, str]

# Free text may hold anything; names may not contain "/" (they are path segments).
SCRIPT = "<script>alert(1)</script>"
TEXT_ATTACK = f"\"'>{SCRIPT}<img src=x onerror=alert(2)>'; DROP TABLE events; -- 1' OR '1'='1"
NAME_ATTACK = "x'\"><script>alert(1)<\\script> OR 1=1; DROP TABLE models; --"
RAW_MARKERS = ("<script>alert(1)", "<img src=x")
ESCAPED_MARKER = "&lt;script&gt;alert(1)"

TABLES = (Model, Checkpoint, Dataset, DatasetVersion, DatasetRow, Event, Feedback, WebhookEndpoint)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Webhook targets on loopback are allowed so that one can be configured offline; events
    are kept for good (a window reaching before year 1), so that ingest accepts the calendar's
    first instant, which an ordinary retention window refuses."""
    return settings.model_copy(update={"webhook_allow_private": True, "retention_days": 10**6})


def row_counts(app: FastAPI) -> dict[str, int]:
    """Counted in a short session of its own: an open SQLite transaction would block the app."""
    with app.state.sessionmaker() as session:
        return {
            t.__tablename__: session.scalar(select(func.count()).select_from(t)) or 0
            for t in TABLES
        }


def assert_problem(response: Any, status: int | tuple[int, ...]) -> dict[str, Any]:
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code and body["detail"]
    return body


def checkpoint(client: TestClient, auth: Headers, **body: Any) -> dict[str, Any]:
    body = {"model": "bot", "version": "v1", **body}
    response = client.post("/api/v1/checkpoints", json=body, headers=auth)
    assert response.status_code in (200, 201), response.text
    result: dict[str, Any] = response.json()
    return result


JSON_ROUTES = (
    "/api/v1/checkpoints",
    "/api/v1/events",
    "/api/v1/datasets",
    "/api/v1/feedback",
    "/api/v1/webhooks",
    "/api/v1/gates",
    "/api/v1/monitors",
)

MALFORMED_BODIES = {
    "100k nested arrays": b"[" * 100_000 + b"]" * 100_000,
    "100k nested objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "invalid UTF-8": b'{"model": "\xff\xfe", "version": "v1"}',
    "NaN": b'{"model": "bot", "version": "v1", "training": {"learning_rate": NaN}}',
    "Infinity": b'{"events": [], "x": Infinity}',
    "out-of-range number": b'{"model": "bot", "version": "v1", "metadata": {"lr": -1e400}}',
    "truncated": b'{"model": "bot", "version": ',
    "not an object": b'"just a string"',
}


@pytest.mark.parametrize("name", MALFORMED_BODIES)
def test_malformed_json_is_a_4xx_problem_on_every_json_route_and_writes_nothing(
    client: TestClient, auth: Headers, app: FastAPI, name: str
) -> None:
    before = row_counts(app)
    for path in JSON_ROUTES:
        response = client.post(
            path,
            content=MALFORMED_BODIES[name],
            headers={**auth, "content-type": "application/json"},
        )
        body = assert_problem(response, (400, 422))
        assert "body" in body["detail"] or body.get("errors"), f"{path}: {body}"
    assert row_counts(app) == before


def test_wrong_types_and_huge_fields_are_named(
    client: TestClient, auth: Headers, app: FastAPI
) -> None:
    before = row_counts(app)
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("/api/v1/checkpoints", {"model": 5, "version": "v1"}, "body.model"),
        ("/api/v1/checkpoints", {"model": "bot", "version": ["v1"]}, "body.version"),
        ("/api/v1/checkpoints", {"model": "m" * 10_000, "version": "v1"}, "body.model"),
        ("/api/v1/checkpoints", {"model": "bot", "version": "v1", "tags": "x"}, "body.tags"),
        ("/api/v1/datasets", {"name": {"a": 1}}, "body.name"),
        ("/api/v1/feedback", {"trace_id": "t", "value": "sideways"}, "body.value"),
        ("/api/v1/feedback", {"trace_id": "t", "value": "up", "comment": "c" * 5000}, "comment"),
        ("/api/v1/webhooks", {"url": "http://127.0.0.1:9/", "events": "all"}, "body.events"),
        ("/api/v1/events", {"events": {"not": "a list"}}, "events"),
    ]
    for path, payload, field in cases:
        body = assert_problem(client.post(path, json=payload, headers=auth), 422)
        assert field in body["detail"], (path, body)
    huge = {"model": "bot", "version": "v1", "artifact_uri": "s3://" + "a" * 3_000_000}
    assert_problem(client.post("/api/v1/checkpoints", json=huge, headers=auth), (413, 422))
    assert row_counts(app) == before


def test_ids_beyond_the_database_range_are_a_4xx(client: TestClient, auth: Headers) -> None:
    """PostgreSQL ids are 32-bit, SQLite's 64-bit: neither may turn a big number into a 500."""
    for big in (2**31, 2**63, 2**70):
        assert_problem(client.get(f"/api/v1/checkpoints/{big}", headers=auth), (404, 422))
        assert_problem(client.get(f"/api/v1/runs/{big}/results", headers=auth), (404, 422))
        assert_problem(
            client.post("/api/v1/gates", json={"candidate_run_id": big}, headers=auth),
            (404, 422),
        )
    assert_problem(client.get("/api/v1/traces/a%00b", headers=auth), (404, 422))


def test_timestamps_are_accepted_in_years_1_to_9999_and_stored_in_utc(
    client: TestClient, auth: Headers
) -> None:
    """The rule: any ISO 8601 time from the retention cutoff (PLUMBLINE_RETENTION_DAYS; year 1
    here) to the server's clock (plus the allowed skew, PLUMBLINE_INGEST_MAX_CLOCK_SKEW_S) is
    accepted; a naive one is UTC, an offset one
    is converted to UTC; anything else is a per-event rejection naming `timestamp`."""
    checkpoint(client, auth)
    sent = {
        "year-1": ("0001-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
        "naive": ("2024-03-01T12:00:00", "2024-03-01T12:00:00Z"),
        "offset": ("2024-03-01T12:00:00+05:00", "2024-03-01T07:00:00Z"),
    }
    events = [
        {"trace_id": name, "timestamp": ts, "model": "bot", "checkpoint_version": "v1"}
        for name, (ts, _) in sent.items()
    ]
    bad = [
        "10000-01-01T00:00:00Z",
        "9999-12-31T23:59:59Z",  # a time, but far ahead of the server's clock
        "-0001-01-01T00:00:00Z",
        "2024-02-30T00:00:00Z",
        "yesterday",
    ]
    events += [
        {"trace_id": f"bad-{i}", "timestamp": ts, "model": "bot", "checkpoint_version": "v1"}
        for i, ts in enumerate(bad)
    ]
    result = client.post("/api/v1/events", json={"events": events}, headers=auth).json()
    assert result["accepted"] == len(sent)
    assert [(r["index"], r["field"]) for r in result["rejected"]] == [
        (len(sent) + i, "timestamp") for i in range(len(bad))
    ]
    for name, (_, stored) in sent.items():
        trace = client.get(f"/api/v1/traces/{name}", headers=auth).json()
        assert [e["timestamp"] for e in trace["events"]] == [stored]
    for i in range(len(bad)):
        assert client.get(f"/api/v1/traces/bad-{i}", headers=auth).status_code == 404


def test_a_partly_accepted_batch_writes_exactly_what_it_reported(
    client: TestClient, auth: Headers, app: FastAPI
) -> None:
    checkpoint(client, auth)
    good = {"model": "bot", "checkpoint_version": "v1", "timestamp": "2024-03-01T00:00:00Z"}
    events = [
        {**good, "trace_id": "ok-1"},
        {**good, "trace_id": "bad-type", "latency_ms": "slow"},
        {**good, "trace_id": "ok-2", "input": TEXT_ATTACK},
        {**good, "trace_id": "unknown", "checkpoint_version": "v404"},
        {**good, "trace_id": "bad-id", "checkpoint_id": 2**40, "checkpoint_version": None},
        {**good, "trace_id": "nul", "output": "a\u0000b"},
        {**good, "trace_id": "ok-1"},
    ]
    before = row_counts(app)["events"]
    result = client.post("/api/v1/events", json={"events": events}, headers=auth).json()
    assert result["accepted"] == 2 and result["duplicates"] == 1
    assert sorted(r["index"] for r in result["rejected"]) == [1, 3, 4, 5]
    assert row_counts(app)["events"] == before + result["accepted"]
    stored = {e["trace_id"] for e in client.get("/api/v1/events", headers=auth).json()["items"]}
    assert stored == {"ok-1", "ok-2"}


def test_malformed_uploads_are_refused_whole(
    client: TestClient, auth: Headers, app: FastAPI
) -> None:
    client.post("/api/v1/datasets", json={"name": "golden"}, headers=auth)
    before = row_counts(app)
    jsonl = b'{"key": "a", "input": "x"}\n{"key": "b", "input": \n{"key": "c", "input": "z"}\n'
    body = assert_problem(
        client.post(
            "/api/v1/datasets/golden/versions",
            files={"file": ("rows.jsonl", jsonl)},
            headers=auth,
        ),
        422,
    )
    assert body["row"] == 2
    csv = b"key,input,colour\na,x,red\n"
    body = assert_problem(
        client.post(
            "/api/v1/datasets/golden/versions", files={"file": ("rows.csv", csv)}, headers=auth
        ),
        422,
    )
    assert "colour" in body["detail"]
    not_utf8 = b'{"key": "a", "input": "\xff"}\n'
    assert_problem(
        client.post(
            "/api/v1/datasets/golden/versions",
            files={"file": ("rows.jsonl", not_utf8)},
            headers=auth,
        ),
        422,
    )
    assert row_counts(app) == before


def test_truncated_or_garbage_otlp_is_a_400_and_writes_nothing(
    client: TestClient, auth: Headers, app: FastAPI
) -> None:
    before = row_counts(app)
    truncated = b"\x0a\x85\x01\x0a\x10"  # a resource_spans field announcing 133 bytes, then 2
    for body, encoding in (
        (truncated, None),
        (gzip.compress(truncated), "gzip"),
        (b"\x1f\x8b", "gzip"),
    ):
        headers = {**auth, "content-type": "application/x-protobuf"}
        if encoding:
            headers["content-encoding"] = encoding
        response = client.post("/v1/traces", content=body, headers=headers)
        assert response.status_code == 400, response.content
        assert response.headers["content-type"] == "application/x-protobuf"
    response = client.post(
        "/v1/traces",
        content=b'{"resourceSpans": [',
        headers={**auth, "content-type": "application/json"},
    )
    assert response.status_code == 400
    assert row_counts(app) == before


def test_injection_strings_are_stored_verbatim_and_rendered_escaped(
    client: TestClient, auth: Headers, admin_key: str
) -> None:
    ckpt = checkpoint(
        client,
        auth,
        model=NAME_ATTACK,
        version=NAME_ATTACK,
        base_model=TEXT_ATTACK,
        artifact_uri=TEXT_ATTACK,
        tags=[TEXT_ATTACK],
        training={"optimizer": TEXT_ATTACK, "data": TEXT_ATTACK},
    )
    read = client.get(f"/api/v1/checkpoints/{ckpt['id']}", headers=auth).json()
    assert (read["model"], read["version"], read["base_model"]) == (
        NAME_ATTACK,
        NAME_ATTACK,
        TEXT_ATTACK,
    )
    assert read["artifact_uri"] == TEXT_ATTACK and read["tags"] == [TEXT_ATTACK]
    assert read["training"]["optimizer"] == TEXT_ATTACK

    client.post("/api/v1/datasets", json={"name": NAME_ATTACK}, headers=auth)
    row = {
        "key": TEXT_ATTACK,
        "input": TEXT_ATTACK,
        "expected": TEXT_ATTACK,
        "cohort": {"route": TEXT_ATTACK},
        "label": TEXT_ATTACK,
    }
    dataset_path = f"/api/v1/datasets/{quote(NAME_ATTACK, safe='')}"
    created = client.post(f"{dataset_path}/versions", json={"rows": [row]}, headers=auth)
    assert created.status_code == 201, created.text
    rows = client.get(f"{dataset_path}/versions/1/rows", headers=auth).json()["items"]
    assert {k: rows[0][k] for k in row} == row

    event = {
        "trace_id": "trace-attack",
        "timestamp": "2024-03-01T00:00:00Z",
        "model": NAME_ATTACK,
        "checkpoint_version": NAME_ATTACK,
        "input": TEXT_ATTACK,
        "output": TEXT_ATTACK,
        "cohort": {"route": TEXT_ATTACK, "user_segment": TEXT_ATTACK},
    }
    assert (
        client.post("/api/v1/events", json={"events": [event]}, headers=auth).json()["accepted"]
        == 1
    )
    feedback = {"trace_id": "trace-attack", "value": "down", "comment": TEXT_ATTACK}
    assert client.post("/api/v1/feedback", json=feedback, headers=auth).status_code == 200
    trace = client.get("/api/v1/traces/trace-attack", headers=auth).json()
    stored = trace["events"][0]
    assert (stored["input"], stored["output"], stored["cohort"]["route"]) == (TEXT_ATTACK,) * 3
    assert trace["feedback_comment"] == TEXT_ATTACK

    hook = {
        "url": "http://127.0.0.1:9/hook",
        "events": ["alert.opened"],
        "description": TEXT_ATTACK,
    }
    webhook = client.post("/api/v1/webhooks", json=hook, headers=auth).json()
    read_hook = client.get(f"/api/v1/webhooks/{webhook['id']}", headers=auth).json()
    assert read_hook["description"] == TEXT_ATTACK

    assert sign_in(client, admin_key).status_code == 303
    pages = [
        "/",
        f"/models/{quote(NAME_ATTACK, safe='')}",
        f"/checkpoints/{ckpt['id']}",
        f"/datasets/{quote(NAME_ATTACK, safe='')}",
        "/traces",
        "/traces/trace-attack",
        "/webhooks",
    ]
    for page in pages:
        response = client.get(page)
        assert response.status_code == 200, page
        html = response.text
        for marker in RAW_MARKERS:
            assert marker not in html, f"{page} renders {marker!r} unescaped"
        assert ESCAPED_MARKER in html or "\\u003cscript\\u003ealert(1)" in html, page
