"""After a dashboard form, the redirect lands on the model the form acted on, whatever its
name holds (model names may carry '#', '+', '?', '&', '%' and spaces)."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import quote

from fastapi.testclient import TestClient

from app.core.db import today_utc
from tests.drift.traffic import at, post_events, run_drift
from tests.web.test_pages import csrf_of, register, sign_in

MODEL = "bot #2+ft?a=1&b=50%"


def test_a_rollback_redirects_to_the_page_of_the_model_it_rolled_back(
    client: TestClient, admin_key: str
) -> None:
    auth = {"Authorization": f"Bearer {admin_key}"}
    v1 = register(client, admin_key, model=MODEL, version="v1")
    v2 = register(client, admin_key, model=MODEL, version="v2")
    for checkpoint in (v1, v2):
        promoted = client.post(
            f"/api/v1/models/{quote(MODEL, safe='')}/promote",
            json={"checkpoint_id": checkpoint["id"], "force": True, "reason": "r"},
            headers=auth,
        )
        assert promoted.status_code == 200, promoted.text
    sign_in(client, admin_key)
    confirm = client.get(f"/models/{quote(MODEL, safe='')}/rollback")
    assert confirm.status_code == 200 and "Confirm rollback to v1" in confirm.text

    done = client.post(
        f"/models/{quote(MODEL, safe='')}/rollback",
        data={"csrf_token": csrf_of(confirm.text), "reason": "refusals doubled"},
        follow_redirects=False,
    )

    assert done.status_code == 303
    page = client.get(done.headers["location"])
    assert page.status_code == 200, page.text
    assert "Rolled back. The champion is now v1." in page.text


def test_a_rebaseline_redirects_to_the_drift_page_of_its_model(
    client: TestClient, admin_key: str
) -> None:
    auth = {"Authorization": f"Bearer {admin_key}"}
    champion = register(client, admin_key, model=MODEL, version="v1")
    other = register(client, admin_key, model="a-model-listed-first", version="v1")
    for checkpoint in (champion, other):
        client.post(
            f"/api/v1/checkpoints/{checkpoint['id']}/promote",
            json={"force": True, "reason": "r"},
            headers=auth,
        )
    yesterday = today_utc() - timedelta(days=1)
    days = [yesterday - timedelta(days=d) for d in range(6)]
    post_events(
        client,
        auth,
        [
            {
                "trace_id": f"t-{day}-{i}",
                "timestamp": at(day, 60 * i),
                "model": MODEL,
                "checkpoint_version": "v1",
                "eval_passed": i % 4 != 0,
            }
            for day in days
            for i in range(20)
        ],
    )
    run_drift(client, auth, yesterday, 6)
    sign_in(client, admin_key)
    drift = client.get("/drift", params={"model": MODEL})
    assert drift.status_code == 200

    done = client.post(
        "/drift/rebaseline",
        data={"csrf_token": csrf_of(drift.text), "model": MODEL, "reason": "new normal"},
        follow_redirects=False,
    )

    assert done.status_code == 303, done.text
    page = client.get(done.headers["location"])
    assert page.status_code == 200
    assert f'<option value="{MODEL.replace("&", "&amp;")}" selected' in page.text
