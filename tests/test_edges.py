"""Bad input gets a 4xx problem naming the problem; the service reports its own health."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

Headers = dict[str, str]
JSON = {"content-type": "application/json"}


def post_raw(client: TestClient, auth: Headers, content: bytes | Iterator[bytes]) -> object:
    return client.post("/api/v1/checkpoints", content=content, headers={**auth, **JSON})


@pytest.mark.parametrize(
    ("content", "field", "fragment"),
    [
        (b'{"model": "m", "version": ', "body", "invalid JSON"),
        (b'{"model": "m", "version": "v", "training": {"learning_rate": NaN}}', "body", "NaN"),
        (b'{"model": "m", "version": "v", "x": Infinity}', "body", "Infinity"),
        (b'{"model": "m", "version": "v", "metadata": {"lr": 1e400}}', "body", "out of range"),
        (b'{"model": "m", "version": "\xff\xfe"}', "body", "invalid JSON"),
        (b'{"model": 5, "version": "v"}', "body.model", "string"),
        (b'{"model": "m", "version": "v", "kind": "huge"}', "body.kind", "full"),
        (b'{"model": "m", "version": "v", "surprise": 1}', "body.surprise", "Extra inputs"),
        (b'{"model": "m", "version": "v", "training": {"batch_size": -1}}', "batch_size", ""),
        (b"[" * 100_000 + b"]" * 100_000, "body", "nested too deeply"),
    ],
)
def test_malformed_bodies_get_a_problem_naming_the_field(
    client: TestClient, auth: Headers, content: bytes, field: str, fragment: str
) -> None:
    response = post_raw(client, auth, content)
    assert 400 <= response.status_code < 500  # type: ignore[attr-defined]
    assert response.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    problem = response.json()  # type: ignore[attr-defined]
    assert problem["status"] == response.status_code  # type: ignore[attr-defined]
    assert field in problem["detail"] and fragment in problem["detail"]
    listed = client.get("/api/v1/checkpoints", headers=auth).json()["items"]
    assert listed == []


def test_an_oversized_body_is_refused_before_it_is_read_whole(
    client: TestClient, auth: Headers, app: object
) -> None:
    limit = client.app.state.settings.max_body_bytes  # type: ignore[attr-defined]
    declared = post_raw(client, auth, b"x" * (limit + 1))
    assert declared.status_code == 413  # type: ignore[attr-defined]

    def chunks() -> Iterator[bytes]:
        for _ in range(limit // 65536 + 2):
            yield b" " * 65536

    streamed = post_raw(client, auth, chunks())
    assert streamed.status_code == 413  # type: ignore[attr-defined]
    assert streamed.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]


def test_health_readiness_metrics_and_request_ids(client: TestClient, auth: Headers) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == "up"
    client.get("/api/v1/checkpoints", headers=auth)
    metrics = client.get("/metrics").text
    assert (
        'plumbline_http_requests_total{method="GET",route="/api/v1/checkpoints",status="200"}'
        in (metrics)
    )
    echoed = client.get("/healthz", headers={"X-Request-ID": "abc123"})
    assert echoed.headers["x-request-id"] == "abc123"
    assert len(client.get("/healthz").headers["x-request-id"]) == 32


def test_readiness_fails_when_the_database_is_gone(tmp_path: object) -> None:
    from app.core.settings import Settings
    from app.main import create_app

    settings = Settings(database_url="postgresql://nobody@127.0.0.1:1/none", secret_key="k")
    with TestClient(create_app(settings)) as client:
        response = client.get("/readyz")
    assert response.status_code == 503


def test_access_logs_are_json_with_the_request_id_and_no_key(
    capfd: pytest.CaptureFixture[str], client: TestClient, auth: Headers
) -> None:
    # capfd comes first so the log handler the app installs writes into the capture.
    import json

    client.get("/api/v1/checkpoints", headers={**auth, "X-Request-ID": "trace-me"})
    lines = [
        json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")
    ]
    mine = [line for line in lines if line.get("request_id") == "trace-me"]
    assert mine and mine[0]["path"] == "/api/v1/checkpoints" and mine[0]["status"] == 200
    key = auth["Authorization"].split()[1]
    assert all(key not in json.dumps(line) for line in lines)
