"""The alerts tables (overview, /alerts, /drift) show each alert's numbers in its signal's
unit, as the alert page and the API do: a latency alert in ms, not as a percentage."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from app.core.db import today_utc
from tests.drift.traffic import at, post_events, run_drift
from tests.web.test_pages import sign_in


def test_a_latency_alert_shows_milliseconds_in_every_alerts_table(
    client: TestClient, admin_key: str
) -> None:
    auth = {"Authorization": f"Bearer {admin_key}"}
    checkpoint = client.post(
        "/api/v1/checkpoints", json={"model": "m", "version": "v1"}, headers=auth
    ).json()
    client.post(
        "/api/v1/models/m/promote",
        json={"checkpoint_id": checkpoint["id"], "reason": "first"},
        headers=auth,
    ).raise_for_status()
    monitor = {"model": "m", "signal": "latency_p95", "band": {"type": "fixed", "high": 500}}
    assert client.put("/api/v1/monitors", json=monitor, headers=auth).status_code == 200
    yesterday = today_utc() - timedelta(days=1)
    post_events(
        client,
        auth,
        [
            {
                "trace_id": f"slow-{i}",
                "timestamp": at(yesterday, 60 * i),
                "model": "m",
                "checkpoint_version": "v1",
                "latency_ms": 1200 + i,
            }
            for i in range(200)
        ],
    )
    run_drift(client, auth, yesterday)
    [alert] = client.get("/api/v1/alerts", params={"signal": "latency_p95"}, headers=auth).json()[
        "items"
    ]
    assert alert["observed"] > 1000 and alert["band"]["high"] == 500
    sign_in(client, admin_key)

    for path in ("/", "/alerts", "/drift?model=m&signal=latency_p95&dimension=all"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert f'href="/alerts/{alert["id"]}"' in page.text, path
        assert f"{alert['observed']:,.0f} ms" in page.text, path
        assert "500 ms" in page.text, path
        assert f"{alert['observed'] * 100:.1f}%" not in page.text, path


def test_a_rate_just_past_its_band_reads_apart_from_the_band_edge(
    client: TestClient, admin_key: str
) -> None:
    """62 failures in 1,250 calls (4.96%) above a fixed band ending at 4.95%: at one decimal
    both read 5.0% and the alert looks in band; every page shows them apart."""
    auth = {"Authorization": f"Bearer {admin_key}"}
    checkpoint = client.post(
        "/api/v1/checkpoints", json={"model": "m", "version": "v1"}, headers=auth
    ).json()
    client.post(
        "/api/v1/models/m/promote",
        json={"checkpoint_id": checkpoint["id"], "reason": "first"},
        headers=auth,
    ).raise_for_status()
    monitor = {"model": "m", "signal": "eval_fail_rate", "band": {"type": "fixed", "high": 0.0495}}
    assert client.put("/api/v1/monitors", json=monitor, headers=auth).status_code == 200
    yesterday = today_utc() - timedelta(days=1)
    post_events(
        client,
        auth,
        [
            {
                "trace_id": f"t-{i}",
                "timestamp": at(yesterday, 60 * i),
                "model": "m",
                "checkpoint_version": "v1",
                "eval_passed": i >= 62,
            }
            for i in range(1250)
        ],
    )
    run_drift(client, auth, yesterday)
    [alert] = client.get(
        "/api/v1/alerts", params={"signal": "eval_fail_rate", "dimension": "all"}, headers=auth
    ).json()["items"]
    assert alert["observed"] == 62 / 1250 and alert["band"]["high"] == 0.0495
    sign_in(client, admin_key)

    for path in ("/", "/alerts", "/drift?model=m", f"/alerts/{alert['id']}"):
        page = client.get(path).text
        assert "4.96%" in page and "4.95%" in page, path


def test_the_rollback_page_states_a_latency_alert_in_milliseconds(
    client: TestClient, admin_key: str
) -> None:
    auth = {"Authorization": f"Bearer {admin_key}"}
    for version in ("v0", "v1"):
        checkpoint = client.post(
            "/api/v1/checkpoints", json={"model": "m", "version": version}, headers=auth
        ).json()
        client.post(
            "/api/v1/models/m/promote",
            json={"checkpoint_id": checkpoint["id"], "reason": "r", "force": True},
            headers=auth,
        ).raise_for_status()
    monitor = {"model": "m", "signal": "latency_p95", "band": {"type": "fixed", "high": 500}}
    assert client.put("/api/v1/monitors", json=monitor, headers=auth).status_code == 200
    yesterday = today_utc() - timedelta(days=1)
    post_events(
        client,
        auth,
        [
            {
                "trace_id": f"slow-{i}",
                "timestamp": at(yesterday, 60 * i),
                "model": "m",
                "checkpoint_version": "v1",
                "latency_ms": 1200 + i,
            }
            for i in range(200)
        ],
    )
    run_drift(client, auth, yesterday)
    [alert] = client.get("/api/v1/alerts", params={"signal": "latency_p95"}, headers=auth).json()[
        "items"
    ]
    sign_in(client, admin_key)

    page = client.get("/models/m/rollback", params={"alert_id": alert["id"]})

    assert page.status_code == 200
    assert "Confirm rollback to v0" in page.text
    assert f"latency_p95 {alert['observed']:,.0f} ms on all=all" in page.text
