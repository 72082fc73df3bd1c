"""Two service processes on one database: each runs the scheduled drift job for the same
periods at the same moment (as two replicas' schedulers would fire), and every period runs
exactly once. The processes are real; a file barrier releases them together."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from fastapi import FastAPI
from sqlalchemy import func, select

from app.core.settings import Settings
from app.drift.job import DRIFT_JOB
from app.models import DriftRun, JobRun
from tests.faults.support import ROOT

DAYS = ["2031-04-02", "2031-04-03", "2031-04-04"]  # scheduler "now"s: periods are the day before

_SCHEDULER_CODE = """
import json, sys, time
from datetime import datetime, UTC
from pathlib import Path
from app.core.db import make_engine, make_sessionmaker
from app.core.links import Links
from app.drift.job import run_scheduled_drift
from app.core.settings import Settings
barrier = Path(sys.argv[1])
settings = Settings()
sessions = make_sessionmaker(make_engine(settings))
(barrier / sys.argv[2]).touch()
while not (barrier / "go").exists():
    time.sleep(0.01)
ran = []
for day in sys.argv[3:]:
    now = datetime.fromisoformat(day).replace(hour=0, minute=15, tzinfo=UTC)
    if run_scheduled_drift(sessions, Links.of(settings), now) is not None:
        ran.append(day)
print(json.dumps(ran))
"""


def test_two_processes_run_each_scheduled_period_once(
    app: FastAPI, admin_key: str, settings: Settings, tmp_path: Path
) -> None:
    env = {**os.environ, "PLUMBLINE_DATABASE_URL": settings.database_url}
    env["PLUMBLINE_LOG_LEVEL"] = "WARNING"
    replicas = [
        subprocess.Popen(
            [sys.executable, "-c", _SCHEDULER_CODE, str(tmp_path), name, *DAYS],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        for name in ("a", "b")
    ]
    deadline = time.monotonic() + 60
    while not ((tmp_path / "a").exists() and (tmp_path / "b").exists()):
        assert time.monotonic() < deadline, "the replicas never started"
        time.sleep(0.05)
    (tmp_path / "go").touch()
    outputs = [json.loads(replica.communicate(timeout=120)[0]) for replica in replicas]
    assert [replica.returncode for replica in replicas] == [0, 0]

    assert sorted(outputs[0] + outputs[1]) == DAYS  # each period ran in exactly one process
    with app.state.sessionmaker() as session:
        claims = session.execute(
            select(JobRun.period, JobRun.status).where(JobRun.job == DRIFT_JOB)
        ).all()
        runs = session.execute(
            select(DriftRun.day, func.count()).group_by(DriftRun.day).order_by(DriftRun.day)
        ).all()
    periods = ["2031-04-01", "2031-04-02", "2031-04-03"]
    assert sorted(claims) == [(period, "succeeded") for period in periods]
    assert [(day.isoformat(), n) for day, n in runs] == [(period, 1) for period in periods]
