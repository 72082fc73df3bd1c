"""Secure defaults: security headers on every dashboard page, rate limits on sign-in and on
key-authenticated writes, and no key or webhook secret in any log line."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from app.core.errors import PROBLEM_JSON
from app.core.settings import Settings
from app.main import create_app
from app.models.project import Role
from app.web.rendering import HtmlRoute
from app.webhooks.sender import deliver_webhooks
from tests.conftest import new_key
from tests.web.test_pages import csrf_of, sign_in
from tests.webhooks.receiver import receiver

Headers = dict[str, str]
URL_TOKEN = "Zq7urlSecretToken9Kx2"
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)


@pytest.fixture
def limited_app(settings: Settings) -> FastAPI:
    return create_app(
        settings.model_copy(update={"write_rate_per_minute": 3, "login_rate_per_minute": 3})
    )


def dashboard_get_paths(app: FastAPI, ids: dict[str, Any]) -> list[str]:
    """Every GET page of the dashboard, path parameters filled from `ids` (unknown ids give
    the HTML 404 page, which must carry the headers too)."""
    paths = []
    for route in iter_route_contexts(app.routes):
        original = route.original_route
        if not isinstance(original, HtmlRoute):
            continue
        if "GET" in (route.methods or set()):
            path = str(route.path)
            for name in re.findall(r"{(\w+)}", path):
                path = path.replace("{" + name + "}", str(ids.get(name, 999)))
            paths.append(path)
    return paths


def assert_secure_headers(response: Any) -> None:
    csp = response.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if " " in d.strip())
    assert directives["script-src"] == "'self'", csp
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "same-origin"
    assert response.headers["x-frame-options"] == "DENY"


def test_every_dashboard_page_carries_the_security_headers_and_no_inline_script(
    client: TestClient, auth: Headers, admin_key: str, app: FastAPI
) -> None:
    created = client.post(
        "/api/v1/checkpoints", json={"model": "bot", "version": "v1"}, headers=auth
    ).json()
    signed_out = client.get("/login")
    assert_secure_headers(signed_out)
    redirected = client.get("/drift", follow_redirects=False)
    assert redirected.status_code == 303
    assert_secure_headers(redirected)

    assert sign_in(client, admin_key).status_code == 303
    ids = {"model": "bot", "checkpoint_id": created["id"], "trace_id": "none", "name": "none"}
    paths = dashboard_get_paths(app, ids)
    assert {"/", "/drift", "/alerts", "/webhooks", f"/checkpoints/{created['id']}"} <= set(paths)
    for path in paths:
        response = client.get(path)
        assert response.status_code in (200, 404, 422), f"{path}: {response.status_code}"
        assert response.headers["content-type"].startswith("text/html"), path
        assert_secure_headers(response)
        assert not INLINE_SCRIPT.search(response.text), f"{path} has an inline script"


def test_sign_in_is_rate_limited_per_client_ip(limited_app: FastAPI) -> None:
    key = new_key(limited_app, "acme", Role.read)
    with TestClient(limited_app, client=("203.0.113.7", 5000)) as attacker:
        for _ in range(3):
            assert sign_in(attacker, "pl_0000000000_wrong").status_code == 401
        refused = sign_in(attacker, key)
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        assert "too many sign-in attempts" in refused.text
        assert_secure_headers(refused)
    with TestClient(limited_app, client=("198.51.100.2", 5000)) as someone_else:
        assert sign_in(someone_else, key).status_code == 303


def test_key_authenticated_writes_are_rate_limited_per_key(limited_app: FastAPI) -> None:
    first = {"Authorization": f"Bearer {new_key(limited_app, 'acme', Role.write, 'one')}"}
    second = {"X-Api-Key": new_key(limited_app, "acme", Role.write, "two")}
    with TestClient(limited_app) as client:
        for version in ("v1", "v2", "v3"):
            body = {"model": "bot", "version": version}
            assert client.post("/api/v1/checkpoints", json=body, headers=first).status_code == 201
        refused = client.post(
            "/api/v1/checkpoints", json={"model": "bot", "version": "v4"}, headers=first
        )
        assert refused.status_code == 429
        assert refused.headers["content-type"] == PROBLEM_JSON
        assert 1 <= int(refused.headers["retry-after"]) <= 20
        assert refused.json()["title"] == "Too many requests"
        # Reads are not counted, and another key has its own budget.
        assert client.get("/api/v1/checkpoints", headers=first).status_code == 200
        body = {"model": "bot", "version": "v4"}
        assert client.post("/api/v1/checkpoints", json=body, headers=second).status_code == 201
        listed = client.get("/api/v1/checkpoints", headers=second).json()["items"]
        assert sorted(c["version"] for c in listed) == ["v1", "v2", "v3", "v4"]


class Recorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.lines.append(f"{record.name} {text} {record.__dict__}")


@pytest.fixture
def every_log_line() -> Iterator[Recorder]:
    recorder = Recorder()
    names = ["", "plumbline", "uvicorn", "uvicorn.error", "uvicorn.access", "sqlalchemy", "httpx"]
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(recorder)
        logger.setLevel(logging.DEBUG)
    yield recorder
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(recorder)
        logger.setLevel(level)


def test_no_key_or_webhook_secret_reaches_any_log(
    settings: Settings,
    every_log_line: Recorder,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    app = create_app(
        settings.model_copy(update={"log_level": "DEBUG", "webhook_allow_private": True})
    )
    admin = new_key(app, "acme", Role.admin, "admin")
    secrets = [admin]
    with TestClient(app) as client:
        auth = {"Authorization": f"Bearer {admin}"}
        for role in ("read", "write", "admin"):
            created = client.post(
                "/api/v1/keys", json={"name": f"k-{role}", "role": role}, headers=auth
            )
            secrets.append(created.json()["key"])
        writer = secrets[2]
        chosen_secret = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"
        for secret in (chosen_secret, None):
            hook = {"url": "http://127.0.0.1:9/hook", "events": ["alert.opened"]}
            response = client.post(
                "/api/v1/webhooks",
                json={**hook, "secret": secret} if secret else hook,
                headers=auth,
            )
            assert response.status_code == 201, response.text
            secrets.append(response.json()["secret"])
        assert chosen_secret in secrets
        # A real delivery to a URL carrying its secret token, as incoming-webhook URLs do: the
        # request line httpx logs for it names scheme and host only.
        with receiver() as target:
            url = f"{target.url}/services/T0/{URL_TOKEN}?routing_key={URL_TOKEN}"
            hooked = client.post(
                "/api/v1/webhooks", json={"url": url, "events": ["alert.opened"]}, headers=auth
            )
            assert hooked.status_code == 201, hooked.text
            secrets.append(hooked.json()["secret"])
            queued = client.post(f"/api/v1/webhooks/{hooked.json()['id']}/test", headers=auth)
            assert queued.status_code == 202, queued.text
            while deliver_webhooks(app.state.sessionmaker, app.state.settings):
                pass
            assert len(target.requests) == 1
        secrets.append(URL_TOKEN)
        rotated = client.post(
            f"/api/v1/webhooks/{response.json()['id']}/rotate-secret", headers=auth
        )
        assert rotated.status_code == 200, rotated.text
        secrets.append(rotated.json()["secret"])

        for headers in (
            {"Authorization": f"Bearer {writer}"},
            {"X-Api-Key": writer},
            {"api_key": writer},
        ):
            assert client.get("/api/v1/checkpoints", headers=headers).status_code == 200
            bad = client.post("/api/v1/checkpoints", json={"model": 1}, headers=headers)
            assert bad.status_code == 422
        revoked_id = client.get("/api/v1/keys", headers=auth).json()["items"][1]["id"]
        client.delete(f"/api/v1/keys/{revoked_id}", headers=auth)
        for key in secrets[:4]:  # one of them is revoked now: the refusal must not echo it
            client.get("/api/v1/webhooks", headers={"Authorization": f"Bearer {key}"})
        client.get("/api/v1/checkpoints", headers={"Authorization": f"Bearer {admin}x"})
        token = csrf_of(client.get("/login").text)
        client.post("/login", data={"csrf_token": token, "api_key": secrets[1], "next": "/"})
        client.post("/login", data={"csrf_token": token, "api_key": admin + "x", "next": "/"})
        client.get("/webhooks")

    captured = capfd.readouterr()
    assert every_log_line.lines, "the handler saw no log records at all"
    logs = "\n".join([*every_log_line.lines, captured.out, captured.err, caplog.text])
    for secret in secrets:
        assert secret not in logs
        # Nor its secret part alone (a urlsafe secret may itself contain "_").
        secret_part = secret.split("_", 2)[2] if secret.startswith("pl_") else secret[6:]
        assert secret_part not in logs
    # The delivery's request line is still there for operators, without the path and query.
    assert any(
        "HTTP Request: POST http://127.0.0.1/[redacted] " in line for line in every_log_line.lines
    )
