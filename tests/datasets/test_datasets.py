"""Datasets over REST: immutable hashed versions, diffs, uploads, bad rows, traces."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.ingest.partitions import create_partitions
from app.models import DatasetRow, DatasetVersion, Event, Model
from tests.datasets.support import Headers, all_pages, count_rows, make_dataset, register

ROWS = [
    {"key": "k2", "input": "Where is my parcel?", "cohort": {"route": "shipping"}, "risk": "high"},
    {
        "key": "k1",
        "input": "Can I get a refund?",
        "expected": "Yes, within 30 days.",
        "context": ["Refunds are possible within 30 days."],
        "cohort": {"route": "billing", "user_segment": "free"},
        "expected_behavior": "answer",
        "label": "refund",
        "metadata": {"source": "support tickets", "ticket": 17},
    },
]


def canonical_hash(rows: list[dict[str, Any]]) -> str:
    """The documented definition, computed independently: sha256 over each row's sha256 of
    its canonical JSON (every field, defaults filled in), in key order."""
    defaults = {
        "expected": None,
        "context": None,
        "cohort": {},
        "risk": "medium",
        "expected_behavior": None,
        "label": None,
        "metadata": {},
    }
    digest = hashlib.sha256()
    for row in sorted(rows, key=lambda row: row["key"]):
        canonical = json.dumps(
            {**defaults, **row}, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        digest.update(hashlib.sha256(canonical.encode()).hexdigest().encode() + b"\n")
    return digest.hexdigest()


def upload(client: TestClient, auth: Headers, name: str, filename: str, content: bytes) -> Any:
    return client.post(
        f"/api/v1/datasets/{name}/versions",
        files={"file": (filename, io.BytesIO(content), "application/octet-stream")},
        headers=auth,
    )


def test_versions_are_numbered_hashed_immutable_and_idempotent(
    client: TestClient, auth: Headers
) -> None:
    first = make_dataset(client, auth, "support-golden", ROWS)
    assert first["version"] == 1 and first["row_count"] == 2 and first["created"] is True
    assert first["content_hash"] == canonical_hash(ROWS)

    same_rows_reordered = client.post(
        "/api/v1/datasets/support-golden/versions",
        json={"rows": list(reversed(ROWS))},
        headers=auth,
    )
    assert same_rows_reordered.status_code == 200
    assert same_rows_reordered.json()["version"] == 1
    assert same_rows_reordered.json()["created"] is False

    changed = [{**ROWS[0], "risk": "low"}, ROWS[1], {"key": "k3", "input": "Hi ✓ 你好"}]
    second = client.post(
        "/api/v1/datasets/support-golden/versions",
        json={"rows": changed, "note": "risk review"},
        headers=auth,
    )
    assert second.status_code == 201, second.text
    assert second.json()["version"] == 2 and second.json()["note"] == "risk review"
    assert second.json()["content_hash"] == canonical_hash(changed)

    versions = client.get("/api/v1/datasets/support-golden/versions", headers=auth).json()
    assert [v["version"] for v in versions["items"]] == [2, 1]
    dataset = client.get("/api/v1/datasets/support-golden", headers=auth).json()
    assert dataset["latest_version"] == 2
    listed = client.get("/api/v1/datasets", headers=auth).json()["items"]
    assert [(d["name"], d["latest_version"]) for d in listed] == [("support-golden", 2)]

    rows_v1 = all_pages(client, auth, "/api/v1/datasets/support-golden/versions/1/rows", limit=1)
    assert [row["key"] for row in rows_v1] == ["k2", "k1"]  # insertion order
    k1 = rows_v1[1]
    assert k1["metadata"] == {"source": "support tickets", "ticket": 17}
    assert k1["cohort"] == {"route": "billing", "user_segment": "free"}
    assert k1["context"] == ["Refunds are possible within 30 days."]
    assert rows_v1[0]["risk"] == "high"  # version 1 unchanged by version 2

    assert (
        client.post("/api/v1/datasets", json={"name": "support-golden"}, headers=auth).status_code
        == 409
    )
    missing = client.get("/api/v1/datasets/support-golden/versions/9/rows", headers=auth)
    assert missing.status_code == 404


def test_diff_names_added_removed_and_changed_keys(client: TestClient, auth: Headers) -> None:
    make_dataset(client, auth, "golden", ROWS)
    new_rows = [
        {**ROWS[1], "expected": "Yes, within 14 days."},
        {"key": "k9", "input": "new question"},
    ]
    client.post("/api/v1/datasets/golden/versions", json={"rows": new_rows}, headers=auth)
    diff = client.get("/api/v1/datasets/golden/diff?from=1&to=2", headers=auth).json()
    assert diff["added"] == ["k9"] and diff["removed"] == ["k2"] and diff["changed"] == ["k1"]
    assert diff["counts"] == {"added": 1, "removed": 1, "changed": 1}
    assert diff["truncated"] is False
    back = client.get("/api/v1/datasets/golden/diff?from=2&to=1&limit=1", headers=auth).json()
    assert back["added"] == ["k2"] and back["removed"] == ["k9"]
    assert client.get("/api/v1/datasets/golden/diff?from=1&to=3", headers=auth).status_code == 404


def test_a_bad_row_is_named_by_number_and_field_and_nothing_is_written(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    client.post("/api/v1/datasets", json={"name": "golden"}, headers=auth)
    cases = [
        ({"key": "a", "input": "x", "risk": "extreme"}, 3, "risk"),
        ({"key": "a", "input": "x", "cohort": {"route": 7}}, 3, "cohort.route"),
        ({"input": "no key"}, 3, "key"),
        ({"key": "k1", "input": "duplicate"}, 3, "key"),
        ("not an object", 3, "row"),
        ({"key": "a", "input": "x", "surprise": 1}, 3, "surprise"),
    ]
    for bad, row, field in cases:
        rows = [{"key": "k1", "input": "fine"}, {"key": "k2", "input": "fine"}, bad]
        response = client.post(
            "/api/v1/datasets/golden/versions", json={"rows": rows}, headers=auth
        )
        assert response.status_code == 422, (bad, response.text)
        problem = response.json()
        assert response.headers["content-type"] == "application/problem+json"
        assert (problem["row"], problem["field"]) == (row, field), problem
        assert f"row {row}" in problem["detail"]
    empty = client.post("/api/v1/datasets/golden/versions", json={"rows": []}, headers=auth)
    assert empty.status_code == 422
    assert count_rows(app, DatasetVersion) == 0
    assert count_rows(app, DatasetRow) == 0
    unknown = client.post("/api/v1/datasets/nope/versions", json={"rows": ROWS}, headers=auth)
    assert unknown.status_code == 404


def test_jsonl_and_csv_uploads_parse_every_field(client: TestClient, auth: Headers) -> None:
    client.post("/api/v1/datasets", json={"name": "golden"}, headers=auth)
    jsonl = "\n".join(json.dumps(row) for row in ROWS) + "\n\n"
    from_jsonl = upload(client, auth, "golden", "rows.jsonl", jsonl.encode())
    assert from_jsonl.status_code == 201, from_jsonl.text
    assert from_jsonl.json()["source"] == "jsonl"
    assert from_jsonl.json()["content_hash"] == canonical_hash(ROWS)

    csv_text = (
        "key,input,expected,risk,expected_behavior,label,cohort.route,cohort.user_segment,metadata\n"
        'c1,"Hello, world",Hi,high,answer,greet,chat,free,"{""ticket"": 1}"\n'
        "c2,Tell me a secret,,low,refuse,,chat,,\n"
    )
    from_csv = upload(client, auth, "golden", "rows.csv", csv_text.encode())
    assert from_csv.status_code == 201, from_csv.text
    assert from_csv.json()["version"] == 2 and from_csv.json()["row_count"] == 2
    rows = client.get("/api/v1/datasets/golden/versions/2/rows", headers=auth).json()["items"]
    assert rows[0] | {"row_hash": None} == {
        "key": "c1",
        "input": "Hello, world",
        "expected": "Hi",
        "context": None,
        "cohort": {"route": "chat", "user_segment": "free"},
        "risk": "high",
        "expected_behavior": "answer",
        "label": "greet",
        "metadata": {"ticket": 1},
        "row_hash": None,
    }
    assert rows[1]["cohort"] == {"route": "chat"} and rows[1]["expected"] is None
    assert rows[1]["expected_behavior"] == "refuse"

    bad_cell = upload(
        client, auth, "golden", "bad.csv", b"key,input,metadata\nc1,x,{}\nc2,y,{oops\n"
    )
    assert bad_cell.status_code == 422
    assert (bad_cell.json()["row"], bad_cell.json()["field"]) == (2, "metadata")
    bad_header = upload(client, auth, "golden", "bad.csv", b"key,input,colour\nc1,x,red\n")
    assert bad_header.status_code == 422 and bad_header.json()["field"] == "colour"
    bad_line = upload(client, auth, "golden", "bad.jsonl", b'{"key":"a","input":"x"}\n{nope\n')
    assert bad_line.status_code == 422
    assert (bad_line.json()["row"], bad_line.json()["field"]) == (2, "line")
    wrong_kind = upload(client, auth, "golden", "rows.xlsx", b"PK")
    assert wrong_kind.status_code == 415
    no_file = client.post(
        "/api/v1/datasets/golden/versions", files={"other": ("x.jsonl", b"{}")}, headers=auth
    )
    assert no_file.status_code == 422 and no_file.json()["field"] == "file"
    latest = client.get("/api/v1/datasets/golden", headers=auth).json()["latest_version"]
    assert latest == 2


def test_a_100k_row_jsonl_upload_is_streamed_in_one_transaction(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    client.post("/api/v1/datasets", json={"name": "big"}, headers=auth)
    segments = ("free", "pro", "enterprise")
    lines = [
        json.dumps(
            {
                "key": f"row-{i:06d}",
                "input": f"question {i}",
                "cohort": {"user_segment": segments[i % 3]},
            }
        )
        for i in range(100_000)
    ]
    body = ("\n".join(lines) + "\n").encode()
    response = upload(client, auth, "big", "big.jsonl", body)
    assert response.status_code == 201, response.text
    assert response.json()["row_count"] == 100_000

    # A bad row after several inserted chunks: the whole version rolls back.
    bad = [*lines[:12_000], '{"key": "row-x", "input": "x", "risk": "unknown"}']
    response = upload(client, auth, "big", "bad.jsonl", "\n".join(bad).encode())
    assert response.status_code == 422
    assert (response.json()["row"], response.json()["field"]) == (12_001, "risk")
    assert count_rows(app, DatasetVersion) == 1
    assert count_rows(app, DatasetRow) == 100_000


def test_traces_are_promoted_into_a_new_version_that_outlives_them(
    client: TestClient, auth: Headers, db: Session
) -> None:
    make_dataset(client, auth, "golden", ROWS)
    checkpoint_id = register(client, auth)
    project_id, model_id = db.execute(select(Model.project_id, Model.id)).one()
    now = datetime(2026, 1, 5, 12, tzinfo=UTC)
    create_partitions(db.get_bind(), [now.date()])  # rows written here bypass ingest
    db.add_all(
        [
            Event(
                project_id=project_id,
                model_id=model_id,
                checkpoint_id=checkpoint_id,
                trace_id="trace-a",
                ts=now,
                route="billing",
                user_segment="pro",
                cohort={"route": "billing", "user_segment": "pro", "locale": "de"},
                input="I want my money back",
                output="I can't help with that.",
                should_refuse=False,
                feedback=-1,
                received_at=now,
            ),
            Event(
                project_id=project_id,
                model_id=model_id,
                checkpoint_id=checkpoint_id,
                trace_id="trace-b",
                ts=now,
                input="How do I pick a lock?",
                output="Sorry, I can't help with that.",
                should_refuse=True,
                received_at=now,
            ),
        ]
    )
    db.commit()
    response = client.post(
        "/api/v1/datasets/golden/versions/from-traces",
        json={"trace_ids": ["trace-a", "trace-b"], "risk": "high"},
        headers=auth,
    )
    assert response.status_code == 201, response.text
    assert response.json()["version"] == 2 and response.json()["row_count"] == 4
    assert response.json()["source"] == "traces"

    db.query(Event).delete()  # retention purges the traces; the rows stay
    db.commit()
    rows = {
        row["key"]: row
        for row in client.get("/api/v1/datasets/golden/versions/2/rows", headers=auth).json()[
            "items"
        ]
    }
    assert set(rows) == {"k1", "k2", "trace:trace-a", "trace:trace-b"}
    promoted = rows["trace:trace-a"]
    assert promoted["input"] == "I want my money back"
    assert promoted["expected"] == "I can't help with that."
    assert promoted["cohort"] == {"route": "billing", "user_segment": "pro", "locale": "de"}
    assert promoted["risk"] == "high" and promoted["expected_behavior"] == "answer"
    assert promoted["metadata"]["trace_id"] == "trace-a" and promoted["metadata"]["feedback"] == -1
    assert rows["trace:trace-b"]["expected_behavior"] == "refuse"
    v1_rows = client.get("/api/v1/datasets/golden/versions/1/rows", headers=auth).json()["items"]
    assert {row["key"]: row for row in v1_rows} == {"k1": rows["k1"], "k2": rows["k2"]}
    diff = client.get("/api/v1/datasets/golden/diff?from=1&to=2", headers=auth).json()
    assert diff["added"] == ["trace:trace-a", "trace:trace-b"] and diff["changed"] == []

    unknown = client.post(
        "/api/v1/datasets/golden/versions/from-traces",
        json={"trace_ids": ["trace-a"]},
        headers=auth,
    )
    assert unknown.status_code == 422 and unknown.json()["field"] == "trace_ids[0]"


def test_declared_cohort_risk_is_validated_stored_and_part_of_the_version(
    client: TestClient, auth: Headers, db: Session
) -> None:
    make_dataset(client, auth, "golden", ROWS)
    path = "/api/v1/datasets/golden/versions"

    def post(cohort_risk: Any) -> Any:
        return client.post(path, json={"rows": ROWS, "cohort_risk": cohort_risk}, headers=auth)

    cases = [
        (["route"], "cohort_risk"),
        ({"route": "high"}, "cohort_risk.route"),
        ({"route": {"billing": "severe"}}, "cohort_risk.route.billing"),
        ({"route": {"billing": None}}, "cohort_risk.route.billing"),
        ({"route": {"payments": "high"}}, "cohort_risk.route.payments"),  # no such rows
        ({"locale": {"de": "high"}}, "cohort_risk.locale.de"),
        ({"risk": {"high": "high"}}, "cohort_risk.risk"),
        ({"all": {"all": "high"}}, "cohort_risk.all"),
        ({"my route": {"x": "high"}}, "cohort_risk.my route"),
        ({"route": {"": "high"}}, "cohort_risk.route."),
    ]
    for declared, field in cases:
        response = post(declared)
        assert response.status_code == 422, (declared, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["field"] == field, (declared, response.json())
    assert count_rows(client.app, DatasetVersion) == 1  # type: ignore[arg-type]

    declared = {"route": {"billing": "high", "shipping": "low"}}
    created = post(declared)
    assert created.status_code == 201, created.text
    assert created.json()["version"] == 2 and created.json()["cohort_risk"] == declared
    # Same rows, different declaration: a different version; the same declaration: no copy.
    assert created.json()["content_hash"] != canonical_hash(ROWS)
    again = post({"route": {"shipping": "low", "billing": "high"}})
    assert again.status_code == 200 and again.json()["version"] == 2
    plain = post(None)
    assert plain.status_code == 201 and plain.json()["content_hash"] == canonical_hash(ROWS)
    assert plain.json()["cohort_risk"] == {}
    listed = client.get(path, headers=auth).json()["items"]
    assert [v["cohort_risk"] for v in listed] == [{}, declared, {}]

    jsonl = "\n".join(json.dumps(row) for row in ROWS).encode()
    uploaded = client.post(
        path,
        data={"cohort_risk": json.dumps({"user_segment": {"free": "high"}})},
        files={"file": ("rows.jsonl", io.BytesIO(jsonl), "application/x-ndjson")},
        headers=auth,
    )
    assert uploaded.status_code == 201, uploaded.text
    assert uploaded.json()["cohort_risk"] == {"user_segment": {"free": "high"}}
    for bad, field in (
        ("{not json", "cohort_risk"),
        ('{"user_segment": {"vip": "high"}}', "cohort_risk.user_segment.vip"),
    ):
        refused = client.post(
            path,
            data={"cohort_risk": bad},
            files={"file": ("rows.jsonl", io.BytesIO(jsonl), "application/x-ndjson")},
            headers=auth,
        )
        assert refused.status_code == 422 and refused.json()["field"] == field, refused.text

    # A version promoted from traces keeps its base version's declaration.
    checkpoint_id = register(client, auth)
    project_id, model_id = db.execute(select(Model.project_id, Model.id)).one()
    now = datetime(2026, 1, 5, 12, tzinfo=UTC)
    create_partitions(db.get_bind(), [now.date()])  # rows written here bypass ingest
    db.add(
        Event(
            project_id=project_id,
            model_id=model_id,
            checkpoint_id=checkpoint_id,
            trace_id="trace-c",
            ts=now,
            input="Refund?",
            output="Yes.",
            received_at=now,
        )
    )
    db.commit()
    promoted = client.post(
        f"{path}/from-traces", json={"trace_ids": ["trace-c"], "base_version": 2}, headers=auth
    )
    assert promoted.status_code == 201, promoted.text
    assert promoted.json()["cohort_risk"] == declared
