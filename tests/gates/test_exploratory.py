"""Exploratory gates (the request overrides the model's stored policy) through the API, on both
databases: they never promote, so they shop for nothing, and spend none of the retry budget
of the real gates (docs/statistics.md §7.3): attempts number real gates only, and an
exploratory gate is decided at the budget the next real gate would get."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.models import Gate
from app.registry.queries import standing_blocks
from tests.gates.support import add_run
from tests.gates.test_gates import (
    EVALUATOR,
    Headers,
    champion_and_candidate,
    comparison,
    gate,
    passing,
    rows_of,
)
from tests.web.test_pages import sign_in

ALPHA = 0.05


def test_exploring_three_policies_leaves_the_real_gate_its_full_alpha(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The stored policy allows inconclusive. The candidate loses 8 of 100 rows: a drop beyond
    the 2-point margin shown at p between alpha/8 and alpha/2, so attempt 1 blocks it and
    attempt 4 (alpha/8) would only find it inconclusive, which that policy promotes. Three
    what-if margins before the real gate must not turn it into attempt 4."""
    rows = rows_of("general", 100, "low")
    champion, newcomer = champion_and_candidate(client, auth)
    lenient = client.put(
        "/api/v1/models/bot/gate-policy", json={"allow_inconclusive": True}, headers=auth
    )
    assert lenient.status_code == 200, lenient.text
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)})
    failing = {f"general-{i}" for i in range(8)}
    cand_run = add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows, failing)})

    for margin in (0.1, 0.15, 0.2):
        explored = gate(client, auth, cand_run, policy={"margin": margin})
        assert explored["exploratory"] and explored["verdict"] != "block"
        assert (explored["attempt"], explored["alpha"]) == (1, ALPHA)

    real = gate(client, auth, cand_run)

    assert not real["exploratory"]
    assert (real["attempt"], real["alpha"], real["previously_blocked"]) == (1, ALPHA, False)
    everyone = comparison(real, "all", "all")
    assert everyone["guarded"] and (everyone["lost"], everyone["won"]) == (8, 0)
    assert ALPHA / 8 < everyone["p_block_adjusted"] < ALPHA / 2  # the edge: only alpha/8 misses
    assert real["verdict"] == "block", real["reasons"]
    status = client.get(f"/api/v1/checkpoints/{newcomer}", headers=auth).json()["status"]
    assert status == "blocked"
    refused = client.post(
        "/api/v1/models/bot/promote",
        json={"checkpoint_id": newcomer, "gate_id": real["id"]},
        headers=auth,
    )
    assert refused.status_code == 409


def test_an_exploratory_gate_is_decided_at_the_next_real_gates_alpha_and_spends_none(
    app: FastAPI, client: TestClient, auth: Headers, admin_key: str
) -> None:
    rows = rows_of("general", 200, "low")
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)})
    cand_run = add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows)})

    first = gate(client, auth, cand_run)
    assert (first["attempt"], first["alpha"], first["exploratory"]) == (1, ALPHA, False)
    explored = gate(client, auth, cand_run, policy={"margin": 0.05})
    assert (explored["attempt"], explored["alpha"], explored["exploratory"]) == (2, ALPHA / 2, True)
    assert any("spends none of it" in note for note in explored["notes"])
    # Its reasons said "error budget spent on this attempt: 0.025", which it did not spend.
    budget = [r["message"] for r in explored["reasons"] if "error budget" in r["message"]]
    assert budget == ["error budget of attempt 2: alpha = 0.025 (policy alpha / 2^1)"]
    # Its own alpha, at the next real gate's share of it.
    wider = gate(client, auth, cand_run, policy={"alpha": 0.1})
    assert (wider["attempt"], wider["alpha"], wider["exploratory"]) == (2, 0.1 / 2, True)
    second = gate(client, auth, cand_run)
    assert (second["attempt"], second["alpha"], second["exploratory"]) == (2, ALPHA / 2, False)
    # A request repeating the stored policy overrides nothing: a real gate.
    third = gate(client, auth, cand_run, policy={"margin": 0.02})
    assert (third["attempt"], third["alpha"], third["exploratory"]) == (3, ALPHA / 4, False)

    listed = client.get(f"/api/v1/gates?checkpoint_id={newcomer}", headers=auth).json()["items"]
    assert sorted((g["id"], g["exploratory"]) for g in listed) == [
        (first["id"], False),
        (explored["id"], True),
        (wider["id"], True),
        (second["id"], False),
        (third["id"], False),
    ]
    sign_in(client, admin_key)
    page = client.get(f"/gates/{explored['id']}")
    assert page.status_code == 200 and "Exploratory" in page.text
    assert "spends none of the budget" in page.text


def test_a_real_gate_numbered_after_an_exploratory_one_before_the_rule_keeps_its_budget(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """Gates stored before exploratory gates were told apart: an exploratory attempt 1, then
    a real attempt 2 (every gate counted). The next real gate follows the highest real
    attempt (3): counting the real gates would make it attempt 2 again, spending a budget
    twice and clashing with the stored one (409 on every try)."""
    rows = rows_of("general", 200, "low")
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)})
    cand_run = add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows)})
    gate(client, auth, cand_run, policy={"margin": 0.05})
    legacy = gate(client, auth, cand_run)
    with app.state.sessionmaker() as session:  # as the rule before numbered it
        session.get_one(Gate, legacy["id"]).attempt = 2
        session.commit()

    after = gate(client, auth, cand_run)

    assert (after["attempt"], after["alpha"], after["exploratory"]) == (3, ALPHA / 4, False)


