"""Stand-in for the evaluation-runs API (issue 3) until its endpoints are mounted: writes one
succeeded run with its results through the ORM. Everything else in the gate tests goes through
the public API; replace this single function with POST /datasets/{name}/evaluations later."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from sqlalchemy import func, insert, select

from app.models import (
    Checkpoint,
    Dataset,
    DatasetRow,
    DatasetVersion,
    EvalResult,
    EvaluationRun,
)
from app.models.runs import RunStatus


def add_run(
    app: FastAPI,
    checkpoint_id: int,
    rows: Sequence[dict[str, Any]],
    scores: dict[str, Sequence[float]],
    dataset: str = "golden",
    status: RunStatus = RunStatus.succeeded,
) -> int:
    """A run of `checkpoint_id` on the version of `dataset` holding exactly `rows` (created on
    first use); `scores[evaluator][i]` scores rows[i], and passes at 0.5 or more."""
    digest = hashlib.sha256(json.dumps(list(rows), sort_keys=True).encode()).hexdigest()
    with app.state.sessionmaker() as session:
        project_id = session.get_one(Checkpoint, checkpoint_id).project_id
        owner = session.scalar(
            select(Dataset).where(Dataset.project_id == project_id, Dataset.name == dataset)
        )
        if owner is None:
            owner = Dataset(project_id=project_id, name=dataset)
            session.add(owner)
            session.flush()
        version = session.scalar(
            select(DatasetVersion).where(
                DatasetVersion.dataset_id == owner.id, DatasetVersion.content_hash == digest
            )
        )
        if version is None:
            latest = session.scalar(
                select(func.max(DatasetVersion.version)).where(
                    DatasetVersion.dataset_id == owner.id
                )
            )
            version = DatasetVersion(
                project_id=project_id,
                dataset_id=owner.id,
                version=(latest or 0) + 1,
                content_hash=digest,
                row_count=len(rows),
                source="json",
            )
            session.add(version)
            session.flush()
            session.execute(
                insert(DatasetRow),
                [
                    {
                        "version_id": version.id,
                        "key": row["key"],
                        "input": row["key"],
                        "cohort": row.get("cohort", {}),
                        "risk": row.get("risk", "medium"),
                        "meta": {},
                        "row_hash": row["key"],
                    }
                    for row in rows
                ],
            )
        run = EvaluationRun(
            project_id=project_id,
            checkpoint_id=checkpoint_id,
            dataset_version_id=version.id,
            evaluators=[{"name": name} for name in scores],
            status=status,
            output_source="upload",
        )
        session.add(run)
        session.flush()
        results = [
            {
                "run_id": run.id,
                "key": row["key"],
                "evaluator": name,
                "score": float(values[i]),
                "passed": values[i] >= 0.5,
            }
            for name, values in scores.items()
            for i, row in enumerate(rows)
        ]
        if results:
            session.execute(insert(EvalResult), results)
        session.commit()
        return run.id
