"""The webhooks page: its delivery log filters."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.web.test_pages import sign_in


def test_an_unknown_delivery_status_filter_is_an_html_422_naming_it(
    client: TestClient, admin_key: str
) -> None:
    sign_in(client, admin_key)
    auth = {"Authorization": f"Bearer {admin_key}"}
    webhook = client.post(
        "/api/v1/webhooks",
        json={"url": "http://127.0.0.1:9/hook", "events": ["alert.opened"]},
        headers=auth,
    ).json()
    queued = client.post(f"/api/v1/webhooks/{webhook['id']}/test", headers=auth).json()

    pending = client.get("/webhooks?status=pending")
    assert pending.status_code == 200 and queued["msg_id"] in pending.text
    every = client.get("/webhooks?status=")
    assert every.status_code == 200 and queued["msg_id"] in every.text
    dead = client.get("/webhooks?status=dead")
    assert dead.status_code == 200 and queued["msg_id"] not in dead.text
    unknown = client.get("/webhooks?status=lost")
    assert unknown.status_code == 422
    assert unknown.headers["content-type"].startswith("text/html")
    assert "status" in unknown.text
