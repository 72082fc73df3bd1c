"""The same call sent over REST and over OTLP (the real SDK's encoding) lands in the same
cohort with the same fields."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Event
from tests.ingest.factories import event
from tests.ingest.spans import export_spans, recorded_span

Headers = dict[str, str]


_COMPARED = (
    "cohort",
    "checkpoint_version",
    "input",
    "output",
    "fallback",
    "eval_passed",
    "probability",
    "label",
)


def test_the_same_call_over_rest_and_otlp_lands_in_the_same_cohort(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any], db: Session
) -> None:
    """An empty dimension value means the dimension is absent on both paths (as an empty cell
    of a dataset does), and numbers and flags become the same text."""
    span = recorded_span(
        {
            "plumbline.model": "support-bot",
            "plumbline.checkpoint": "v1",
            "plumbline.route": "/chat",
            "plumbline.user_segment": "",
            "plumbline.cohort.tier": 3,
            "plumbline.cohort.beta": True,
            "plumbline.cohort.ratio": 0.5,
            "plumbline.fallback": False,
            "plumbline.eval_passed": True,
            "plumbline.probability": 0.25,
            "plumbline.label": 7,
            "input.value": "Where is my order?",
            "output.value": "It ships today.",
        }
    )
    export_spans(client, auth, [span])
    rest = event(
        0,
        trace_id="rest-copy",
        cohort={"route": "/chat", "user_segment": "", "tier": 3, "beta": True, "ratio": 0.5},
        fallback=False,
        eval_passed=True,
        probability=0.25,
        label=7,
        input="Where is my order?",
        output="It ships today.",
    )
    answer = client.post("/api/v1/events", json={"events": [rest]}, headers=auth).json()
    assert answer["accepted"] == 1, answer
    by_source = {
        item["source"]: item for item in client.get("/api/v1/events", headers=auth).json()["items"]
    }
    otlp_fields = {name: by_source["otlp"][name] for name in _COMPARED}
    rest_fields = {name: by_source["rest"][name] for name in _COMPARED}
    assert otlp_fields == rest_fields
    assert rest_fields["cohort"] == {"route": "/chat", "tier": "3", "beta": "true", "ratio": "0.5"}
    cohort_ids = db.execute(select(Event.source, Event.cohort_id)).all()
    assert len({cohort_id for _, cohort_id in cohort_ids}) == 1, cohort_ids


def test_a_null_dimension_is_absent_over_rest_as_over_otlp(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any]
) -> None:
    """A client filling the cohort from a field it does not know for this user sends null:
    the call is stored without that dimension, as OTLP stores it, never refused (refusing
    it left exactly those users' calls out of every rate of the population)."""
    span = recorded_span(
        {
            "metadata": json.dumps(
                {"plumbline.model": "support-bot", "checkpoint": "v1", "user_segment": None}
            ),
            "openinference.span.kind": "LLM",
            "plumbline.route": "/chat",
        }
    )
    export_spans(client, auth, [span])
    rest = event(0, cohort={"route": "/chat", "user_segment": None})
    answer = client.post("/api/v1/events", json={"events": [rest]}, headers=auth).json()
    assert answer == {"accepted": 1, "duplicates": 0, "rejected": []}
    items = client.get("/api/v1/events", headers=auth).json()["items"]
    assert {item["source"]: item["cohort"] for item in items} == {
        "otlp": {"route": "/chat"},
        "rest": {"route": "/chat"},
    }


_FLAGS = ("fallback", "refusal", "eval_passed", "should_refuse")


@pytest.mark.parametrize(
    "written",
    [("yes", 1, "no", 0), ("1", "on", "0", "off"), ("TRUE", "t", "False", "n")],
    ids=["words-and-integers", "digits-and-on-off", "any-case"],
)
def test_flags_written_as_text_or_numbers_mean_the_same_over_rest_and_otlp(
    client: TestClient, auth: Headers, checkpoint: dict[str, Any], written: tuple[Any, ...]
) -> None:
    """A flag spelled as REST accepts it is the same flag in OTLP metadata (JSON) and
    attributes; read as absent, its event left the rate's denominator on one path only."""
    in_metadata = dict(zip(_FLAGS[:2], written[:2], strict=True))
    as_attributes = {
        f"plumbline.{flag}": value for flag, value in zip(_FLAGS[2:], written[2:], strict=True)
    }
    span = recorded_span(
        {
            "plumbline.model": "support-bot",
            "plumbline.checkpoint": "v1",
            "metadata": json.dumps(in_metadata),
            **as_attributes,
        }
    )
    export_spans(client, auth, [span])
    rest = event(0, **dict(zip(_FLAGS, written, strict=True)))
    answer = client.post("/api/v1/events", json={"events": [rest]}, headers=auth).json()
    assert answer["accepted"] == 1, answer
    by_source = {
        item["source"]: {flag: item[flag] for flag in _FLAGS}
        for item in client.get("/api/v1/events", headers=auth).json()["items"]
    }
    expected = {"fallback": True, "refusal": True, "eval_passed": False, "should_refuse": False}
    assert by_source == {"rest": expected, "otlp": expected}
