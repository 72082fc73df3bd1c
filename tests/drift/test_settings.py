"""Per-project drift settings: the API (defaults, round trip, audit, validation, roles), the
projects.settings keys they share with ingest, and their effect on the daily job (the
reference length and warm-up decide when a reference freezes, the daily alpha the bands'
budget), one project never affecting another."""

from __future__ import annotations

import random
from datetime import date, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app.core.auth import authenticate
from app.core.db import today_utc
from app.models import AuditLog, DriftJudgement, DriftReference
from app.models.project import Role
from tests.conftest import new_key
from tests.drift.traffic import Segment, day_of_traffic, post_events, run_drift
from tests.web.test_pages import sign_in

Headers = dict[str, str]
URL = "/api/v1/drift/settings"
DEFAULTS = {"reference_days": 28, "warmup_days": 7, "daily_alpha": 0.002}
SEGMENTS = (
    Segment("free", 200, ("/chat",), ("us",), 0.05),
    Segment("pro", 100, ("/chat",), ("eu",), 0.05),
)
SHORT = {"reference_days": 14, "warmup_days": 0}
DAYS = 17  # 14 known-good days freeze the short reference; 3 days are judged against it


def day_at(index: int) -> date:
    return today_utc() - timedelta(days=DAYS - index)


def headers(key: str) -> Headers:
    return {"Authorization": f"Bearer {key}"}


def project_id_of(app: FastAPI, key: str) -> int:
    with app.state.sessionmaker() as session:
        return authenticate(session, key).project_id


