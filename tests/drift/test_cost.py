"""Cost per call, end to end: the seed's "latency and cost shift after a quantized version of
a fine-tuned model ships", where the tokens per call hold and only the price moves."""

from __future__ import annotations

import math
import random
from datetime import date, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from app.core.db import today_utc
from app.drift.references import priced_entry
from app.drift.schemas import DEFAULT_REFERENCE_DAYS, DEFAULT_WARMUP_DAYS
from app.drift.signals import format_value, shown_from_log
from app.models import DriftJudgement, DriftReference
from tests.drift.traffic import Segment, day_of_traffic, post_events, run_drift

Headers = dict[str, str]
SEGMENTS = (Segment("free", 300, ("/chat",), ("us",), 0.05),)
STEADY = DEFAULT_WARMUP_DAYS + DEFAULT_REFERENCE_DAYS
TOTAL = STEADY + 4


def days_ending_yesterday(count: int) -> list[date]:
    """The test's days, the last one yesterday. Today is read once, so a run that crosses
    midnight UTC asserts on the same days it posted."""
    today = today_utc()
    return [today - timedelta(days=count - index) for index in range(count)]


def test_a_dearer_build_with_the_same_tokens_alerts_on_cost_alone(
    client: TestClient, auth: Headers
) -> None:
    day_at = days_ending_yesterday(TOTAL)
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
            day_at[index],
            "m",
            "v1" if index < STEADY else "v2-quantized",
            SEGMENTS,
            wobble=0.1,
            seed=5,
        )
    ]
    post_events(client, auth, events)
    run_drift(client, auth, day_at[TOTAL - 1], TOTAL)

    alerts = client.get("/api/v1/alerts", params={"model": "m"}, headers=auth).json()["items"]
    cost = [a for a in alerts if a["signal"].startswith("cost_") and a["dimension"] == "all"]
    assert {a["signal"] for a in cost} == {"cost_p50", "cost_p95"}
    for alert in cost:
        assert alert["status"] == "open"
        assert alert["checkpoint_version"] == "v2-quantized"
        assert alert["day"] == day_at[STEADY].isoformat()
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


@pytest.mark.parametrize("signal", ["latency_p95", "tokens_p50", "cost_p95"])
def test_a_log_scale_value_beyond_a_doubles_range_is_shown_not_raised(signal: str) -> None:
    """A band edge of wild reference days (1e-300 ms latencies beside seconds) can exceed
    e^709.78; the day must not fail on an OverflowError."""
    assert math.isfinite(shown_from_log(signal, 1500.0))
    assert shown_from_log(signal, 1500.0) == shown_from_log(signal, 709.0)
    assert shown_from_log("latency_p95", math.log(250.0)) == pytest.approx(250.0)


def test_repricing_the_reference_checkpoint_is_not_a_cost_shift(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """Both prices doubled after the reference froze: the reference is judged at the new
    prices (its centre up by ln 2), so no cost alert. Then only the output price moves: how
    much the cost moves depends on each call's input/output mix, so cost is not judged until
    a reference at the new prices exists. Without the repricing the doubling alerts at once
    (the 3x test above)."""
    days = STEADY + 6
    model_day = days_ending_yesterday(days)
    checkpoint = client.post(
        "/api/v1/checkpoints", json={"model": "m", "version": "v1"}, headers=auth
    ).json()["id"]
    url = f"/api/v1/checkpoints/{checkpoint}/pricing"

    def price(input_price: float, output_price: float) -> None:
        body = {
            "usd_per_million_input_tokens": input_price,
            "usd_per_million_output_tokens": output_price,
        }
        assert client.put(url, json=body, headers=auth).status_code == 200

    price(1.0, 2.0)
    post_events(
        client,
        auth,
        [
            event
            for index in range(days)
            for event in day_of_traffic(
                random.Random(index), model_day[index], "m", "v1", SEGMENTS, wobble=0.1, seed=9
            )
        ],
    )
    run_drift(client, auth, model_day[STEADY], STEADY + 1)  # freezes, then judges a day
    price(2.0, 4.0)
    run_drift(client, auth, model_day[STEADY + 2], 2)
    price(2.0, 6.0)
    run_drift(client, auth, model_day[STEADY + 4], 2)
    # A rebaseline now takes days at three price levels: cost gets no reference from them
    # (its centre would sit between levels), every other signal does.
    rebaselined = client.post(
        "/api/v1/models/m/rebaseline", json={"reason": "new prices"}, headers=auth
    )
    assert rebaselined.status_code == 201, rebaselined.text
    run_drift(client, auth, model_day[STEADY + 5], 1)

    alerts = client.get("/api/v1/alerts", params={"model": "m"}, headers=auth).json()["items"]
    assert not [a for a in alerts if a["signal"].startswith("cost_")]
    with app.state.sessionmaker() as session:
        judged = {
            j.day: j
            for j in session.scalars(
                select(DriftJudgement).where(
                    DriftJudgement.signal == "cost_p50", DriftJudgement.dimension == "all"
                )
            )
        }
    before, doubled = judged[model_day[STEADY]], judged[model_day[STEADY + 1]]
    assert before.pvalue is not None and doubled.pvalue is not None
    assert before.center is not None and doubled.center is not None
    # The centre as shown (dollars) doubled with the prices.
    assert doubled.center / before.center == pytest.approx(2.0, rel=1e-3)
    for index in (STEADY + 3, STEADY + 4, STEADY + 5):
        assert judged[model_day[index]].pvalue is None  # mix-dependent, then mixed: not judged
    with app.state.sessionmaker() as session:
        newest = session.scalars(
            select(DriftReference).order_by(DriftReference.version.desc())
        ).first()
    assert newest is not None and newest.trigger == "rebaseline"
    assert "tokens_p50|all|all" in newest.stats and "cost_p50|all|all" not in newest.stats


def prices(input_price: float, output_price: float) -> dict[str, float]:
    return {
        "usd_per_million_input_tokens": input_price,
        "usd_per_million_output_tokens": output_price,
    }


def test_a_frozen_cost_entry_is_rescaled_only_by_a_common_price_factor() -> None:
    entry = [12.0, 0.01, 0.001, 28, 0, 1.0, 2.0]  # centre e^12: ~163,000 nano-dollars
    assert priced_entry(entry, prices(1.0, 2.0)) == entry
    tripled = priced_entry(entry, prices(3.0, 6.0))
    assert tripled == pytest.approx([12.0 + math.log(3.0), 0.01, 0.001, 28, 0, 3.0, 6.0])
    # The approximation it rests on, at this cost: ln(1 + 3x) - ln(1 + x) is ln 3.
    x = math.exp(12.0) - 1.0
    assert math.log1p(3 * x) - math.log1p(x) == pytest.approx(math.log(3.0), abs=1e-4)
    assert priced_entry(entry, prices(3.0, 2.0)) is None  # the mix decides: not judged
    # No prices now: the frozen ones still say what the checkpoint cost.
    assert priced_entry(entry, None) == entry
    free_input = [12.0, 0.01, 0.001, 28, 0, 0.0, 2.0]
    assert priced_entry(free_input, prices(0.0, 1.0)) == pytest.approx(
        [12.0 + math.log(0.5), 0.01, 0.001, 28, 0, 0.0, 1.0]
    )
    assert priced_entry(free_input, prices(0.5, 1.0)) is None
    assert priced_entry(entry, prices(0.0, 0.0)) is None
    # Calls so cheap that the +1 nano-dollar matters: not judged after a repricing.
    assert priced_entry([8.0, *entry[1:]], prices(0.5, 1.0)) is None
    assert priced_entry(None, prices(3.0, 6.0)) is None
