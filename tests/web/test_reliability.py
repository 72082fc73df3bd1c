"""The drift page's reliability diagram: per-day equal-mass bins, pooled over the range."""

from __future__ import annotations

import html
import json
import random
import re
from collections import defaultdict
from datetime import date, timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.core.db import today_utc
from app.stats.calibration import DEFAULT_BINS, bin_statistics, equal_mass_bins
from tests.drift.traffic import at, post_events, run_drift
from tests.web.test_pages import sign_in

Headers = dict[str, str]
FIGURE = re.compile(r'data-plotly="([^"]*)"')


def scored_events(day: date, count: int, seed: int) -> list[dict[str, Any]]:
    """Over-confident free users, well-calibrated pro users; ties in the probabilities."""
    rng = random.Random(seed)
    events = []
    for i in range(count):
        segment = rng.choice(["free", "pro"])
        probability = round(rng.random(), 2)
        truth = probability * (0.6 if segment == "free" else 1.0)
        events.append(
            {
                "trace_id": f"cal-{seed}-{i}",
                "timestamp": at(day, i * 41),
                "model": "m",
                "checkpoint_version": "v1",
                "cohort": {"user_segment": segment},
                "probability": probability,
                "label": "1" if rng.random() < truth else "0",
            }
        )
    return events


def pooled_bins(events_by_day: list[list[dict[str, Any]]], segment: str) -> list[np.ndarray]:
    """What the page should plot for a segment: each day's own equal-mass bins, added up."""
    totals: dict[str, np.ndarray] = defaultdict(lambda: np.zeros(DEFAULT_BINS))
    for events in events_by_day:
        members = [e for e in events if e["cohort"]["user_segment"] == segment]
        probs = np.array([e["probability"] for e in members])
        labels = np.array([e["label"] == "1" for e in members])
        stats = bin_statistics(probs, labels, equal_mass_bins(probs), DEFAULT_BINS)
        totals["n"] += stats.count
        totals["p"] += stats.sum_prob
        totals["y"] += stats.sum_label
    filled = totals["n"] > 0
    return [totals["p"][filled] / totals["n"][filled], totals["y"][filled] / totals["n"][filled]]


def figures_of(page: str) -> list[dict[str, Any]]:
    return [json.loads(html.unescape(raw)) for raw in FIGURE.findall(page)]


def test_the_drift_page_draws_the_reliability_of_each_cohort_over_the_range(
    client: TestClient, admin_key: str
) -> None:
    auth = {"Authorization": f"Bearer {admin_key}"}
    client.post("/api/v1/checkpoints", json={"model": "m", "version": "v1"}, headers=auth)
    yesterday = today_utc() - timedelta(days=1)
    days = [yesterday - timedelta(days=1), yesterday]
    events_by_day = [scored_events(day, 300, seed) for seed, day in enumerate(days)]
    post_events(client, auth, [e for events in events_by_day for e in events])
    run_drift(client, auth, yesterday, 2)
    sign_in(client, admin_key)

    page = client.get(
        "/drift",
        params={
            "model": "m",
            "signal": "refusal_rate",
            "dimension": "user_segment",
            "from": days[0].isoformat(),
            "to": days[1].isoformat(),
        },
    )

    assert page.status_code == 200
    assert "Reliability" in page.text and "equal-mass bins" in page.text
    [diagram] = [f for f in figures_of(page.text) if "Reliability" in f["layout"]["title"]["text"]]
    diagonal, *cohorts = diagram["data"]
    assert (diagonal["x"], diagonal["y"]) == ([0, 1], [0, 1])
    assert [t["name"].split(" ")[0] for t in cohorts] == ["free", "pro"]
    for trace in cohorts:
        segment = trace["name"].split(" ")[0]
        expected_x, expected_y = pooled_bins(events_by_day, segment)
        assert trace["x"] == pytest.approx(expected_x.tolist())
        assert trace["y"] == pytest.approx(expected_y.tolist())
        members = sum(e["cohort"]["user_segment"] == segment for ev in events_by_day for e in ev)
        assert sum(trace["customdata"]) == members
        assert "events" in trace["hovertemplate"]
    # The over-confident free tier sits below the diagonal, the calibrated pro tier near it.
    free, pro = cohorts
    assert np.mean(np.subtract(free["y"], free["x"])) < -0.1
    assert abs(np.mean(np.subtract(pro["y"], pro["x"]))) < 0.1

    # No scored events in the range: the page says what to do instead of drawing nothing.
    empty = client.get("/drift", params={"model": "m", "to": (days[0] - timedelta(1)).isoformat()})
    assert "No reliability data for this selection." in empty.text
