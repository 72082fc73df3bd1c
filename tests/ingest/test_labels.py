"""Labels as clients send them: a 0/1 label written as a float (pandas and numpy write 1.0 for
a column that ever held a NaN) is stored as the same text as the integer, on REST and OTLP,
so the calibration signals, which read labels `1/true/yes` and `0/false/no`, count it."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.ingest.factories import event
from tests.ingest.spans import export_spans, recorded_span

Headers = dict[str, str]


@pytest.mark.parametrize(
    ("sent", "stored"),
    [(1.0, "1"), (0.0, "0"), (1, "1"), (True, "true"), (2.0, "2"), (0.5, "0.5"), ("1.0", "1.0")],
)
def test_a_label_sent_as_a_whole_float_is_stored_as_the_integer(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any], sent: Any, stored: str
) -> None:
    body = {"events": [event(0, probability=0.8, label=sent)]}
    assert client.post("/api/v1/events", json=body, headers=auth).json()["accepted"] == 1
    (item,) = client.get("/api/v1/events", headers=auth).json()["items"]
    assert item["label"] == stored


def test_a_whole_float_label_over_otlp_is_stored_as_the_integer(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any]
) -> None:
    span = recorded_span(
        {
            "plumbline.model": "support-bot",
            "plumbline.checkpoint": "v1",
            "plumbline.probability": 0.8,
            "plumbline.label": 1.0,
        }
    )
    export_spans(client, auth, [span])
    (item,) = client.get("/api/v1/events", headers=auth).json()["items"]
    assert item["label"] == "1"
