"""The alerts tables (overview, /alerts, /drift) show each alert's numbers in its signal's
unit, as the alert page and the API do: a latency alert in ms, not as a percentage."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from app.core.db import today_utc
from tests.drift.traffic import at, post_events, run_drift
from tests.web.test_pages import sign_in

Headers = dict[str, str]


def alert_on_yesterday(
    client: TestClient,
    auth: Headers,
    versions: list[str],
    monitor: dict[str, Any],
    field: str,
    values: list[Any],
) -> dict[str, Any]:
    """Model m with `versions` promoted in turn (the last serves), `monitor` set, yesterday's
    calls carrying `values` in `field`, the day judged: its one alert of that signal."""
    for version in versions:
        checkpoint = client.post(
            "/api/v1/checkpoints", json={"model": "m", "version": version}, headers=auth
        ).json()
        client.post(
            "/api/v1/models/m/promote",
            json={"checkpoint_id": checkpoint["id"], "reason": "r", "force": True},
            headers=auth,
        ).raise_for_status()
    assert client.put("/api/v1/monitors", json={"model": "m", **monitor}, headers=auth).is_success
    yesterday = today_utc() - timedelta(days=1)
    calls = [
        {
            "trace_id": f"t-{i}",
            "timestamp": at(yesterday, 60 * i),
            "model": "m",
            "checkpoint_version": versions[-1],
            field: value,
        }
        for i, value in enumerate(values)
    ]
    post_events(client, auth, calls)
    run_drift(client, auth, yesterday)
    params = {"signal": monitor["signal"], "dimension": "all"}
    [alert] = client.get("/api/v1/alerts", params=params, headers=auth).json()["items"]
    return alert  # type: ignore[no-any-return]


SLOW = {"signal": "latency_p95", "band": {"type": "fixed", "high": 500}}
SLOW_CALLS = [1200 + i for i in range(200)]


def test_a_latency_alert_shows_milliseconds_in_every_alerts_table(
    client: TestClient, admin_key: str
) -> None:
    auth = {"Authorization": f"Bearer {admin_key}"}
    alert = alert_on_yesterday(client, auth, ["v1"], SLOW, "latency_ms", SLOW_CALLS)
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
    monitor = {"signal": "eval_fail_rate", "band": {"type": "fixed", "high": 0.0495}}
    passed = [i >= 62 for i in range(1250)]
    alert = alert_on_yesterday(client, auth, ["v1"], monitor, "eval_passed", passed)
    assert alert["observed"] == 62 / 1250 and alert["band"]["high"] == 0.0495
    sign_in(client, admin_key)

    for path in ("/", "/alerts", "/drift?model=m", f"/alerts/{alert['id']}"):
        page = client.get(path).text
        assert "4.96%" in page and "4.95%" in page, path


def test_the_rollback_page_states_a_latency_alert_in_milliseconds(
    client: TestClient, admin_key: str
) -> None:
    auth = {"Authorization": f"Bearer {admin_key}"}
    alert = alert_on_yesterday(client, auth, ["v0", "v1"], SLOW, "latency_ms", SLOW_CALLS)
    sign_in(client, admin_key)

    page = client.get("/models/m/rollback", params={"alert_id": alert["id"]})
    assert page.status_code == 200
    assert "Confirm rollback to v0" in page.text
    assert f"latency_p95 {alert['observed']:,.0f} ms on all=all" in page.text
