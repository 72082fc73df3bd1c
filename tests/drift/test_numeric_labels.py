"""Labels count in calibration whatever their spelling: JSON numbers (1, 1.0) and flags
(t/f, y/n, on/off)."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.core.db import today_utc
from app.stats.calibration import calibration_summary
from tests.drift.champions import checkpoints
from tests.drift.traffic import at, post_events, run_drift

Headers = dict[str, str]


def assert_brier_counts_all(
    client: TestClient, auth: Headers, day: date, events: list[dict[str, Any]], truth: list[bool]
) -> None:
    """Sends `events` (all labelled, `truth` their 0/1 values), judges `day`: its one
    brier_score row counts every event, at the Brier score of the events as `truth` reads
    them."""
    post_events(client, auth, events)
    run_drift(client, auth, day)
    rows = client.get(
        "/api/v1/signals",
        params={"model": "m", "signal": "brier_score", "dimension": "all", "limit": 10},
        headers=auth,
    ).json()["items"]
    assert len(rows) == 1
    probs = np.array([e["probability"] for e in events])
    assert rows[0]["denominator"] == len(events)
    expected = calibration_summary(probs, np.array(truth)).decomposition.brier
    assert rows[0]["rate"] == pytest.approx(expected)


def test_float_labels_from_a_dataframe_are_counted_in_brier_and_calibration(
    client: TestClient, auth: Headers
) -> None:
    """A pandas column of 0/1 floats serialises as 1.0 / 0.0; ingest stores them as "1.0" /
    "0.0". Before, the rollup knew only "1"/"0": every such event was silently left out of
    brier_score and ece (no row at all when all labels were floats)."""
    checkpoints(client, auth, "m", ["v1"])
    day = today_utc() - timedelta(days=1)
    events: list[dict[str, Any]] = []
    for k in range(200):
        probability = round((k % 10) / 10 + 0.05, 2)
        label: Any = [1.0, 0.0, 1, 0, True][k % 5] if k % 2 else float(k % 3 == 0)
        events.append(
            {
                "trace_id": f"t{k}",
                "timestamp": at(day, k * 60),
                "model": "m",
                "checkpoint_version": "v1",
                "probability": probability,
                "label": label,
            }
        )
    assert_brier_counts_all(client, auth, day, events, [bool(e["label"]) for e in events])


def test_labels_spelled_as_flags_are_counted_in_brier_and_calibration(
    client: TestClient, auth: Headers
) -> None:
    """Every spelling a flag accepts (t/f as psql and COPY print booleans, y/n, on/off, any
    case) is a 0/1 label too. Before, only 1/1.0/true/yes and their negatives counted: an
    export of a boolean column from PostgreSQL left every event out of brier_score and ece,
    silently (the events were stored, their labels kept as sent)."""
    checkpoints(client, auth, "m", ["v1"])
    day = today_utc() - timedelta(days=1)
    spellings = [("t", True), ("F", False), ("Y", True), ("n", False), ("On", True)]
    spellings += [("off", False), ("yes", True), ("0", False)]
    events: list[dict[str, Any]] = []
    truth: list[bool] = []
    for k in range(160):
        label, value = spellings[k % len(spellings)]
        events.append(
            {
                "trace_id": f"t{k}",
                "timestamp": at(day, k * 60),
                "model": "m",
                "checkpoint_version": "v1",
                "probability": round((k % 10) / 10 + 0.05, 2),
                "label": label,
            }
        )
        truth.append(value)
    assert_brier_counts_all(client, auth, day, events, truth)
