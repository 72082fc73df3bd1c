"""Time one deploy gate through the service on PostgreSQL: 20,000 rows x 8 evaluators x 50
cohorts (all, 3 risk levels, 46 dimension values), champion run against candidate run.

Reports the fetch (app.gates.pairs.load_pairs: the results grouped per run x evaluator x row
and aggregated into arrays in SQL, pooled per side in numpy, and the rows' risk and cohorts),
the comparison compute (app.gates.decision.decide: declared cohorts, tests, the error budget,
required rows, bounds, verdict) and the whole create_gate (fetch + compute + storing the
decision; each repeat is the checkpoint's next attempt), each the median of several repeats.

    .venv/bin/python bench/gates.py
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from scratch import BENCH_DATABASE_URL, bench_model, scratch_schema
from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from app.core.auth import Principal
from app.core.db import make_engine, make_sessionmaker
from app.core.links import Links
from app.core.settings import Settings
from app.gates import decision, pairs
from app.gates import service as gates
from app.gates.schemas import GateIn, GatePolicySpec
from app.models import (
    Dataset,
    DatasetRow,
    DatasetVersion,
    EvalResult,
    EvaluationRun,
)
from app.models.project import Role
from app.models.runs import RunStatus

ROWS, EVALUATORS, REPEATS = 20_000, 8, 5
# 20 routes + 6 prompt versions + 20 user segments = 46 dimension cohorts.
DIMENSIONS = {"route": 20, "prompt_version": 6, "user_segment": 20}


def seed(session: Session, rng: np.random.Generator) -> tuple[int, int, int]:
    """A project with a champion and a candidate run on one dataset version; returns
    (project id, champion run id, candidate run id)."""
    project, _model, checkpoints = bench_model(session, "bench", ("champion", "candidate"))
    dataset = Dataset(project_id=project.id, name="golden")
    session.add(dataset)
    session.flush()
    version = DatasetVersion(
        project_id=project.id,
        dataset_id=dataset.id,
        version=1,
        content_hash="bench",
        row_count=ROWS,
        source="json",
    )
    session.add(version)
    session.flush()
    risks = rng.choice(["high", "medium", "low"], ROWS, p=[0.2, 0.5, 0.3])
    picks = {dim: rng.integers(0, size, ROWS) for dim, size in DIMENSIONS.items()}
    session.execute(
        insert(DatasetRow),
        [
            {
                "project_id": project.id,
                "version_id": version.id,
                "key": f"row-{i}",
                "input": "q",
                "cohort": {dim: f"{dim}-{picks[dim][i]}" for dim in DIMENSIONS},
                "risk": risks[i],
                "meta": {},
                "row_hash": str(i),
            }
            for i in range(ROWS)
        ],
    )
    run_ids = []
    baseline = rng.beta(5.0, 2.0, (EVALUATORS, ROWS))
    candidate = np.clip(baseline + rng.normal(-0.002, 0.05, baseline.shape), 0.0, 1.0)
    for checkpoint, scores in zip(checkpoints, (baseline, candidate), strict=True):
        run = EvaluationRun(
            project_id=project.id,
            checkpoint_id=checkpoint.id,
            dataset_version_id=version.id,
            evaluators=[{"name": f"evaluator-{e}"} for e in range(EVALUATORS)],
            status=RunStatus.succeeded,
            output_source="upload",
        )
        session.add(run)
        session.flush()
        run_ids.append(run.id)
        for e in range(EVALUATORS):
            session.execute(
                insert(EvalResult),
                [
                    {
                        "project_id": project.id,
                        "run_id": run.id,
                        "key": f"row-{i}",
                        "evaluator": f"evaluator-{e}",
                        "score": float(scores[e, i]),
                        "passed": bool(scores[e, i] >= 0.5),
                    }
                    for i in range(ROWS)
                ],
            )
    session.commit()
    return project.id, run_ids[0], run_ids[1]


def median_seconds(action: Callable[[], Any]) -> dict[str, float]:
    """Median wall time and this process's CPU time: the CPU figure stays honest when other
    work shares the machine (the wall time of the fetch also includes the database's work)."""
    action()  # warm-up: caches of scipy and of the database
    wall, cpu = [], []
    for _ in range(REPEATS):
        start, start_cpu = time.perf_counter(), time.process_time()
        action()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {"wall_s": round(statistics.median(wall), 4), "cpu_s": round(statistics.median(cpu), 4)}


def run(sessions: sessionmaker[Session]) -> dict[str, Any]:
    with sessions() as session:
        project_id, baseline_id, candidate_id = seed(session, np.random.default_rng(20240601))
    spec = GatePolicySpec()

    def fetch() -> pairs.PairedResults:
        with sessions() as session:
            candidate = session.get_one(EvaluationRun, candidate_id)
            baseline = session.get_one(EvaluationRun, baseline_id)
            return pairs.load_pairs(session, candidate, baseline, spec.metric)

    paired = fetch()

    def decide() -> decision.Decision:
        return decision.decide(paired, spec, {}, attempt=1, previously_blocked=False)

    decided = decide()
    principal = Principal(project_id=project_id, key_id=None, role=Role.admin, actor="bench")

    def whole_gate() -> None:
        with sessions() as session:
            body = GateIn(candidate_run_id=candidate_id, baseline_run_id=baseline_id)
            gates.create_gate(session, principal, Links("http://127.0.0.1:8000"), body)

    return {
        "rows": len(paired.keys),
        "evaluators": len(paired.evaluators),
        "cohorts": len(decided.comparisons) // len(paired.evaluators),
        "comparisons": len(decided.comparisons),
        "verdict": decided.verdict.value,
        "fetch": median_seconds(fetch),
        "compute": median_seconds(decide),
        "create_gate": median_seconds(whole_gate),
        "repeats": REPEATS,
    }


def main() -> None:
    with scratch_schema(BENCH_DATABASE_URL, "bench_gates") as url:
        engine = make_engine(Settings(database_url=url))
        print(json.dumps(run(make_sessionmaker(engine)), indent=2))
        engine.dispose()


if __name__ == "__main__":
    main()
