"""The daily rollup against the same numbers computed in Python from the events sent."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.core.db import today_utc
from app.stats.calibration import (
    DEFAULT_BINS,
    bin_statistics,
    calibration_summary,
    debiased_ece,
    equal_mass_bins,
)
from tests.drift.traffic import at, post_events

Headers = dict[str, str]


def mixed_events(day_offset: int, count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    day = today_utc() - timedelta(days=day_offset)
    events = []
    for i in range(count):
        maybe = lambda p: None if rng.random() < 0.2 else rng.random() < p  # noqa: E731
        event: dict[str, Any] = {
            "trace_id": f"t{seed}-{i}",
            "timestamp": at(day, i * 37),
            "model": "m",
            "checkpoint_version": "v1",
            "cohort": {
                "route": rng.choice(["/a", "/b"]),
                "user_segment": rng.choice(["free", "pro"]),
                "locale": rng.choice(["en", "de", "fr"]),
            },
            "eval_passed": maybe(0.8),
            "fallback": maybe(0.1),
            "refusal": maybe(0.2),
            "should_refuse": maybe(0.3),
        }
        if i % 3 == 0:
            event["feedback"] = rng.choice(["up", "down"])
        if i % 2 == 0:  # ties included: a tie always shares one bin
            event["probability"] = round(rng.random(), 1)
            event["label"] = rng.choice(["1", "0", "true", "false"])
        events.append(event)
    return events


def expected_rates(events: list[dict[str, Any]]) -> dict[tuple[str, str, str], tuple[int, int]]:
    conditions = {
        "eval_fail_rate": (
            lambda e: e["eval_passed"] is False,
            lambda e: e["eval_passed"] is not None,
        ),
        "fallback_rate": (lambda e: e["fallback"] is True, lambda e: e["fallback"] is not None),
        "refusal_rate": (lambda e: e["refusal"] is True, lambda e: e["refusal"] is not None),
        "thumbs_down_rate": (lambda e: e.get("feedback") == "down", lambda e: "feedback" in e),
        "over_refusal_rate": (
            lambda e: e["refusal"] is True and e["should_refuse"] is False,
            lambda e: e["refusal"] is not None and e["should_refuse"] is False,
        ),
        "under_refusal_rate": (
            lambda e: e["refusal"] is False and e["should_refuse"] is True,
            lambda e: e["refusal"] is not None and e["should_refuse"] is True,
        ),
    }
    counts: dict[tuple[str, str, str], list[int]] = defaultdict(lambda: [0, 0])
    for event in events:
        cohorts = [("all", "all"), *event["cohort"].items()]
        for signal, (numerator, denominator) in conditions.items():
            if not denominator(event):
                continue
            for dimension, value in cohorts:
                counts[(signal, dimension, value)][0] += numerator(event)
                counts[(signal, dimension, value)][1] += 1
    return {key: (n, d) for key, (n, d) in counts.items()}


def signals_of(client: TestClient, auth: Headers, **params: Any) -> list[dict[str, Any]]:
    items, cursor = [], None
    while True:
        page = client.get(
            "/api/v1/signals",
            params={**params, "limit": 1000, **({"cursor": cursor} if cursor else {})},
            headers=auth,
        ).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def test_every_rate_and_cohort_matches_python(client: TestClient, auth: Headers) -> None:
    client.post("/api/v1/checkpoints", json={"model": "m", "version": "v1"}, headers=auth)
    events = mixed_events(1, 600, seed=1)
    neighbours = mixed_events(2, 50, seed=2) + mixed_events(0, 50, seed=3)  # other days
    post_events(client, auth, events + neighbours)
    day = (today_utc() - timedelta(days=1)).isoformat()
    run = client.post("/api/v1/drift/run", json={"date": day}, headers=auth)
    assert run.status_code == 200, run.text
    rows = signals_of(client, auth, model="m", **{"from": day, "to": day})
    # No checkpoint of the project has prices: no cost rows (and the scan joined none).
    assert not [r for r in rows if r["signal"].startswith("cost_")]
    got = {
        (r["signal"], r["dimension"], r["value"]): (r["numerator"], r["denominator"])
        for r in rows
        if r["signal"].endswith("_rate")
    }
    assert got == expected_rates(events)
    assert {r["dimension"] for r in rows} == {"all", "route", "user_segment", "locale"}
    for row in rows:
        assert row["day"] == day and row["checkpoint_version"] == "v1"

    # Calibration per cohort, against app/stats on the same rows (labels "true" / "1" are 1).
    scored = [e for e in events if "probability" in e]
    for dimension, value in (("all", "all"), ("locale", "de"), ("route", "/b")):
        members = [e for e in scored if dimension == "all" or e["cohort"][dimension] == value]
        probs = np.array([e["probability"] for e in members])
        labels = np.array([e["label"] in ("1", "true") for e in members])
        summary = calibration_summary(probs, labels)
        by_signal = {
            r["signal"]: r for r in rows if (r["dimension"], r["value"]) == (dimension, value)
        }
        assert by_signal["brier_score"]["rate"] == pytest.approx(summary.decomposition.brier)
        assert by_signal["brier_score"]["denominator"] == len(members)
        assert by_signal["brier_score"]["extra"]["reliability"] == pytest.approx(
            summary.decomposition.reliability
        )
        extra = by_signal["brier_score"]["extra"]
        for part in ("resolution", "uncertainty"):
            assert extra[part] == pytest.approx(getattr(summary.decomposition, part))
        # The stored per-bin sums are the ones app/stats computes from the raw arrays.
        expected = bin_statistics(probs, labels, equal_mass_bins(probs), DEFAULT_BINS)
        # The calibration error shown is the debiased one (the plug-in ECE reads high on
        # small cohorts), from the same bins.
        assert by_signal["ece"]["rate"] == pytest.approx(
            float(
                debiased_ece(
                    expected.count, expected.sum_prob, expected.sum_label, expected.sum_prob_sq
                )
            )
        )
        filled = np.flatnonzero(expected.count)
        assert [b["bin"] for b in extra["bins"]] == filled.tolist()
        for name, column in (
            ("n", expected.count),
            ("sum_prob", expected.sum_prob),
            ("sum_label", expected.sum_label),
            ("sum_prob_sq", expected.sum_prob_sq),
            ("sum_prob_label", expected.sum_prob_label),
        ):
            assert [b[name] for b in extra["bins"]] == pytest.approx(column[filled].tolist())


def rounded(value: Any) -> Any:
    """Floats to 9 significant digits, nested: sums taken in another order agree to ~1e-15."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item) for item in value]
    return value


