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


def test_exit_codes_follow_the_verdict(
    app: FastAPI, client: TestClient, auth: dict[str, str], admin_key: str, server_url: str
) -> None:
    rows = rows_of("medical", 10, "high") + rows_of("general", 300, "high")
    champion, candidate = champion_and_candidate(client, auth)
    baseline = add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)})
    same = add_run(client, auth, candidate, rows, {EVALUATOR: passing(rows)})
    worse = add_run(
        client,
        auth,
        candidate,
        rows,
        {EVALUATOR: passing(rows, {f"medical-{i}" for i in range(4)})},
    )
    few = rows_of("rare", 3, "high")
    few_base = add_run(client, auth, champion, few, {EVALUATOR: [1.0, 0.0, 1.0]}, dataset="small")
    few_cand = add_run(client, auth, candidate, few, {EVALUATOR: [1.0, 1.0, 0.0]}, dataset="small")

    passed = plumbline_gate(server_url, admin_key, "--candidate-run", str(same))
    assert passed.returncode == 0, passed.stderr
    assert "PASS" in passed.stdout
    header = passed.stdout.splitlines()[0].split()
    assert header[:6] == ["evaluator", "cohort", "risk", "n", "baseline", "candidate"]

    blocked = plumbline_gate(
        server_url, admin_key, "--candidate-run", str(worse), "--baseline-run", str(baseline)
    )
    assert blocked.returncode == 1, blocked.stderr
    assert "route=medical" in blocked.stdout and "regressed" in blocked.stdout
    assert "BLOCK" in blocked.stdout

    unsure = plumbline_gate(
        server_url, admin_key, "--candidate-run", str(few_cand), "--baseline-run", str(few_base)
    )
    assert unsure.returncode == 3, unsure.stderr
    assert "rows needed" in unsure.stdout

    missing = plumbline_gate(server_url, admin_key, "--candidate-run", "999999")
    assert missing.returncode == 2 and "404" in missing.stderr
    refused = plumbline_gate(server_url, "pl_0000000000_forged", "--candidate-run", str(same))
    assert refused.returncode == 2 and "401" in refused.stderr
    unreachable = plumbline_gate("http://127.0.0.1:9", admin_key, "--candidate-run", str(same))
    assert unreachable.returncode == 2 and "cannot reach" in unreachable.stderr
