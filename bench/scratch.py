"""A throwaway PostgreSQL schema per benchmark run, so benchmarks never touch real data, and
the registry rows a benchmark writing events straight into the database needs."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from sqlalchemy import text
from sqlalchemy.orm import Session

from app.core import migrate
from app.core.db import make_engine
from app.core.settings import Settings
from app.models import Checkpoint, Model, Project
from app.models.registry import CheckpointKind

BENCH_DATABASE_URL = os.environ.get(
    "PLUMBLINE_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


@contextmanager
def scratch_schema(base_url: str, prefix: str) -> Iterator[str]:
    """Yields a URL whose search_path is a new schema migrated to head; drops it afterwards."""
    schema = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = make_engine(Settings(database_url=base_url))
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in base_url else "?"
    url = f"{base_url}{separator}options=-csearch_path%3D{schema}"
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def wait_until_healthy(base: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    """Polls /healthz of a server the benchmark started; fails fast if the process died."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(base + "/healthz", trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError("server did not start")
        time.sleep(0.1)


def bench_model(
    session: Session, project_name: str, versions: tuple[str, ...] = ("v1",)
) -> tuple[Project, Model, list[Checkpoint]]:
    """A new project with one model, "bench-model", and a full checkpoint per version, flushed
    (not committed): what events written around the ingest API refer to."""
    project = Project(name=project_name, settings={})
    session.add(project)
    session.flush()
    model = Model(project_id=project.id, name="bench-model")
    session.add(model)
    session.flush()
    checkpoints = [
        Checkpoint(
            project_id=project.id,
            model_id=model.id,
            version=version,
            kind=CheckpointKind.full,
            spec_hash=version,
        )
        for version in versions
    ]
    session.add_all(checkpoints)
    session.flush()
    return project, model, checkpoints
