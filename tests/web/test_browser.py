"""The dashboard in a real headless Chromium against a real uvicorn server with demo data:
sign in, every page, a filter, an acknowledgement, a rollback; no console errors anywhere."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import demo
from app.core.settings import Settings
from app.drift.signals import format_value
from app.models import Alert, Checkpoint, EvaluationRun, Event, Gate
from app.models.drift import AlertStatus
from app.models.gates import GateVerdict
from app.models.project import Role
from tests.conftest import new_key

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def server(app: FastAPI, settings: Settings) -> Iterator[str]:
    """uvicorn on a free loopback port in a thread, serving the test database."""
    demo.seed(app.state.sessionmaker, settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not instance.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    instance.should_exit = True
    thread.join(timeout=20)
    sock.close()


def test_follow_a_regression_from_the_overview_to_the_rollback(
    server: str, app: FastAPI, database_url: str
) -> None:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (.ci/run installs it)")
    backend = database_url.split(":", 1)[0]
    shots = ARTIFACTS / backend
    shots.mkdir(parents=True, exist_ok=True)
    key = new_key(app, demo.PROJECT, Role.admin, "browser")
    with app.state.sessionmaker() as session:  # short: SQLite has one writer at a time
        ids = _demo_ids(session)
    problems: list[str] = []

    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on(
            "response",
            lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None,
        )
        expect = playwright_api.expect

        def visit(path: str, name: str, *texts: str, charts: int = 0) -> None:
            page.goto(server + path)
            for text in texts:
                expect(page.locator("main")).to_contain_text(text)
            if charts:
                expect(page.locator(".chart .main-svg").first).to_be_visible()
                assert page.locator(".chart .plot-container").count() >= charts, path
            page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

        # Sign in: the overview redirects to the login form and back.
        page.goto(server + "/")
        expect(page).to_have_url(re.compile(r"/login\?next=%2F$"))
        page.fill("#api_key", key)
        page.click("button[type=submit]")
        expect(page.locator("h1")).to_contain_text("Overview")

        visit("/", "overview", "support-bot", "v3-rlhf", "open alerts", charts=1)
        visit("/models/support-bot", "model", "Lineage", "v1-full", "v2-lora", "forced", charts=1)
        visit(
            f"/checkpoints/{ids['v3']}",
            "checkpoint",
            "rlhf",
            "ppo",
            "tone-preferences",
            "$0.2 / $0.6 per million input / output tokens",
        )
        visit(f"/runs/{ids['run_v3']}", "run", "Pass rate by evaluator", "exact_match", charts=1)
        # Compare any two runs: from the run page's form, decided but not stored.
        page.goto(server + f"/runs/{ids['run_v3']}")
        page.click("form[action='/compare'] button[type=submit]")
        expect(page.locator("h1")).to_contain_text(f"Run #{ids['run_v3']} against run")
        expect(page.locator("main")).to_contain_text("A comparison, not a gate")
        expect(page.locator(".chart .main-svg").first).to_be_visible()
        page.screenshot(path=str(shots / "compare.png"), full_page=True)
        visit(f"/gates/{ids['gate_pass']}", "gate-pass", "pass", charts=1)
        visit(
            f"/gates/{ids['gate_block']}",
            "gate-block",
            "block",
            "regressed",
            "Rows needed",
            charts=1,
        )
        visit(
            "/drift",
            "drift",
            "Frozen reference",
            "reference v2",
            "v2-lora's known-good days",
            "Reliability",
            "Calibration",
            "Refusal correctness",
            "Latency",
            "Tokens",
            "Cost",
            charts=8,  # signal, CUSUM, reliability, calibration, refusal, latency, tokens, cost
        )
        # The signal chart shades the reference window and marks where alerts opened.
        expect(page.locator(".chart .legend").first).to_contain_text("alert opened")
        expect(page.locator(".chart").nth(1)).to_contain_text("threshold")
        expect(page.locator("[data-testid=rebaseline-form] button")).to_be_visible()
        visit("/alerts", "alerts", "eval_fail_rate", "user_segment=free")
        visit(
            f"/alerts/{ids['alert']}",
            "alert",
            "observed",
            "Why it is open",
            "Reference",
            "v2-lora",
            "Sample traces",
            charts=2,
        )
        # A cost alert reads in dollars, with its reference and the calls it links.
        visit(
            f"/alerts/{ids['cost_alert']}",
            "cost-alert",
            "Cost per call p50 (USD)",
            str(ids["cost_observed"]),
            "Sample traces",
            charts=2,
        )
        visit("/traces?flag=thumbs_down", "traces", "support-bot", "thumbs down")
        visit(f"/traces/{ids['trace']}", "trace", "Input", "Output")
        visit(
            "/datasets/support-golden?version=2&compare=1",
            "dataset",
            "Changes from v1 to v2",
            "40 added",
            "route=billing: 80 rows; needs ~",
        )
        visit("/webhooks", "webhooks", "alert.opened", "127.0.0.1:9")

        # A filter: the free tier's refusal rate, from the drift page's own form.
        page.goto(server + "/drift")
        page.select_option("#d-signal", "refusal_rate")
        page.select_option("#d-dimension", "user_segment")
        page.click(".filters button[type=submit]")
        expect(page).to_have_url(re.compile(r"signal=refusal_rate.*dimension=user_segment"))
        expect(page.locator(".chart .legend").first).to_contain_text("free")
        page.screenshot(path=str(shots / "drift-filtered.png"), full_page=True)

        # Acknowledge the open alert, then roll back from it through the confirmation page.
        page.goto(f"{server}/alerts/{ids['alert']}")
        page.click("button:has-text('Acknowledge')")
        expect(page.locator("h1 .badge")).to_have_text("acknowledged")
        page.click("a:has-text('Roll back to v2-lora')")
        expect(page.locator("h1")).to_contain_text("Roll back support-bot")
        expect(page.locator("main")).to_contain_text(f"alert #{ids['alert']}")
        page.screenshot(path=str(shots / "rollback-confirm.png"), full_page=True)
        page.click("button:has-text('Confirm rollback to v2-lora')")
        expect(page.locator(".notice")).to_contain_text("The champion is now v2-lora")
        page.screenshot(path=str(shots / "model-after-rollback.png"), full_page=True)

        # v2-lora is champion again: rebaseline on its known-good days from the drift page.
        page.goto(server + "/drift?model=support-bot")
        page.fill("#rebaseline-reason", "back on v2-lora after the rollback")
        page.click("[data-testid=rebaseline-form] button")
        expect(page.locator("[data-testid=reference-window]")).to_contain_text("reference v3")
        expect(page.locator("[data-testid=reference-window]")).to_contain_text(
            "back on v2-lora after the rollback"
        )
        page.screenshot(path=str(shots / "drift-rebaselined.png"), full_page=True)

        # A phone-sized viewport keeps the overview usable.
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(server + "/")
        page.screenshot(path=str(shots / "overview-phone.png"), full_page=True)
        browser.close()

    assert problems == []
    with app.state.sessionmaker() as session:
        alert = session.get(Alert, ids["alert"])
        assert alert is not None and alert.status is AlertStatus.acknowledged


def _demo_ids(db: Session) -> dict[str, int | str]:
    versions = dict(db.execute(select(Checkpoint.version, Checkpoint.id)).all())
    gates = dict(db.execute(select(Gate.verdict, Gate.id)).all())
    alert = db.scalar(
        select(Alert.id)
        .where(Alert.status == AlertStatus.open, Alert.dimension == "user_segment")
        .order_by(Alert.id)
    )
    assert alert is not None, "the demo should leave an open alert on the free tier"
    cost_alert = db.scalar(
        select(Alert).where(
            Alert.status == AlertStatus.open, Alert.signal == "cost_p50", Alert.dimension == "all"
        )
    )
    assert cost_alert is not None, "v3's longer answers should leave a cost alert open"
    trace = db.scalar(select(Event.trace_id).where(Event.feedback == -1).limit(1))
    run_v3 = db.scalar(
        select(EvaluationRun.id).where(EvaluationRun.checkpoint_id == versions["v3-rlhf"])
    )
    assert trace is not None and run_v3 is not None
    return {
        "v3": versions["v3-rlhf"],
        "run_v3": run_v3,
        "gate_pass": gates[GateVerdict.passed],
        "gate_block": gates[GateVerdict.block],
        "alert": alert,
        "cost_alert": cost_alert.id,
        # As the alert page shows it: dollars, three significant digits in fixed point.
        "cost_observed": format_value("cost_p50", cost_alert.observed),
        "trace": trace,
    }
