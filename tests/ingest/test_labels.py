"""Labels as clients send them: a 0/1 label written as a float (pandas and numpy write 1.0 for
a column that ever held a NaN) is stored as the same text as the integer, on REST and OTLP,
so the calibration signals, which read labels `1/true/yes` and `0/false/no`, count it."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tests.ingest.factories import event
from tests.ingest.spans import recorded_span

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
    headers = {**auth, "content-type": "application/x-protobuf"}
    response = client.post(
        "/v1/traces", content=encode_spans([span]).SerializeToString(), headers=headers
    )
    assert response.status_code == 200, response.text
    assert (
        ExportTraceServiceResponse.FromString(response.content).partial_success.rejected_spans == 0
    )
    (item,) = client.get("/api/v1/events", headers=auth).json()["items"]
    assert item["label"] == "1"
