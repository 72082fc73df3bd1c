"""`plumbline gate` as a real subprocess against a real uvicorn server on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.gates.support import add_run
from tests.gates.test_gates import EVALUATOR, champion_and_candidate, passing, rows_of


@pytest.fixture
def server_url(app: FastAPI, client: TestClient) -> Iterator[str]:
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def plumbline_gate(url: str, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "gate", "--url", url, "--api-key", key, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def table_rows(stdout: str) -> dict[tuple[str, str], dict[str, str]]:
    """The table's rows by (evaluator, cohort), cells by column (the bounds column holds
    spaces, so cells are split off from both ends)."""
    lines = stdout.splitlines()
    header = lines[0].split()
    assert header[:5] == ["evaluator", "cohort", "risk", "n", "needs"]
    out = {}
    for line in lines[1:]:
        if not line.startswith(EVALUATOR):
            break
        cells = line.split()
        row = dict(zip(header[:7], cells[:7], strict=True)) | {"status": cells[-1]}
        out[(row["evaluator"], row["cohort"])] = row
    return out


def test_exit_codes_follow_the_verdict_and_the_table_shows_rows_needed(
    app: FastAPI, client: TestClient, auth: dict[str, str], admin_key: str, server_url: str
) -> None:
    champion, candidate = champion_and_candidate(client, auth)
    # 300 unchanged high-risk rows rule out a 2-point drop (185 would do).
    steady = rows_of("general", 300, "high")
    add_run(client, auth, champion, steady, {EVALUATOR: passing(steady)})
    same = add_run(client, auth, candidate, steady, {EVALUATOR: passing(steady)})
    # A declared 40-row cohort losing half its rows.
    declared = {"route": {"medical": "high"}}
    rows = rows_of("medical", 40, "high") + rows_of("other", 100, "low")
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)}, "med", cohort_risk=declared)
    worse = add_run(
        client,
        auth,
        candidate,
        rows,
        {EVALUATOR: passing(rows, {f"medical-{i}" for i in range(20)})},
        "med",
        cohort_risk=declared,
    )
    few = rows_of("rare", 3, "high")
    add_run(client, auth, champion, few, {EVALUATOR: [1.0, 0.0, 1.0]}, dataset="small")
    few_cand = add_run(client, auth, candidate, few, {EVALUATOR: [1.0, 1.0, 0.0]}, "small")

    passed = plumbline_gate(server_url, admin_key, "--candidate-run", str(same))
    assert passed.returncode == 0, passed.stderr
    assert "PASS (attempt 1 of this checkpoint on golden v1, alpha 0.05)" in passed.stdout
    assert table_rows(passed.stdout)[(EVALUATOR, "all=all")]["status"] == "pass"

    blocked = plumbline_gate(server_url, admin_key, "--candidate-run", str(worse))
    assert blocked.returncode == 1, blocked.stderr
    medical = table_rows(blocked.stdout)[(EVALUATOR, "route=medical")]
    assert (medical["risk"], medical["n"], medical["status"]) == ("high", "40", "regressed")
    assert "BLOCK" in blocked.stdout
    # Unguarded cohorts without a warning are left out unless --all.
    assert (EVALUATOR, "route=other") not in table_rows(blocked.stdout)

    unsure = plumbline_gate(server_url, admin_key, "--candidate-run", str(few_cand))
    assert unsure.returncode == 3, unsure.stderr
    stored = client.get("/api/v1/gates", params={"checkpoint_id": candidate}, headers=auth)
    newest = max(g["id"] for g in stored.json()["items"])
    last = client.get(f"/api/v1/gates/{newest}", headers=auth).json()
    needs = {
        f"{c['dimension']}={c['value']}": c["required_n"]
        for c in last["comparisons"]
        if c["guarded"]
    }
    shown = table_rows(unsure.stdout)
    assert {cohort: int(row["needs"]) for (_, cohort), row in shown.items()} == needs
    assert all(int(row["needs"]) > 3 for row in shown.values())
    assert "rows needed to decide" in unsure.stdout

    missing = plumbline_gate(server_url, admin_key, "--candidate-run", "999999")
    assert missing.returncode == 2 and "404" in missing.stderr
    refused = plumbline_gate(server_url, "pl_0000000000_forged", "--candidate-run", str(same))
    assert refused.returncode == 2 and "401" in refused.stderr
    unreachable = plumbline_gate("http://127.0.0.1:9", admin_key, "--candidate-run", str(same))
    assert unreachable.returncode == 2 and "cannot reach" in unreachable.stderr
