"""Uploads of rough real files: byte-order marks, Windows line ends, numbers JSON cannot hold."""

from __future__ import annotations

import json

from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.models import DatasetRow, DatasetVersion
from tests.datasets.support import Headers, count_rows
from tests.datasets.test_datasets import upload


def test_a_jsonl_file_with_a_byte_order_mark_and_crlf_line_ends_is_read(
    client: TestClient, auth: Headers
) -> None:
    """Windows tools (PowerShell, Notepad) write UTF-8 with a BOM; CSV uploads already
    accept one, and the same rows must give the same version whatever the file."""
    client.post("/api/v1/datasets", json={"name": "golden"}, headers=auth)
    rows = [{"key": "a", "input": "Grüße"}, {"key": "b", "input": "y", "risk": "high"}]
    lines = "\r\n".join(json.dumps(row, ensure_ascii=False) for row in rows) + "\r\n"
    plain = upload(client, auth, "golden", "rows.jsonl", lines.encode())
    assert plain.status_code == 201, plain.text
    with_bom = upload(client, auth, "golden", "rows.jsonl", "\ufeff".encode() + lines.encode())
    assert with_bom.status_code == 200, with_bom.text  # same rows: no new version
    assert with_bom.json()["content_hash"] == plain.json()["content_hash"]


def test_a_number_json_cannot_hold_is_refused_by_row_and_field_on_every_route(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """1e400 parses to Python's infinity, which has no JSON form: PostgreSQL refused it late
    with a misleading message and SQLite silently stored null instead of the value."""
    client.post("/api/v1/datasets", json={"name": "golden"}, headers=auth)
    jsonl = b'{"key": "a", "input": "x"}\n{"key": "b", "input": "y", "expected": 1e400}\n'
    from_jsonl = upload(client, auth, "golden", "rows.jsonl", jsonl)
    assert from_jsonl.status_code == 422, from_jsonl.text
    assert (from_jsonl.json()["row"], from_jsonl.json()["field"]) == (2, "expected")

    csv_text = b'key,input,metadata\na,x,"{""score"": -1e999}"\n'
    from_csv = upload(client, auth, "golden", "rows.csv", csv_text)
    assert from_csv.status_code == 422, from_csv.text
    assert (from_csv.json()["row"], from_csv.json()["field"]) == (1, "metadata")

    body = b'{"rows": [{"key": "a", "input": {"temperature": 1e400}}]}'
    from_json = client.post(
        "/api/v1/datasets/golden/versions",
        content=body,
        headers={**auth, "content-type": "application/json"},
    )
    # A JSON body is refused as it is parsed (every JSON route: tests/test_edges.py).
    assert from_json.status_code == 422, from_json.text
    assert "out of range" in from_json.json()["detail"]
    assert count_rows(app, DatasetVersion) == 0
    assert count_rows(app, DatasetRow) == 0


def test_a_row_cohort_named_like_a_built_in_cohort_is_refused_by_row_and_field(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """`cohort.risk` / `{"cohort": {"risk": "high"}}` reads like setting the row's risk, but
    the row stays medium and the gate ignores the clashing dimension: the rows the user meant
    to guard would not be. Refused like declaring such a cohort is."""
    client.post("/api/v1/datasets", json={"name": "golden"}, headers=auth)
    csv_text = b"key,input,cohort.route,cohort.risk\na,x,billing,high\n"
    from_csv = upload(client, auth, "golden", "rows.csv", csv_text)
    assert from_csv.status_code == 422, from_csv.text
    assert (from_csv.json()["row"], from_csv.json()["field"]) == (1, "cohort.risk")
    assert "`risk` field" in from_csv.json()["detail"]

    rows = [{"key": "a", "input": "x"}, {"key": "b", "input": "y", "cohort": {"all": "yes"}}]
    from_json = client.post("/api/v1/datasets/golden/versions", json={"rows": rows}, headers=auth)
    assert from_json.status_code == 422, from_json.text
    assert (from_json.json()["row"], from_json.json()["field"]) == (2, "cohort.all")
    assert count_rows(app, DatasetVersion) == 0


def test_a_file_upload_note_is_held_to_the_same_limit_as_a_json_note(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    client.post("/api/v1/datasets", json={"name": "golden"}, headers=auth)
    rows = b'{"key": "a", "input": "x"}\n'
    too_long = client.post(
        "/api/v1/datasets/golden/versions",
        files={"file": ("rows.jsonl", rows)},
        data={"note": "n" * 2001},
        headers=auth,
    )
    assert too_long.status_code == 422, too_long.text
    assert "note" in too_long.text
    assert count_rows(app, DatasetVersion) == 0
    fits = client.post(
        "/api/v1/datasets/golden/versions",
        files={"file": ("rows.jsonl", rows)},
        data={"note": "n" * 2000},
        headers=auth,
    )
    assert fits.status_code == 201 and fits.json()["note"] == "n" * 2000
