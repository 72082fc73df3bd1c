"""A dataset cohort typed in another Unicode form is the cohort it means: rows' cohort
dimensions and a version's `cohort_risk` are stored in NFC, as ingest stores events' (so
"café" composed, U+00E9, and decomposed, e + U+0301, is one cohort), and the cohort declared
high-risk in either form is the one the gate guards and the drift job weights."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.drift.judge import declared_high_risk
from app.gates.schemas import GatePolicySpec
from app.models import DatasetVersion, Project
from tests.gates.test_gates import EVALUATOR, Headers, comparison, gate, passing, rows_of, runs_for

CAFE = "caf\u00e9"
"""Composed: NFC, as production events' cohorts are stored."""
CAFE_TYPED = "cafe\u0301"
"""Decomposed: what some keyboards, files and tools produce."""


def test_a_cohort_declared_high_risk_in_decomposed_form_is_guarded_and_weighted_as_nfc(
    app: FastAPI, client: TestClient, auth: Headers, db: Session
) -> None:
    """Before, the rows kept the form they were typed in and so did the declaration: the
    composed rows (as a version from traces holds them) were a cohort of their own that the
    gate did not guard, and the drift job looked for the decomposed form among events, which
    never carry it."""
    rows = rows_of(CAFE, 20, "low") + rows_of(CAFE_TYPED, 20, "low")
    rows = [{**row, "key": f"cafe-{i}"} for i, row in enumerate(rows)]
    rows += rows_of("general", 190, "low")
    failing = {f"cafe-{i}" for i in range(0, 40, 2)}  # 20 of the 40, in both forms
    _, cand_run = runs_for(
        client,
        auth,
        rows,
        {EVALUATOR: passing(rows)},
        {EVALUATOR: passing(rows, failing)},
        cohort_risk={"route": {CAFE_TYPED: "high"}},
    )
    versions = client.get("/api/v1/datasets/golden/versions", headers=auth).json()["items"]
    assert [v["cohort_risk"] for v in versions] == [{"route": {CAFE: "high"}}]
    stored = client.get("/api/v1/datasets/golden/versions/1/rows?limit=500", headers=auth).json()
    assert {row["cohort"]["route"] for row in stored["items"]} == {CAFE, "general"}

    result = gate(client, auth, cand_run)
    cafe = comparison(result, "route", CAFE)
    assert cafe["guarded"] and cafe["risk"] == "high" and cafe["n"] == 40
    assert cafe["status"] == "block" and result["verdict"] == "block"
    assert not [c for c in result["comparisons"] if c["value"] == CAFE_TYPED]

    project_id = db.scalar(select(Project.id).where(Project.name == "acme"))
    assert project_id is not None
    assert declared_high_risk(db, project_id) == {("route", CAFE)}
    # A version stored before declarations were normalised still names the NFC cohort.
    version = db.scalars(select(DatasetVersion)).one()
    version.cohort_risk = {"route": {CAFE_TYPED: "high"}}
    db.commit()
    assert declared_high_risk(db, project_id) == {("route", CAFE)}


def test_two_names_equal_once_normalised_are_refused_naming_the_field(
    client: TestClient, auth: Headers
) -> None:
    assert client.post("/api/v1/datasets", json={"name": "d"}, headers=auth).status_code == 201
    row = {"key": "k", "input": "q", "cohort": {"route": CAFE}}
    twice = {"route": {CAFE: "high", CAFE_TYPED: "low"}}
    declared = client.post(
        "/api/v1/datasets/d/versions", json={"rows": [row], "cohort_risk": twice}, headers=auth
    )
    assert declared.status_code == 422, declared.text
    assert declared.json()["field"] == f"cohort_risk.route.{CAFE}"
    dimensions = {**row, "cohort": {CAFE: "a", CAFE_TYPED: "b"}}
    refused = client.post("/api/v1/datasets/d/versions", json={"rows": [dimensions]}, headers=auth)
    assert refused.status_code == 422, refused.text
    assert refused.json()["field"] == "cohort" and refused.json()["row"] == 1
    assert "Unicode-normalised" in refused.json()["detail"]


def test_a_gate_policy_declares_cohorts_in_nfc_too() -> None:
    """The policy's `cohort_risk` is matched against the same rows as the version's."""
    policy = GatePolicySpec(cohort_risk={"route": {CAFE_TYPED: "high"}})
    assert policy.cohort_risk == {"route": {CAFE: "high"}}
    with pytest.raises(ValidationError, match="Unicode-normalised"):
        GatePolicySpec(cohort_risk={"route": {CAFE: "high", CAFE_TYPED: "low"}})