def test_events_stored_before_cohort_interning_roll_up_exactly_like_interned_ones(
    client: TestClient, auth: Headers, db: Session
) -> None:
    """Events stored before migration 0010 have no `cohort_id`: the scan groups them by their
    JSON, and a day holding both kinds gives the rows a day of interned events gives."""
    client.post("/api/v1/checkpoints", json={"model": "m", "version": "v1"}, headers=auth)
    post_events(client, auth, mixed_events(1, 400, seed=5))
    day = (today_utc() - timedelta(days=1)).isoformat()

    def rows_of_the_day() -> dict[tuple[str, str, str], Any]:
        client.post("/api/v1/drift/run", json={"date": day}, headers=auth).raise_for_status()
        return {
            (r["signal"], r["dimension"], r["value"]): rounded(
                [r["numerator"], r["denominator"], r["rate"], r["extra"]]
            )
            for r in signals_of(client, auth, model="m", **{"from": day, "to": day})
        }

    interned = rows_of_the_day()
    assert {dimension for _, dimension, _ in interned} == {"all", "route", "user_segment", "locale"}
    for legacy_share in ("id % 2 = 0", "TRUE"):
        cleared = db.execute(text(f"UPDATE events SET cohort_id = NULL WHERE {legacy_share}"))
        db.commit()
        assert cleared.rowcount >= 200  # type: ignore[attr-defined]
        assert rows_of_the_day() == interned


