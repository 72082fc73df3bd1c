"""Evaluation runs for the gate tests, made as a user makes them: a dataset version and an
evaluation with uploaded outputs through the public API, then the worker drained in-process.

Each evaluator's score is known from the outputs: `exact_match` scores 1 when the output is the
row's expected answer and 0 otherwise; `stated_score` (the plugin of tests/gates/conftest.py)
scores the `probability` uploaded with the output. Both pass at 0.5 or more. With repeats, a
row's score may be one per call. A `stated_score` of None (for a row, or for one of its calls)
is an evaluator error there: the output is UNJUDGED, on which the plugin reaches no verdict
(and which fails exact_match)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.datasets.support import drain_worker
from tests.gates.stated_score import UNJUDGED

Headers = dict[str, str]
EXPECTED = "the expected answer"
GRADED = "stated_score"


Scores = Mapping[str, Sequence[float | Sequence[float | None] | None]]


def dataset_version(
    client: TestClient,
    auth: Headers,
    dataset: str,
    rows: Sequence[dict[str, Any]],
    cohort_risk: dict[str, dict[str, str]] | None = None,
) -> int:
    """The version of `dataset` holding `rows` (and `cohort_risk`): a new one unless they
    equal the latest."""
    created = client.post("/api/v1/datasets", json={"name": dataset}, headers=auth)
    assert created.status_code in (201, 409), created.text
    golden = [{"input": row["key"], "expected": EXPECTED, **row} for row in rows]
    version = client.post(
        f"/api/v1/datasets/{dataset}/versions",
        json={"rows": golden, "cohort_risk": cohort_risk},
        headers=auth,
    )
    assert version.status_code in (200, 201), version.text
    return int(version.json()["version"])


def score_of(value: float | Sequence[float | None] | None, repeat: int) -> float:
    """A row's score on call `repeat`: one score for every call, or one per call."""
    assert value is not None
    score = value if isinstance(value, int | float) else value[repeat]
    assert score is not None
    return float(score)


def outputs_scoring(
    rows: Sequence[dict[str, Any]], scores: Scores, repeats: int = 1
) -> list[dict[str, Any]]:
    """Uploaded outputs on which `scores[evaluator][i]` is what the evaluator gives rows[i]
    (on each call, or per call: `scores[evaluator][i][repeat]`)."""
    assert set(scores) <= {"exact_match", GRADED}, f"no known outputs score {set(scores)}"
    outputs = []
    for repeat in range(repeats):
        for i, row in enumerate(rows):
            output: dict[str, Any] = {"key": row["key"], "output": EXPECTED}
            if repeats > 1:
                output["repeat"] = repeat
            if "exact_match" in scores:
                exact = score_of(scores["exact_match"][i], repeat)
                assert exact in (0.0, 1.0), "exact_match scores 0 or 1"
                output["output"] = EXPECTED if exact else "another answer"
            graded = scores[GRADED][i] if GRADED in scores else 0.0
            if graded is None or (not isinstance(graded, int | float) and graded[repeat] is None):
                unmatched = "exact_match" not in scores or output["output"] != EXPECTED
                assert unmatched, "an UNJUDGED output fails exact_match"
                output["output"] = UNJUDGED
            elif GRADED in scores:
                output["probability"] = score_of(graded, repeat)
            outputs.append(output)
    return outputs


def add_run(
    client: TestClient,
    auth: Headers,
    checkpoint_id: int,
    rows: Sequence[dict[str, Any]],
    scores: Scores,
    dataset: str = "golden",
    finish: bool = True,
    cohort_risk: dict[str, dict[str, str]] | None = None,
    repeats: int = 1,
) -> int:
    """A run of `checkpoint_id` on the version of `dataset` holding `rows` (and
    `cohort_risk`), `repeats` calls per row scored as `scores` says; succeeded, or still
    queued when `finish` is false."""
    version = dataset_version(client, auth, dataset, rows, cohort_risk)
    created = client.post(
        f"/api/v1/datasets/{dataset}/evaluations",
        json={
            "checkpoint_id": checkpoint_id,
            "dataset_version": version,
            "evaluators": [{"name": name} for name in scores],
            "outputs": outputs_scoring(rows, scores, repeats),
            "repeats": repeats,
        },
        headers=auth,
    )
    assert created.status_code == 202, created.text
    run_id = int(created.json()["run_id"])
    if finish:
        app: FastAPI = client.app  # type: ignore[assignment]
        drain_worker(app)
        run = client.get(f"/api/v1/runs/{run_id}", headers=auth).json()
        assert run["status"] == "succeeded", run
    return run_id


def evaluated(
    client: TestClient,
    auth: dict[str, str],
    checkpoint_id: int,
    rows: list[dict[str, Any]],
    evaluators: list[dict[str, Any]],
    **body: Any,
) -> dict[str, Any]:
    """The run of `evaluators` on the golden dataset's version of `rows` for the checkpoint
    (its endpoint's answers, or `outputs` in `body`), once the worker has finished it."""
    created = client.post(
        "/api/v1/datasets/golden/evaluations",
        json={
            "checkpoint_id": checkpoint_id,
            "dataset_version": dataset_version(client, auth, "golden", rows),
            "evaluators": evaluators,
            **body,
        },
        headers=auth,
    )
    assert created.status_code == 202, created.text
    drain_worker(client.app)  # type: ignore[arg-type]
    run: dict[str, Any] = client.get(
        f"/api/v1/runs/{created.json()['run_id']}", headers=auth
    ).json()
    return run