def test_whether_a_gate_explored_is_read_from_its_exploratory_column_not_its_notes(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """A real gate blocks the candidate (8 of 100 rows lost); a gate widening the margin to
    0.2 in the request passes it: exploratory, it spent no attempt and must neither promote
    nor lift the block. Its notes are free text beside the `exploratory` column that the retry
    budget reads; here they no longer name the override. Promotion and the standing block
    read the notes, so the what-if pass lifted the block and promoted; they follow the column
    now, as the budget does."""
    rows = rows_of("general", 100, "low")
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)})
    failing = {f"general-{i}" for i in range(8)}
    cand_run = add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows, failing)})
    blocked = gate(client, auth, cand_run)
    assert blocked["verdict"] == "block", blocked["reasons"]
    explored = gate(client, auth, cand_run, policy={"margin": 0.2})
    assert explored["exploratory"] and explored["verdict"] == "pass", explored["reasons"]
    with app.state.sessionmaker() as session:  # notes that no longer say what the column says
        stored = session.get_one(Gate, explored["id"])
        stored.notes = {
            **stored.notes,
            "policy_overrides": [],
            "messages": [m for m in stored.notes["messages"] if "overrid" not in m],
        }
        project_id = stored.project_id
        session.commit()

    refused = client.post(
        "/api/v1/models/bot/promote",
        json={"checkpoint_id": newcomer, "gate_id": explored["id"]},
        headers=auth,
    )

    assert refused.status_code == 409, refused.text
    assert f"gate {explored['id']} is exploratory" in refused.json()["detail"]
    with app.state.sessionmaker() as session:
        standing = standing_blocks(session, project_id, newcomer)
    assert [block.gate_id for block in standing] == [blocked["id"]]


def test_an_exploratory_block_does_not_make_the_real_gates_inconclusive_a_block(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The candidate loses 8 of 200 rows. Under the stored margin (0.02) that is not shown
    beyond it (exact p = 0.053 > 0.05): inconclusive. A what-if margin of 0.01 in the request
    blocks it (p = 0.0099). That block was decided under a policy the user chose to explore,
    not the stored one, so it is no evidence about the candidate under the stored policy: the
    real gate must not inherit it as `previously_blocked` and stick at block (it did)."""
    rows = rows_of("general", 200, "low")
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)})
    failing = {f"general-{i}" for i in range(8)}
    cand_run = add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows, failing)})

    explored = gate(client, auth, cand_run, policy={"margin": 0.01})
    assert explored["exploratory"] and explored["verdict"] == "block", explored["reasons"]

    real = gate(client, auth, cand_run)

    assert not real["exploratory"]
    assert (real["attempt"], real["alpha"], real["previously_blocked"]) == (1, ALPHA, False)
    everyone = comparison(real, "all", "all")
    assert (everyone["lost"], everyone["won"], everyone["status"]) == (8, 0, "inconclusive")
    assert ALPHA < everyone["p_block_adjusted"] < 0.06
    assert real["verdict"] == "inconclusive", real["reasons"]
    # A real block still sticks: the next real gate (attempt 2) after it stays a block.
    strict = client.put("/api/v1/models/bot/gate-policy", json={"margin": 0.01}, headers=auth)
    assert strict.status_code == 200, strict.text
    blocked = gate(client, auth, cand_run)
    assert (blocked["exploratory"], blocked["verdict"]) == (False, "block"), blocked["reasons"]
    relaxed = client.put("/api/v1/models/bot/gate-policy", json={"margin": 0.02}, headers=auth)
    assert relaxed.status_code == 200, relaxed.text
    after = gate(client, auth, cand_run)
    assert (after["exploratory"], after["previously_blocked"]) == (False, True)
    assert after["verdict"] == "block", after["reasons"]


def test_an_exploratory_block_after_a_real_pass_does_not_hold_the_checkpoint_back(
    app: FastAPI, client: TestClient, auth: Headers
) -> None:
    """The candidate loses 10 of 1,000 rows: the real gate passes at the stored margin of
    0.02. A what-if margin of 0.005 then blocks it (p = 0.025). That block answers a question
    the stored policy does not ask, as for `previously_blocked` (docs/statistics.md §7.3),
    so it must not stand against the real pass: promotion with the real gate was refused
    ("blocked this checkpoint") and the checkpoint's status turned `blocked`."""
    rows = rows_of("general", 1000, "low")
    champion, newcomer = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)})
    failing = {f"general-{i}" for i in range(10)}
    cand_run = add_run(client, auth, newcomer, rows, {EVALUATOR: passing(rows, failing)})
    real = gate(client, auth, cand_run)
    assert (real["exploratory"], real["verdict"]) == (False, "pass"), real["reasons"]
    explored = gate(client, auth, cand_run, policy={"margin": 0.005})
    assert (explored["exploratory"], explored["verdict"]) == (True, "block"), explored["reasons"]

    status = client.get(f"/api/v1/checkpoints/{newcomer}", headers=auth).json()["status"]
    assert status != "blocked"
    with app.state.sessionmaker() as session:
        project_id = session.get_one(Gate, real["id"]).project_id
        assert standing_blocks(session, project_id, newcomer) == []
    promoted = client.post(
        "/api/v1/models/bot/promote",
        json={"checkpoint_id": newcomer, "gate_id": real["id"]},
        headers=auth,
    )
    assert promoted.status_code == 200, promoted.text
