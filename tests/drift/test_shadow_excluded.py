"""Shadow answers never count as served traffic: not in the day's signals (of the candidate
or of the champion itself), not in an alert's sample traces."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from app.core.db import today_utc
from tests.drift.traffic import at, post_events

Headers = dict[str, str]
MODEL = "support-bot"


def test_the_days_signals_and_alert_samples_count_served_events_only(
    client: TestClient, auth: Headers
) -> None:
    for version in ("v1", "v2"):
        client.post(
            "/api/v1/checkpoints", json={"model": MODEL, "version": version}, headers=auth
        ).raise_for_status()
    client.post(
        f"/api/v1/models/{MODEL}/promote",
        json={"checkpoint_id": 1, "reason": "first champion"},
        headers=auth,
    ).raise_for_status()
    day = today_utc() - timedelta(days=1)

    def call(trace: str, version: str, refusal: bool, shadow_of: str | None = None) -> dict:
        return {
            "trace_id": trace,
            "timestamp": at(day, len(trace) * 97),
            "model": MODEL,
            "checkpoint_version": version,
            "cohort": {"user_segment": "free"},
            "refusal": refusal,
            "shadow_of": shadow_of,
        }

    served = [call(f"served-{i}", "v1", i % 10 == 0) for i in range(100)]
    # Shadow answers, every one refused, by the candidate and by the champion itself.
    shadow = [call(f"shadow-v2-{i}", "v2", True, f"served-{i}") for i in range(50)]
    shadow += [call(f"shadow-v1-{i}", "v1", True, f"served-{i}") for i in range(50)]
    post_events(client, auth, served + shadow)
    client.put(
        "/api/v1/monitors",
        json={
            "model": MODEL,
            "signal": "refusal_rate",
            "band": {"type": "fixed", "high": 0.05},
            "min_volume": 1,
        },
        headers=auth,
    ).raise_for_status()
    client.post(
        "/api/v1/drift/run", json={"date": day.isoformat()}, headers=auth
    ).raise_for_status()

    signals = client.get(
        "/api/v1/signals",
        params={"model": MODEL, "signal": "refusal_rate", "limit": 100},
        headers=auth,
    ).json()["items"]
    assert {s["checkpoint_version"] for s in signals} == {"v1"}
    everyone = next(s for s in signals if s["dimension"] == "all")
    assert (everyone["numerator"], everyone["denominator"]) == (10, 100)
    [alert] = [
        a
        for a in client.get("/api/v1/alerts", headers=auth).json()["items"]
        if a["dimension"] == "all"
    ]
    assert alert["observed"] == 0.1 and alert["volume"] == 100
    assert alert["sample_trace_ids"] and all(
        t.startswith("served-") for t in alert["sample_trace_ids"]
    )