def test_defaults_then_a_put_round_trips_and_is_audited(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    assert client.get(URL, headers=auth).json() == DEFAULTS
    response = client.put(URL, json={"reference_days": 56}, headers=auth)
    assert response.status_code == 200, response.text
    expected = {**DEFAULTS, "reference_days": 56}
    assert response.json() == expected
    assert client.get(URL, headers=auth).json() == expected
    # The whole object is replaced: a field left out goes back to its default.
    client.put(URL, json={"warmup_days": 3, "daily_alpha": 0.01}, headers=auth)
    assert client.get(URL, headers=auth).json() == {
        "reference_days": 28,
        "warmup_days": 3,
        "daily_alpha": 0.01,
    }
    with app.state.sessionmaker() as session:
        entries = session.scalars(
            select(AuditLog)
            .where(AuditLog.action == "project.settings_changed")
            .order_by(AuditLog.id)
        ).all()
    assert [e.details for e in entries] == [
        {"drift": expected},
        {"drift": {"reference_days": 28, "warmup_days": 3, "daily_alpha": 0.01}},
    ]
    assert entries[0].actor == "acme-admin"


def test_drift_and_online_eval_settings_keep_each_other(client: TestClient, auth: Headers) -> None:
    online_eval = {"online_eval": {"json_validation": True}}
    assert client.put("/api/v1/project/settings", json=online_eval, headers=auth).is_success
    assert client.put(URL, json={"reference_days": 42}, headers=auth).is_success
    assert client.get("/api/v1/project/settings", headers=auth).json() == online_eval
    assert client.put("/api/v1/project/settings", json=online_eval, headers=auth).is_success
    assert client.get(URL, headers=auth).json()["reference_days"] == 42


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"reference_days": 13}, "reference_days"),
        ({"reference_days": 121}, "reference_days"),
        ({"reference_days": 28.5}, "reference_days"),
        ({"reference_days": "28"}, "reference_days"),
        ({"warmup_days": -1}, "warmup_days"),
        ({"warmup_days": 31}, "warmup_days"),
        ({"warmup_days": None}, "warmup_days"),
        ({"daily_alpha": 0.00005}, "daily_alpha"),
        ({"daily_alpha": 0.06}, "daily_alpha"),
        ({"daily_alpha": "lots"}, "daily_alpha"),
        ({"daily_budget": 0.01}, "daily_budget"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(
    client: TestClient, auth: Headers, body: dict[str, Any], field: str
) -> None:
    response = client.put(URL, json=body, headers=auth)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == [f"body.{field}"]
    assert client.get(URL, headers=auth).json() == DEFAULTS


def test_only_an_admin_changes_them_and_a_reader_reads_them(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    client.put(URL, json={"reference_days": 56}, headers=auth)
    writer = headers(new_key(app, "acme", Role.write, "acme-writer"))
    reader = headers(new_key(app, "acme", Role.read, "acme-reader"))
    refused = client.put(URL, json={"reference_days": 14}, headers=writer)
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    assert client.get(URL, headers=reader).json()["reference_days"] == 56


def test_the_drift_page_states_the_project_settings(
    client: TestClient, auth: Headers, admin_key: str
) -> None:
    client.post("/api/v1/checkpoints", json={"model": "m", "version": "v1"}, headers=auth)
    client.put(URL, json={"reference_days": 56, "warmup_days": 3}, headers=auth)
    sign_in(client, admin_key)
    page = client.get("/drift?model=m")
    assert page.status_code == 200
    assert "after its 3-day warm-up, once 56 of them exist" in page.text
    assert "freezes the champion's last 56 known-good days" in page.text


def run_days(client: TestClient, auth: Headers, seed: int) -> None:
    """DAYS days of the same steady traffic for model "m" of the key's project, judged."""
    client.post("/api/v1/checkpoints", json={"model": "m", "version": "v1"}, headers=auth)
    events = [
        e
        for index in range(DAYS)
        for e in day_of_traffic(
            random.Random(index), day_at(index), "m", "v1", SEGMENTS, wobble=0.1, seed=seed
        )
    ]
    post_events(client, auth, events)
    run_drift(client, auth, day_at(DAYS - 1), DAYS)


def test_a_shorter_reference_freezes_sooner_in_its_project_only(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    other_key = new_key(app, "other", Role.admin, "other-admin")
    assert client.put(URL, json=SHORT, headers=auth).is_success
    for key_headers in (auth, headers(other_key)):
        run_days(client, key_headers, seed=5)
    short_id = project_id_of(app, auth["Authorization"].removeprefix("Bearer "))
    other_id = project_id_of(app, other_key)
    with app.state.sessionmaker() as session:
        [reference] = session.scalars(
            select(DriftReference).where(DriftReference.project_id == short_id)
        ).all()
        assert reference.trigger == "warmup"
        assert reference.days == [day_at(i).isoformat() for i in range(14)]
        judged_on = session.scalars(
            select(DriftJudgement.day)
            .where(
                DriftJudgement.project_id == short_id,
                DriftJudgement.reference_version == reference.version,
            )
            .distinct()
            .order_by(DriftJudgement.day)
        ).all()
        assert judged_on == [day_at(i) for i in range(14, DAYS)]
        # Same traffic under the defaults (7 + 28 days): nothing frozen, nothing judged.
        assert (
            session.scalars(
                select(DriftReference).where(DriftReference.project_id == other_id)
            ).all()
            == []
        )
        judged_other = session.scalar(
            select(func.count())
            .select_from(DriftJudgement)
            .where(
                DriftJudgement.project_id == other_id,
                DriftJudgement.reference_version.is_not(None),
            )
        )
        assert judged_other == 0
    assert client.get(URL, headers=headers(other_key)).json() == DEFAULTS


def test_a_smaller_daily_alpha_gives_smaller_band_alphas(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    strict_key = new_key(app, "strict", Role.admin, "strict-admin")
    assert client.put(URL, json=SHORT, headers=auth).is_success
    strict_settings = {**SHORT, "daily_alpha": 0.0005}
    assert client.put(URL, json=strict_settings, headers=headers(strict_key)).is_success
    for key_headers in (auth, headers(strict_key)):
        run_days(client, key_headers, seed=9)
    loose_id = project_id_of(app, auth["Authorization"].removeprefix("Bearer "))
    strict_id = project_id_of(app, strict_key)

    def band_alphas(project_id: int) -> dict[tuple[Any, ...], float]:
        with app.state.sessionmaker() as session:
            rows = session.execute(
                select(
                    DriftJudgement.day,
                    DriftJudgement.signal,
                    DriftJudgement.dimension,
                    DriftJudgement.value,
                    DriftJudgement.band_alpha,
                ).where(DriftJudgement.project_id == project_id, DriftJudgement.band_alpha > 0)
            ).all()
        return {tuple(r[:4]): float(r[4]) for r in rows}

    loose, strict = band_alphas(loose_id), band_alphas(strict_id)
    # Tests that cannot reach significance at the smaller budget drop out of it (Tarone).
    assert len(strict) > 20 and strict.keys() <= loose.keys()
    assert all(strict[k] < loose[k] for k in strict)
    # The whole day's budget scales with the setting (the budget's share stays the same).
    for day in {k[0] for k in loose}:
        loose_total = sum(a for k, a in loose.items() if k[0] == day)
        strict_total = sum(a for k, a in strict.items() if k[0] == day)
        assert strict_total / loose_total == pytest.approx(0.25, rel=0.05)
