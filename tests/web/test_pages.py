"""The dashboard over HTTP: sign-in, sessions, CSRF, isolation, escaping, rollback."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import ChampionHistory, DriftReference
from app.models.project import Role
from app.models.registry import ChampionAction
from app.web.auth import SESSION_COOKIE
from tests.conftest import new_key

Headers = dict[str, str]
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(page: str) -> str:
    match = CSRF.search(page)
    assert match, "page has no CSRF field"
    return match.group(1)


def sign_in(client: TestClient, key: str, next_path: str = "/") -> Any:
    token = csrf_of(client.get("/login").text)
    return client.post(
        "/login",
        data={"csrf_token": token, "api_key": key, "next": next_path},
        follow_redirects=False,
    )


def register(client: TestClient, key: str, **body: Any) -> dict[str, Any]:
    body.setdefault("model", "support-bot")
    response = client.post(
        "/api/v1/checkpoints", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert response.status_code in (200, 201), response.text
    result: dict[str, Any] = response.json()
    return result


def test_pages_need_a_session_and_a_key_signs_in_with_a_hardened_cookie(
    client: TestClient, admin_key: str
) -> None:
    response = client.get("/drift?signal=refusal_rate", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=%2Fdrift%3Fsignal%3Drefusal_rate"

    wrong = sign_in(client, "pl_0123456789_not-a-real-key")
    assert wrong.status_code == 401 and "not valid" in wrong.text

    signed_in = sign_in(client, admin_key, "/drift?signal=refusal_rate")
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/drift?signal=refusal_rate"
    cookie = signed_in.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert admin_key not in cookie

    page = client.get("/")
    assert page.status_code == 200 and "No models registered yet" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "script-src 'self';" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in page.text.replace("<script src=", "")


def test_open_redirects_are_refused_after_sign_in(client: TestClient, admin_key: str) -> None:
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        response = sign_in(client, admin_key, target)
        assert response.headers["location"] == "/"


def test_forms_need_the_session_csrf_token(
    client: TestClient, app: FastAPI, admin_key: str, db: Session
) -> None:
    v1 = register(client, admin_key, version="v1")
    v2 = register(client, admin_key, version="v2", parent="v1")
    auth = {"Authorization": f"Bearer {admin_key}"}
    for checkpoint, extra in ((v1, {"reason": "first"}), (v2, {"force": True, "reason": "x"})):
        body = {"checkpoint_id": checkpoint["id"], **extra}
        assert client.post("/api/v1/models/support-bot/promote", json=body, headers=auth).is_success
    sign_in(client, admin_key)

    forged = client.post(
        "/models/support-bot/rollback", data={"csrf_token": "forged", "reason": "because"}
    )
    assert forged.status_code == 403 and "form expired" in forged.text
    missing = client.post("/logout", data={})
    assert missing.status_code == 422
    # A token from another browser's session is as good as a forged one.
    other = TestClient(app)
    foreign_token = csrf_of(other.get("/login").text)
    stolen = client.post(
        "/models/support-bot/rollback", data={"csrf_token": foreign_token, "reason": "because"}
    )
    assert stolen.status_code == 403
    # The drift page's rebaseline button: refused without the session's token, and with it
    # the service's own validation answers (no known-good days here), nothing frozen.
    page = client.get("/drift?model=support-bot")
    assert 'action="/drift/rebaseline"' in page.text
    forged_rebaseline = client.post(
        "/drift/rebaseline", data={"csrf_token": "forged", "model": "support-bot", "reason": "r"}
    )
    assert forged_rebaseline.status_code == 403
    refused = client.post(
        "/drift/rebaseline",
        data={"csrf_token": csrf_of(page.text), "model": "support-bot", "reason": "r"},
    )
    assert refused.status_code == 422 and "known-good" in refused.text
    history = db.scalars(select(ChampionHistory)).all()
    assert [h.action for h in history] == [ChampionAction.promote, ChampionAction.promote]
    assert db.scalars(select(DriftReference)).all() == []


def test_rollback_confirmation_then_post_changes_the_champion(
    client: TestClient, admin_key: str, db: Session
) -> None:
    v1 = register(client, admin_key, version="v1", kind="full")
    v2 = register(client, admin_key, version="v2", kind="lora", parent="v1")
    auth = {"Authorization": f"Bearer {admin_key}"}
    client.post(
        "/api/v1/models/support-bot/promote",
        json={"checkpoint_id": v1["id"], "reason": "first"},
        headers=auth,
    )
    client.post(
        "/api/v1/models/support-bot/promote",
        json={"checkpoint_id": v2["id"], "force": True, "reason": "hotfix"},
        headers=auth,
    )
    sign_in(client, admin_key)
    confirm = client.get("/models/support-bot/rollback")
    assert confirm.status_code == 200
    assert "Confirm rollback to v1" in confirm.text
    empty_reason = client.post(
        "/models/support-bot/rollback", data={"csrf_token": csrf_of(confirm.text), "reason": " "}
    )
    assert empty_reason.status_code == 422 and "Write a reason" in empty_reason.text

    done = client.post(
        "/models/support-bot/rollback",
        data={"csrf_token": csrf_of(confirm.text), "reason": "refusals doubled"},
        follow_redirects=False,
    )
    assert done.status_code == 303
    page = client.get(done.headers["location"])
    assert "Rolled back. The champion is now v1." in page.text
    latest = db.scalars(select(ChampionHistory).order_by(ChampionHistory.id.desc())).first()
    assert latest is not None and latest.action is ChampionAction.rollback
    assert latest.checkpoint_id == v1["id"] and latest.reason == "refusals doubled"


def test_a_read_key_sees_pages_but_cannot_act(
    client: TestClient, app: FastAPI, admin_key: str
) -> None:
    register(client, admin_key, version="v1")
    reader = new_key(app, "acme", Role.read, "viewer")
    sign_in(client, reader)
    page = client.get("/models/support-bot")
    assert page.status_code == 200 and "Roll back to" not in page.text
    refused = client.post(
        "/models/support-bot/rollback", data={"csrf_token": csrf_of(page.text), "reason": "r"}
    )
    assert refused.status_code == 403 and "write" in refused.text


def test_user_supplied_text_renders_escaped(client: TestClient, admin_key: str) -> None:
    hostile = '<img src=x onerror="alert(1)">'
    checkpoint = register(
        client,
        admin_key,
        version=hostile,
        base_model="<b>bold</b>",
        training={"optimizer": "<script>alert(2)</script>"},
    )
    sign_in(client, admin_key)
    for path in ("/models/support-bot", f"/checkpoints/{checkpoint['id']}"):
        page = client.get(path).text
        assert hostile not in page and "<b>bold</b>" not in page
        assert "<script>alert(2)</script>" not in page
        assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page
    error = client.get("/models/%3Cscript%3Ealert(3)%3C%2Fscript%3E")
    assert error.status_code == 404 and "<script>alert(3)" not in error.text


def test_a_session_sees_only_the_active_project_and_can_switch(
    client: TestClient, app: FastAPI, admin_key: str
) -> None:
    acme = register(client, admin_key, version="acme-v1", model="acme-bot")
    other_key = new_key(app, "globex", Role.admin, "globex-admin")
    globex = register(client, other_key, version="globex-v1", model="globex-bot")

    sign_in(client, admin_key)
    assert client.get(f"/checkpoints/{globex['id']}").status_code == 404
    assert client.get("/models/globex-bot").status_code == 404

    sign_in(client, other_key)
    overview = client.get("/").text
    assert "globex-bot" in overview and "acme-bot" not in overview
    assert 'id="project-switch"' in overview and ">acme (admin)<" in overview
    assert client.get(f"/checkpoints/{acme['id']}").status_code == 404

    acme_key_id = re.search(r'<option value="(\d+)"[^>]*>acme \(admin\)', overview)
    assert acme_key_id
    switched = client.post(
        "/switch-project",
        data={"csrf_token": csrf_of(overview), "key_id": acme_key_id.group(1)},
        follow_redirects=False,
    )
    assert switched.status_code == 303
    assert "acme-bot" in client.get("/").text
    assert client.get(f"/checkpoints/{acme['id']}").status_code == 200
    unknown = client.post("/switch-project", data={"csrf_token": csrf_of(overview), "key_id": 999})
    assert unknown.status_code == 403


def test_revoking_the_key_or_signing_out_ends_the_session(
    client: TestClient, admin_key: str
) -> None:
    sign_in(client, admin_key)
    page = client.get("/")
    assert page.status_code == 200
    client.post("/logout", data={"csrf_token": csrf_of(page.text)})
    assert client.get("/", follow_redirects=False).status_code == 303

    sign_in(client, admin_key)
    auth = {"Authorization": f"Bearer {admin_key}"}
    key_id = client.get("/api/v1/keys", headers=auth).json()["items"][0]["id"]
    assert client.delete(f"/api/v1/keys/{key_id}", headers=auth).status_code in (200, 204)
    assert client.get("/", follow_redirects=False).status_code == 303


def test_bad_query_parameters_get_an_html_error_naming_the_field(
    client: TestClient, admin_key: str
) -> None:
    sign_in(client, admin_key)
    for path, field in (
        ("/runs/abc", "run_id"),
        ("/drift?signal=nope", "signal"),
        ("/drift?from=2025-02-01&to=2025-01-01", "from"),
        ("/traces?flag=everything", "flag"),
        ("/alerts?status=lost", "status"),
    ):
        response = client.get(path)
        assert response.status_code == 422, path
        assert response.headers["content-type"].startswith("text/html")
        assert field in response.text, path
