"""Cost per call, end to end: the seed's "latency and cost shift after a quantized version of
a fine-tuned model ships", where the tokens per call hold and only the price moves."""

from __future__ import annotations

import random
from datetime import date, timedelta

import pytest
from fastapi.testclient import TestClient

from app.core.db import today_utc
from app.drift.schemas import DEFAULT_REFERENCE_DAYS, DEFAULT_WARMUP_DAYS
from app.drift.signals import format_value
from tests.drift.traffic import Segment, day_of_traffic, post_events, run_drift

Headers = dict[str, str]
SEGMENTS = (Segment("free", 300, ("/chat",), ("us",), 0.05),)
STEADY = DEFAULT_WARMUP_DAYS + DEFAULT_REFERENCE_DAYS
TOTAL = STEADY + 4


def day_at(index: int) -> date:
    return today_utc() - timedelta(days=TOTAL - index)


def test_a_dearer_build_with_the_same_tokens_alerts_on_cost_alone(
    client: TestClient, auth: Headers
) -> None:
    ids = {}
    for version, input_price in (("v1", 1.0), ("v2-quantized", 3.0)):
        ids[version] = client.post(
            "/api/v1/checkpoints", json={"model": "m", "version": version}, headers=auth
        ).json()["id"]
        priced = client.put(
            f"/api/v1/checkpoints/{ids[version]}/pricing",
            json={
                "usd_per_million_input_tokens": input_price,
                "usd_per_million_output_tokens": 2 * input_price,
            },
            headers=auth,
        )
        assert priced.status_code == 200, priced.text
    # v1 serves the reference's days; from day STEADY the new build serves the same calls
    # (the same token counts: the traffic's streams depend on the seed and day, not the
    # version) at three times the price per token.
    events = [
        event
        for index in range(TOTAL)
        for event in day_of_traffic(
            random.Random(index),
            day_at(index),
            "m",
            "v1" if index < STEADY else "v2-quantized",
            SEGMENTS,
            wobble=0.1,
            seed=5,
        )
    ]
    post_events(client, auth, events)
    run_drift(client, auth, day_at(TOTAL - 1), TOTAL)

    alerts = client.get("/api/v1/alerts", params={"model": "m"}, headers=auth).json()["items"]
    cost = [a for a in alerts if a["signal"].startswith("cost_") and a["dimension"] == "all"]
    assert {a["signal"] for a in cost} == {"cost_p50", "cost_p95"}
    for alert in cost:
        assert alert["status"] == "open"
        assert alert["checkpoint_version"] == "v2-quantized"
        assert alert["day"] == day_at(STEADY).isoformat()
        # Three times the reference's cost per call (the same tokens, three times the price).
        assert 2.5 < alert["observed"] / alert["baseline"] < 3.5
        assert alert["sample_trace_ids"], "a cost alert links calls that carry a cost"
    # A cohort from the events' JSON (the scan joins the prices and expands the JSON): the
    # same shift, with the calls that carry a cost linked.
    [region] = [a for a in alerts if a["signal"] == "cost_p50" and a["dimension"] == "region"]
    assert region["value"] == "us" and region["status"] == "open"
    assert region["sample_trace_ids"]
    # The tokens per call did not move, and neither did latency: no alert there.
    assert not [a for a in alerts if a["signal"].startswith(("tokens_", "latency_"))]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (0.000195, "$0.000195"),
        (6e-06, "$0.00000600"),
        (0.0123456, "$0.0123"),
        (1.5, "$1.50"),
        (1234.5, "$1,234.50"),
        (0.0, "$0.00"),
    ],
)
def test_a_cost_reads_in_dollars_with_three_significant_digits(value: float, shown: str) -> None:
    assert format_value("cost_p95", value) == shown
