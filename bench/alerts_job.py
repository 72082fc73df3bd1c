"""The alert scenarios of bench/alerts.py through the real daily job on a database.

Each run is a fresh project on one SQLite (or PostgreSQL) database: bench/traffic_sim.py's
simulated days become the daily_signals rows the rollup would write (the simulator
aggregates exactly as the drift SQL does: per cohort, rate counts, per-bin calibration sums,
log moments), stored with the product's ``replace_day``; then the product's
``app.drift.job.judge_rows`` judges each day exactly as the nightly job does after its
rollup: it freezes the reference after the 7-day warm-up and 28 known-good days, judges
every cohort x signal against it with the band and the CUSUM under one weighted budget
(the 600 and 3,000/day segments are declared high-risk by a dataset version), and opens,
keeps and resolves alerts. The outcome is read back from the alerts table. Only the SQL
aggregation of raw events is skipped (its exactness is tested in tests/drift/test_signals.py;
its speed is bench/drift.py's).
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.core import migrate
from app.core.db import make_engine, make_sessionmaker
from app.core.links import Links
from app.core.settings import Settings
from app.drift.job import judge_rows
from app.drift.rollup import replace_day
from app.drift.signals import SignalRow, shown_from_log
from app.models import (
    Alert,
    Dataset,
    DatasetVersion,
    DriftJudgement,
)
from app.stats.calibration import brier_day_signal, debiased_ece
from app.stats.continuous import log_moments, lognormal_quantile
from bench.scratch import bench_model
from bench.traffic_sim import BIN_FIELDS, CONTINUOUS, RATE_SIGNALS, Traffic, TrafficSpec, simulate

FIRST_DAY = date(2030, 1, 1)
LINKS = Links("http://plumbline.bench")
_STORED_BINS = ("n", "sum_prob", "sum_label", "sum_prob_sq", "sum_prob_label")


@dataclass(frozen=True)
class JobAlert:
    """An alert as the bench needs it: which cohort x signal, its first and last day (the
    resolution day when resolved) as day indexes, and the rules that fired on its first day."""

    signal: str
    cohort: str
    opened: int
    last: int
    resolved: bool
    rules: tuple[str, ...]


@contextmanager
def database(url: str | None = None) -> Iterator[sessionmaker[Session]]:
    """A migrated database: a throwaway SQLite file unless a URL is given."""
    with tempfile.TemporaryDirectory() as tmp:
        target = url or f"sqlite:///{Path(tmp) / 'alerts.db'}"
        migrate.upgrade(target)
        engine = make_engine(Settings(database_url=target))
        try:
            yield make_sessionmaker(engine)
        finally:
            engine.dispose()


_RUNS = itertools.count()
"""Numbers each run's project: `id(traffic)` was, and CPython reuses the id of an object
already collected, so a later scenario's project name could clash with an earlier one's."""


def _setup(session: Session, traffic: Traffic, seed: int) -> tuple[int, int, int]:
    project, model, [checkpoint] = bench_model(session, f"bench-alerts-{seed}-{next(_RUNS)}")
    dataset = Dataset(project_id=project.id, name="golden")
    session.add(dataset)
    session.flush()
    risky = {
        name: "high" for name, high in zip(traffic.cohorts, traffic.high_risk, strict=True) if high
    }
    session.add(
        DatasetVersion(
            project_id=project.id,
            dataset_id=dataset.id,
            version=1,
            content_hash=f"h{project.id}",
            row_count=0,
            source="json",
            cohort_risk={"segment": risky},
        )
    )
    session.commit()
    return project.id, model.id, checkpoint.id


def _cohort(traffic: Traffic, index: int) -> tuple[str, str]:
    return ("all", "all") if index == 0 else ("segment", traffic.cohorts[index])


def day_rows(traffic: Traffic, day: int, model_id: int, checkpoint_id: int) -> list[SignalRow]:
    """The rows the rollup would store for simulated day `day` (every cohort and signal)."""
    rows: list[SignalRow] = []
    for c in range(len(traffic.cohorts)):
        dimension, value = _cohort(traffic, c)

        def add(
            signal: str,
            num: float,
            den: int,
            rate: float,
            extra: dict[str, Any],
            cohort: tuple[str, str] = (dimension, value),
        ) -> None:
            rows.append(SignalRow(model_id, checkpoint_id, signal, *cohort, num, den, rate, extra))

        for j, name in enumerate(RATE_SIGNALS):
            num, den = int(traffic.rate_num[day, c, j]), int(traffic.rate_den[day, c, j])
            if den > 0:
                add(name, num, den, num / den, {})
        cal = traffic.calibration[day, c]  # (5, bins) in BIN_FIELDS order
        total = round(float(cal[0].sum()))
        if total > 0:
            filled = np.flatnonzero(cal[0] > 0)
            bins = [
                {"bin": int(b), **{k: float(cal[i, b]) for i, k in enumerate(_STORED_BINS)}}
                for b in filled
            ]
            brier = float(brier_day_signal(*cal)[0]) if total >= 2 else float("nan")
            ece = float(debiased_ece(cal[0], cal[1], cal[2], cal[3]))
            if np.isfinite(brier):
                add("brier_score", brier * total, total, brier, {"bins": bins})
            add("ece", ece * total, total, ece, {"bins": bins})
        for metric in CONTINUOUS:
            count, s1, s2 = (float(x) for x in traffic.moments[metric][day, c, :3])
            if count < 2:
                continue
            mean, var = log_moments(count, s1, s2)
            for q in ("p50", "p95"):
                shown = shown_from_log(f"{metric}_{q}", float(lognormal_quantile(q, mean, var)))
                add(
                    f"{metric}_{q}",
                    shown * count,
                    int(count),
                    shown,
                    {"sum_log": s1, "sum_log_sq": s2},
                )
    return rows


def run(sessions: sessionmaker[Session], spec: TrafficSpec) -> list[JobAlert]:
    """Every simulated day through the daily job, oldest first; the alerts it left."""
    assert BIN_FIELDS[0] == "count"
    traffic = simulate(spec)
    with sessions() as session:
        project_id, model_id, checkpoint_id = _setup(session, traffic, spec.seed)
    for day in range(spec.days):
        rows = day_rows(traffic, day, model_id, checkpoint_id)
        when = FIRST_DAY + timedelta(days=day)
        with sessions() as session:
            replace_day(session, project_id, when, rows)
            judge_rows(session, LINKS, project_id, when, rows, "bench")
    with sessions() as session:
        alerts = session.scalars(
            select(Alert).where(Alert.project_id == project_id).order_by(Alert.id)
        ).all()
        # The alert's evidence is refreshed while it stays open; the rules that opened it are
        # the opening day's judgement (bit 1: band, bit 2: CUSUM).
        fired = {
            (j.day, j.signal, j.dimension, j.value): j.rules
            for j in session.scalars(
                select(DriftJudgement).where(
                    DriftJudgement.project_id == project_id, DriftJudgement.rules > 0
                )
            )
        }
        return [
            JobAlert(
                a.signal,
                a.value,
                (a.day - FIRST_DAY).days,
                (a.last_day - FIRST_DAY).days,
                a.status.value == "resolved",
                _rule_names(fired.get((a.day, a.signal, a.dimension, a.value), 0)),
            )
            for a in alerts
        ]


def _rule_names(bits: int) -> tuple[str, ...]:
    return tuple(name for bit, name in ((1, "band"), (2, "cusum")) if bits & bit)