def test_a_cohort_key_named_all_is_refused_and_old_ones_are_left_out_of_the_rollup(
    client: TestClient, auth: Headers, db: Session
) -> None:
    """`all` names the whole population: ingest refuses it as a cohort key, and events stored
    before it did (here written into the stored JSON, interned and not) neither fail the day
    on a second population row nor change it."""
    client.post("/api/v1/checkpoints", json={"model": "m", "version": "v1"}, headers=auth)
    event = {**mixed_events(1, 1, seed=9)[0], "cohort": {"all": "x"}}
    refused = client.post("/api/v1/events", json={"events": [event]}, headers=auth).json()
    assert refused["accepted"] == 0
    assert refused["rejected"][0]["error"].startswith("cohort: 'all' names the whole population")
    post_events(client, auth, mixed_events(1, 200, seed=7))
    day = (today_utc() - timedelta(days=1)).isoformat()

    def rows_of_the_day() -> dict[tuple[str, str, str], Any]:
        run = client.post("/api/v1/drift/run", json={"date": day}, headers=auth)
        assert run.status_code == 200, run.text
        return {
            (r["signal"], r["dimension"], r["value"]): rounded([r["numerator"], r["denominator"]])
            for r in signals_of(client, auth, model="m", **{"from": day, "to": day})
        }

    before = rows_of_the_day()
    with_all = "json_insert(cohort, '$.all', 'x')"
    if db.get_bind().dialect.name == "postgresql":
        with_all = """cohort || '{"all": "x"}'::jsonb"""
    db.execute(text(f"UPDATE event_cohorts SET cohort = {with_all}"))
    db.execute(text(f"UPDATE events SET cohort = {with_all}"))
    db.execute(text("UPDATE events SET cohort_id = NULL WHERE id % 2 = 0"))
    db.commit()
    assert rows_of_the_day() == before


def test_rerunning_a_day_replaces_its_rows_and_counts_late_events(
    client: TestClient, auth: Headers
) -> None:
    client.post("/api/v1/checkpoints", json={"model": "m", "version": "v1"}, headers=auth)
    day = (today_utc() - timedelta(days=1)).isoformat()
    events = mixed_events(1, 200, seed=4)
    post_events(client, auth, events[:150])
    client.post("/api/v1/drift/run", json={"date": day}, headers=auth).raise_for_status()
    first = signals_of(client, auth, signal="refusal_rate", dimension="all")
    post_events(client, auth, events[150:])  # late arrivals
    client.post("/api/v1/drift/run", json={"date": day}, headers=auth).raise_for_status()
    second = signals_of(client, auth, signal="refusal_rate", dimension="all")
    assert len(first) == len(second) == 1
    assert second[0]["denominator"] == expected_rates(events)[("refusal_rate", "all", "all")][1]
    assert second[0]["denominator"] > first[0]["denominator"]


def test_drift_run_validates_its_body(client: TestClient, auth: Headers) -> None:
    bad = client.post("/api/v1/drift/run", json={"date": "yesterday"}, headers=auth)
    assert bad.status_code == 422 and "date" in bad.json()["detail"]
    empty = client.post("/api/v1/drift/run", json={}, headers=auth)
    assert empty.status_code == 200 and empty.json()["signals"] == 0
    for not_over in (today_utc(), today_utc() + timedelta(days=3)):
        early = client.post("/api/v1/drift/run", json={"date": str(not_over)}, headers=auth)
        assert early.status_code == 422 and early.json()["field"] == "date"
        assert "has not ended yet" in early.json()["detail"]


