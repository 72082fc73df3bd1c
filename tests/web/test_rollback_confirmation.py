"""The rollback confirmation page does what it showed, or nothing."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.web.test_pages import register, sign_in

HIDDEN = re.compile(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">')


def test_a_confirmed_rollback_refuses_once_the_champion_changed_under_the_page(
    client: TestClient, admin_key: str
) -> None:
    """v1, then v2 (forced): the page reads 'v2 -> v1'. Before it is confirmed, another
    writer promotes v3. Until 2026-12-01 the confirmation rolled back whatever was the
    champion then to its own target: v3 (never shown) was replaced by v2 (the checkpoint
    the page offered to leave), 303. Now the form carries the champion it showed and the
    target it offered; the rollback answers 409 and v3 stays."""
    auth = {"Authorization": f"Bearer {admin_key}"}
    ids = [register(client, admin_key, version=v)["id"] for v in ("v1", "v2", "v3")]
    for checkpoint_id in ids[:2]:
        body = {"checkpoint_id": checkpoint_id, "force": True, "reason": "ship"}
        r = client.post("/api/v1/models/support-bot/promote", json=body, headers=auth)
        assert r.status_code == 200, r.text
    sign_in(client, admin_key)
    confirm = client.get("/models/support-bot/rollback")
    assert "Confirm rollback to v1" in confirm.text
    form = dict(HIDDEN.findall(confirm.text))
    body = {"checkpoint_id": ids[2], "force": True, "reason": "another writer ships v3"}
    r = client.post("/api/v1/models/support-bot/promote", json=body, headers=auth)
    assert r.status_code == 200, r.text
    done = client.post(
        "/models/support-bot/rollback",
        data={**form, "reason": "v2 refuses too much"},
        follow_redirects=False,
    )
    assert done.status_code == 409, done.text
    assert "changed since" in done.text
    state = client.get("/api/v1/models/support-bot", headers=auth).json()
    assert state["champion"]["version"] == "v3"
    assert [h["action"] for h in state["history"]] == ["promote"] * 3


def test_a_confirmed_rollback_goes_to_the_checkpoint_the_page_offered(
    client: TestClient, admin_key: str
) -> None:
    """The page offers v1 (the model's target from v2); the confirmation makes v1 the
    champion with the reason written."""
    auth = {"Authorization": f"Bearer {admin_key}"}
    ids = [register(client, admin_key, version=v)["id"] for v in ("v1", "v2")]
    for checkpoint_id in ids:
        body = {"checkpoint_id": checkpoint_id, "force": True, "reason": "ship"}
        r = client.post("/api/v1/models/support-bot/promote", json=body, headers=auth)
        assert r.status_code == 200, r.text
    sign_in(client, admin_key)
    form = dict(HIDDEN.findall(client.get("/models/support-bot/rollback").text))
    done = client.post(
        "/models/support-bot/rollback",
        data={**form, "reason": "v2 refuses too much"},
        follow_redirects=False,
    )
    assert done.status_code == 303, done.text
    state = client.get("/api/v1/models/support-bot", headers=auth).json()
    assert state["champion"]["version"] == "v1"
    assert state["history"][0]["reason"] == "v2 refuses too much"
