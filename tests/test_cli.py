"""The operator's CLI, run as a real subprocess against both databases."""

from __future__ import annotations

import os
import subprocess
import sys

from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.core.db import today_utc


def plumbline(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PLUMBLINE_DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )


def test_keys_create_prints_a_working_key_alone_on_its_last_line(
    database_url: str, client: TestClient, app: FastAPI
) -> None:
    out = plumbline(database_url, "keys", "create", "--project", "ops", "--role", "admin")
    key = out.stdout.strip().splitlines()[-1]
    assert key.startswith("pl_") and " " not in key
    assert key not in out.stderr
    auth = {"Authorization": f"Bearer {key}"}
    created = client.post("/api/v1/keys", json={"name": "ci", "role": "write"}, headers=auth)
    assert created.status_code == 201
    listing = plumbline(database_url, "keys", "list", "--project", "ops").stdout
    assert "admin\tactive" in listing and "write\tactive" in listing
    key_id = next(row for row in listing.splitlines() if "\tadmin\t" in row).split("\t")[0]
    plumbline(database_url, "keys", "revoke", "--project", "ops", key_id)
    assert client.get("/api/v1/checkpoints", headers=auth).status_code == 401


def test_migrate_is_idempotent(database_url: str) -> None:
    assert "latest schema" in plumbline(database_url, "migrate").stdout
    assert "latest schema" in plumbline(database_url, "migrate").stdout


def test_drift_runs_ended_days_and_refuses_one_in_progress(
    database_url: str, client: TestClient, app: FastAPI
) -> None:
    plumbline(database_url, "drift", "run", "--backfill", "2")  # check=True: exit 0
    today = str(today_utc())
    early = subprocess.run(
        [sys.executable, "-m", "app.cli", "drift", "run", "--date", today],
        env={**os.environ, "PLUMBLINE_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert early.returncode == 2
    assert f"error: date: {today} has not ended yet" in early.stderr