def test_latency_token_and_cost_signals_are_the_log_normal_fit_of_the_rest_fields(
    client: TestClient, auth: Headers
) -> None:
    v1 = client.post("/api/v1/checkpoints", json={"model": "m", "version": "v1"}, headers=auth)
    client.post("/api/v1/checkpoints", json={"model": "m2", "version": "v1"}, headers=auth)
    priced = client.put(
        f"/api/v1/checkpoints/{v1.json()['id']}/pricing",
        json={"usd_per_million_input_tokens": 0.5, "usd_per_million_output_tokens": 1.5},
        headers=auth,
    )
    assert priced.status_code == 200, priced.text
    day = today_utc() - timedelta(days=1)
    rng = np.random.default_rng(3)
    latency = np.round(np.exp(rng.normal(6.0, 0.5, 120)), 1)
    tokens_in = rng.integers(50, 400, 120)
    tokens_out = rng.integers(0, 200, 120)
    events = [
        {
            "trace_id": f"t-{i}",
            "timestamp": at(day, i * 60),
            "model": "m",
            "checkpoint_version": "v1",
            "cohort": {"route": "/a" if i % 2 else "/b"},
            "latency_ms": float(latency[i]),
            "input_tokens": int(tokens_in[i]),
            "output_tokens": int(tokens_out[i]),
        }
        for i in range(120)
    ]
    # The same calls on an unpriced checkpoint of another model: tokens, but no cost.
    unpriced = [{**e, "trace_id": f"u-{i}", "model": "m2"} for i, e in enumerate(events)]
    post_events(client, auth, events + unpriced)
    stored = client.get("/api/v1/events", params={"limit": 1}, headers=auth).json()["items"][0]
    assert stored["input_tokens"] is not None and stored["output_tokens"] is not None
    client.post("/api/v1/drift/run", json={"date": day.isoformat()}, headers=auth)
    rows = {
        (r["signal"], r["dimension"], r["value"]): r
        for r in signals_of(client, auth, model="m")
        if r["signal"].startswith(("latency_", "tokens_", "cost_"))
    }
    unpriced_signals = {r["signal"] for r in signals_of(client, auth, model="m2")}
    assert {"tokens_p50", "tokens_p95"} <= unpriced_signals
    assert not any(s.startswith("cost_") for s in unpriced_signals)
    z95 = 1.6448536269514722
    for route, members in (("all", np.arange(120)), ("/a", np.arange(1, 120, 2))):
        key_dim = "all" if route == "all" else "route"
        logs = np.log(latency[members])
        total = np.log(1.0 + tokens_in[members] + tokens_out[members])
        # Nano-dollars: 1000 x USD per million tokens x tokens; shown in dollars.
        cost = np.log(1.0 + 1000 * (0.5 * tokens_in[members] + 1.5 * tokens_out[members]))
        for name, values, shift, scale in (
            ("latency", logs, 0.0, 1.0),
            ("tokens", total, 1.0, 1.0),
            ("cost", cost, 1.0, 1e-9),
        ):
            mean, sd = values.mean(), values.std(ddof=1)
            p50 = rows[(f"{name}_p50", key_dim, route)]
            p95 = rows[(f"{name}_p95", key_dim, route)]
            assert p50["rate"] == pytest.approx((np.exp(mean) - shift) * scale, rel=1e-9)
            assert p95["rate"] == pytest.approx((np.exp(mean + z95 * sd) - shift) * scale, rel=1e-9)
            assert p50["denominator"] == len(members)
            assert p50["extra"]["sum_log"] == pytest.approx(values.sum(), rel=1e-9)
            assert p50["extra"]["sum_log_sq"] == pytest.approx((values**2).sum(), rel=1e-9)


def test_token_counts_at_their_bound_do_not_overflow_the_scan(
    client: TestClient, auth: Headers
) -> None:
    """Ingest takes each count up to 2**31 - 1; their sum overflows a 32-bit integer, which
    would fail the whole day's scan on PostgreSQL if it were added as one."""
    client.post("/api/v1/checkpoints", json={"model": "m", "version": "v1"}, headers=auth)
    day = today_utc() - timedelta(days=1)
    huge = 2**31 - 1
    events = [
        {
            "trace_id": f"t-{i}",
            "timestamp": at(day, i * 60),
            "model": "m",
            "checkpoint_version": "v1",
            "cohort": {"route": "/a"},
            "input_tokens": huge if i == 0 else 100,
            "output_tokens": huge if i == 0 else 50,
        }
        for i in range(40)
    ]
    post_events(client, auth, events)
    response = client.post("/api/v1/drift/run", json={"date": day.isoformat()}, headers=auth)
    assert response.status_code == 200, response.text
    rows = {r["signal"]: r for r in signals_of(client, auth, model="m", dimension="all")}
    logs = np.log([1.0 + 2 * huge] + [151.0] * 39)
    assert rows["tokens_p50"]["extra"]["sum_log"] == pytest.approx(logs.sum(), rel=1e-9)
