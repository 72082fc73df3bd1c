"""Uploads of rough real files: byte-order marks, Windows line ends, numbers JSON cannot hold."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from tests.datasets.support import Headers
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
