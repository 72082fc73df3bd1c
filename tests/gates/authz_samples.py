"""Project A's gate and gate policy, for tests/test_authorization.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from tests.gates.support import add_run

# After the registry (seeded by the authorization test itself) and the evaluation runs.
ORDER = 40

ROWS = [
    {"key": f"alpha-secret-row-{i}", "risk": "high", "cohort": {"route": "alpha-secret-route"}}
    for i in range(6)
]
SCORES = {"exact_match": [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]}


def seed(client: TestClient, auth: dict[str, str], ids: dict[str, Any]) -> None:
    model = client.get(f"/api/v1/models/{ids['model']}", headers=auth).json()
    champion_id = model["champion"]["id"]
    add_run(client, auth, champion_id, ROWS, SCORES, dataset="alpha-secret-golden")
    candidate = add_run(
        client, auth, ids["checkpoint_id"], ROWS, SCORES, dataset="alpha-secret-golden"
    )
    ids["alpha_candidate_run_id"] = candidate
    client.put(
        f"/api/v1/models/{ids['model']}/gate-policy",
        json={"floors": {"exact_match": 0.1}},
        headers=auth,
    )
    gate = client.post("/api/v1/gates", json={"candidate_run_id": candidate}, headers=auth)
    assert gate.status_code == 201, gate.text
    ids["gate_id"] = gate.json()["id"]


BODIES: dict[tuple[str, str], Callable[[dict[str, Any]], dict[str, Any]]] = {
    ("POST", "/api/v1/gates"): lambda ids: {"candidate_run_id": ids["alpha_candidate_run_id"]},
    ("PUT", "/api/v1/models/{model}/gate-policy"): lambda ids: {"margin": 0.5},
}
