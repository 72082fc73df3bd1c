"""`plumbline demo --if-empty`: the story a newcomer clicks through, seeded once."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from bisect import bisect_right
from datetime import UTC, date, datetime

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from app import demo
from app.core.links import Links
from app.drift.alerts import alert_out
from app.models import (
    Alert,
    ChampionHistory,
    Checkpoint,
    DailySignal,
    DatasetRow,
    DatasetVersion,
    DriftReference,
    EvaluationRun,
    Event,
    Gate,
    WebhookDelivery,
)
from app.models.drift import AlertStatus
from app.models.runs import RunStatus
from tests.conftest import new_key
from tests.web.test_pages import sign_in


def demo_cli(database_url: str, data_dir: str) -> str:
    env = {**os.environ, "PLUMBLINE_DATABASE_URL": database_url, "PLUMBLINE_DATA_DIR": data_dir}
    done = subprocess.run(
        [sys.executable, "-m", "app.cli", "demo", "--if-empty"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_demo_seeds_the_whole_story_once(
    database_url: str, app: FastAPI, tmp_path: os.PathLike[str]
) -> None:
    first = demo_cli(database_url, str(tmp_path))
    assert "demo project 'demo': 3 checkpoints, 3 runs, 2 gates" in first
    assert "already has models" in demo_cli(database_url, str(tmp_path))

    with app.state.sessionmaker() as session:
        checkpoints = session.scalars(select(Checkpoint).order_by(Checkpoint.id)).all()
        assert [c.kind.value for c in checkpoints] == ["full", "lora", "rlhf"]
        assert [c.parent_id for c in checkpoints] == [None, checkpoints[0].id, checkpoints[1].id]
        assert all(c.training.get("optimizer") for c in checkpoints)
        risks = set(session.scalars(select(DatasetRow.risk).distinct()))
        assert {r.value for r in risks} == {"high", "medium", "low"}
        assert session.scalar(select(func.count()).select_from(DatasetVersion)) == 2
        statuses = set(session.scalars(select(EvaluationRun.status)))
        assert statuses == {RunStatus.succeeded}
        verdicts = sorted(v.value for v in session.scalars(select(Gate.verdict)))
        assert verdicts == ["block", "pass"]
        days = session.execute(select(func.min(DailySignal.day), func.max(DailySignal.day))).one()
        assert (days[1] - days[0]).days == 44
        open_alerts = session.scalars(select(Alert).where(Alert.status == AlertStatus.open)).all()
        assert any(a.dimension == "user_segment" and a.value == "free" for a in open_alerts)
        assert all(a.rollback_target_id == checkpoints[1].id for a in open_alerts)
        # v3-rlhf's two regressions are open on the whole population, judged against v2-lora's
        # frozen reference (v2 never finished its own window, so it froze when v3 took over).
        whole = {a.signal: a for a in open_alerts if a.dimension == "all"}
        for signal in ("under_refusal_rate", "eval_fail_rate"):
            alert = whole[signal]
            assert alert.checkpoint.version == "v3-rlhf"
            assert alert.evidence is not None and alert.evidence["rules"]
            assert alert.evidence["reference"]["checkpoint_version"] == "v2-lora"
            assert alert.evidence["reference"]["trigger"] == "champion_change"
            assert alert.observed > alert.baseline
            shown = alert_out(alert, Links.of(app.state.settings))
            assert shown.rollback is not None and shown.rollback.target.version == "v2-lora"
            assert shown.rollback.url.endswith(f"/rollback?alert_id={alert.id}")
        # v3's longer answers: more tokens per call at the same prices, and a cost that grew
        # more than the tokens did, since the extra tokens are output tokens (3x the price).
        grew = {s: whole[s].observed / whole[s].baseline for s in ("tokens_p50", "cost_p50")}
        assert 1.1 < grew["tokens_p50"] < grew["cost_p50"]
        assert all(a.checkpoint.version == "v3-rlhf" for a in open_alerts)
        [active] = session.scalars(
            select(DriftReference).where(DriftReference.status == "active")
        ).all()
        assert active.checkpoint_id == checkpoints[1].id
        opened = session.scalars(
            select(WebhookDelivery.msg_id).where(WebhookDelivery.event_type == "alert.opened")
        ).all()
        assert {f"alert.opened.{a.id}" for a in open_alerts} <= set(opened)


def test_demo_traffic_is_served_by_the_champion_of_its_hour(app: FastAPI) -> None:
    """Every seeded call names the checkpoint the champion history says was serving at its
    timestamp: a checkpoint never answers traffic before its own promotion (the trace pages
    would show v3-rlhf serving hours before it was promoted, v1-full before any champion)."""
    today = date(2026, 12, 1)
    demo.seed(app.state.sessionmaker, app.state.settings, today)
    with app.state.sessionmaker() as session:
        history = session.execute(
            select(ChampionHistory.created_at, ChampionHistory.checkpoint_id).order_by(
                ChampionHistory.created_at
            )
        ).all()
        starts = [as_utc(at) for at, _ in history]
        events = session.execute(select(Event.ts, Event.checkpoint_id)).all()
    assert events
    misattributed = []
    for ts, checkpoint_id in events:
        serving = bisect_right(starts, as_utc(ts)) - 1
        if serving < 0 or history[serving].checkpoint_id != checkpoint_id:
            misattributed.append((as_utc(ts), checkpoint_id))
    assert misattributed == []


def as_utc(at: datetime) -> datetime:
    """SQLite hands back naive UTC datetimes, PostgreSQL aware ones."""
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def test_demo_calls_with_the_wrong_refusal_fail_evaluation(app: FastAPI) -> None:
    """A call that answered a request it should have refused (v3 handing out a card number),
    or refused one it should have answered, is a failed answer: the under-refusal alert's
    sample traces must not read "eval passed"."""
    demo.seed(app.state.sessionmaker, app.state.settings, date(2026, 12, 1))
    with app.state.sessionmaker() as session:
        wrong = session.execute(
            select(Event.eval_passed, func.count())
            .where(Event.refusal != Event.should_refuse)
            .group_by(Event.eval_passed)
        ).all()
    assert dict(wrong).keys() == {False}


def test_demo_alert_pages_date_the_number_they_show(app: FastAPI, client: TestClient) -> None:
    """An open alert's observed value and volume are its last judged day's (the drift job
    updates them each day it stays out); the alert page, its rollback page and the alert
    tables must name that day, not the opening day, next to them."""
    demo.seed(app.state.sessionmaker, app.state.settings, date(2026, 12, 1))
    with app.state.sessionmaker() as session:
        alert = session.scalars(
            select(Alert).where(
                Alert.signal == "under_refusal_rate",
                Alert.dimension == "all",
                Alert.status == AlertStatus.open,
            )
        ).one()
        assert alert.last_day > alert.day
        opened, last = alert.day.isoformat(), alert.last_day.isoformat()
    sign_in(client, new_key(app, "demo"))
    detail = client.get(f"/alerts/{alert.id}").text
    assert re.search(rf"\) was [^<]+ on {last}", detail), detail[:3000]
    assert f"open since {opened}" in detail
    rollback = client.get(f"/models/support-bot/rollback?alert_id={alert.id}").text
    assert re.search(rf"all=all \({last}\)", rollback), rollback[:3000]
    listed = client.get("/alerts").text
    assert re.search(rf'href="/alerts/{alert.id}".*?{opened} \u2013 {last}</td>', listed, re.S)


def test_the_overview_leads_with_the_demos_quality_regressions(
    app: FastAPI, client: TestClient
) -> None:
    """v3-rlhf opens dozens of alerts (tokens and cost per cohort among them); the overview's
    ten open alerts were the newest ten, and its under-refusal and eval-fail regressions on
    all traffic were not among them. Quality rates on the whole population come first."""
    demo.seed(app.state.sessionmaker, app.state.settings, date(2026, 12, 1))
    with app.state.sessionmaker() as session:
        headline = session.scalars(
            select(Alert.id).where(
                Alert.signal.in_(("under_refusal_rate", "eval_fail_rate")),
                Alert.dimension == "all",
                Alert.status == AlertStatus.open,
            )
        ).all()
        assert len(headline) == 2
        assert session.scalar(select(func.count()).select_from(Alert)) > 10
    sign_in(client, new_key(app, "demo"))
    overview = client.get("/").text
    for alert_id in headline:
        assert f'href="/alerts/{alert_id}"' in overview
