"""A process that dies in the middle of a run, the drift job or a webhook send: the work is
picked up again after its lease, or failed with a reason, and never stays stuck.

The crashes are real: a separate worker process is SIGKILLed while it waits on a local HTTP
server the test holds. The passage of time (a lease running out) is the one thing simulated,
by moving the lease's timestamp into the past."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from app.core.db import is_postgres, utcnow
from app.core.jobs import JOB_STALE_AFTER
from app.core.links import Links
from app.core.settings import Settings
from app.drift.job import DRIFT_JOB, run_scheduled_drift
from app.evaluations.worker import LEASE
from app.models import DriftRun, EvaluationRun, JobRun, WebhookDelivery
from app.models.runs import RunStatus
from app.models.webhooks import DeliveryStatus
from app.webhooks.sender import deliver_webhooks
from tests.datasets.support import Headers, drain_worker, make_dataset, register
from tests.faults.support import chat_answer, chat_prompts, gated_server, kill, spawn_worker

NOW = datetime(2031, 3, 2, 0, 15, tzinfo=UTC)
PERIOD = "2031-03-01"


def test_a_run_whose_worker_process_is_killed_resumes_after_the_lease(
    app: FastAPI, client: TestClient, auth: Headers, settings: Settings
) -> None:
    rows = [{"key": f"k{i}", "input": f"q{i}", "expected": f"answer to q{i}"} for i in range(80)]
    make_dataset(client, auth, "golden", rows)
    with gated_server(chat_answer, "/v1") as chat:
        checkpoint_id = register(client, auth, endpoint={"base_url": chat.url, "model": "m"})
        run_id = client.post(
            "/api/v1/datasets/golden/evaluations",
            json={"checkpoint_id": checkpoint_id, "evaluators": [{"name": "exact_match"}]},
            headers=auth,
        ).json()["run_id"]
        chat.hold()
        worker = spawn_worker("runs", settings)
        try:
            assert chat.waiting.wait(60), "the worker process never called the endpoint"
        finally:
            kill(worker)
        chat.release()
        assert run_state(app, run_id) == (RunStatus.running, 1)
        drain_worker(app)  # within its lease the dead worker's claim is respected...
        assert run_state(app, run_id) == (RunStatus.running, 1)
        with app.state.sessionmaker() as session:  # ...until the lease runs out
            session.execute(
                update(EvaluationRun)
                .where(EvaluationRun.id == run_id)
                .values(heartbeat_at=utcnow() - LEASE - timedelta(seconds=1))
            )
            session.commit()
        drain_worker(app)
    finished = client.get(f"/api/v1/runs/{run_id}", headers=auth).json()
    assert finished["status"] == "succeeded" and finished["attempts"] == 2
    assert finished["progress"] == {"done": 80, "total": 80}
    assert finished["summary"]["by_evaluator"][0]["pass_rate"] == 1.0
    assert set(chat_prompts(chat)) == {row["input"] for row in rows}


def run_state(app: FastAPI, run_id: int) -> tuple[RunStatus, int]:
    with app.state.sessionmaker() as session:
        run = session.get_one(EvaluationRun, run_id)
        return run.status, run.attempts


def leave_claim(app: FastAPI, started_at: datetime) -> None:
    """The job_runs row a process leaves when it dies while running the period."""
    with app.state.sessionmaker() as session:
        session.add(
            JobRun(
                job=DRIFT_JOB,
                period=PERIOD,
                owner="dead-host:4242",
                status="running",
                started_at=started_at,
            )
        )
        session.commit()


def claim_and_runs(app: FastAPI) -> tuple[JobRun, int]:
    with app.state.sessionmaker() as session:
        claim = session.scalars(select(JobRun).where(JobRun.job == DRIFT_JOB)).one()
        runs = session.scalar(
            select(func.count()).select_from(DriftRun).where(DriftRun.trigger == "schedule")
        )
    return claim, int(runs or 0)


def test_a_drift_period_abandoned_long_ago_is_taken_over(app: FastAPI, admin_key: str) -> None:
    leave_claim(app, utcnow() - JOB_STALE_AFTER - timedelta(minutes=1))
    assert (
        run_scheduled_drift(app.state.sessionmaker, Links.of(app.state.settings), NOW) is not None
    )
    claim, runs = claim_and_runs(app)
    assert (claim.period, claim.status, claim.error) == (PERIOD, "succeeded", None)
    assert claim.owner != "dead-host:4242" and claim.finished_at is not None
    assert runs == 1  # the project's day was computed


def test_a_fresh_drift_claim_is_taken_over_only_when_its_owner_provably_died(
    app: FastAPI, db: object, admin_key: str
) -> None:
    """PostgreSQL proves it: a running job holds the advisory lock, a dead process's lock died
    with its connection. SQLite has no such proof, so a fresh claim waits for JOB_STALE_AFTER."""
    leave_claim(app, utcnow())
    with app.state.sessionmaker() as session:
        postgres = is_postgres(session)
    result = run_scheduled_drift(app.state.sessionmaker, Links.of(app.state.settings), NOW)
    claim, runs = claim_and_runs(app)
    if postgres:
        assert result is not None and claim.status == "succeeded" and runs == 1
    else:
        assert result is None and claim.status == "running" and runs == 0


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhook_allow_private": True})


def test_a_webhook_send_cut_by_a_crash_is_sent_again_after_the_claim_expires(
    app: FastAPI, client: TestClient, auth: Headers, settings: Settings
) -> None:
    with gated_server(path="/hook") as receiver:
        webhook = client.post(
            "/api/v1/webhooks",
            json={"url": receiver.url, "events": ["alert.opened"]},
            headers=auth,
        ).json()
        delivery = client.post(f"/api/v1/webhooks/{webhook['id']}/test", headers=auth).json()
        receiver.hold()
        sender = spawn_worker("webhooks", settings)
        try:
            assert receiver.waiting.wait(60), "the sender process never sent"
        finally:
            kill(sender)
        receiver.release()
        with app.state.sessionmaker() as session:
            row = session.scalars(
                select(WebhookDelivery).where(WebhookDelivery.id == delivery["id"])
            ).one()
            assert row.status == DeliveryStatus.pending and row.attempts == 0
            assert row.claimed_until is not None and row.claimed_until > utcnow()
        # The dead sender's claim holds until it expires: nobody sends twice meanwhile...
        assert deliver_webhooks(app.state.sessionmaker, settings) is False
        with app.state.sessionmaker() as session:  # ...and then it expires
            session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == delivery["id"])
                .values(claimed_until=utcnow() - timedelta(seconds=1))
            )
            session.commit()
        assert deliver_webhooks(app.state.sessionmaker, settings) is True
        log = client.get(f"/api/v1/webhooks/{webhook['id']}/deliveries", headers=auth).json()
    assert [(d["status"], d["attempts"]) for d in log["items"]] == [("succeeded", 1)]
    # Received twice (the crashed attempt reached it), with one id for the receiver to dedupe.
    assert [h["webhook-id"] for h, _ in receiver.requests] == [delivery["msg_id"]] * 2
