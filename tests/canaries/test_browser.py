"""The canary pages in a real headless Chromium against a real uvicorn server: a canary that
decided to roll back (its charts and evidence, then the confirmation page), one that decided
to promote (the promote button), a running one stopped from its page, and the model page
listing them; no console errors anywhere."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.models.project import Role
from tests.canaries.support import (
    candidate_and_champion,
    every,
    hours_ago,
    send,
    served,
    shadows,
    start_canary,
)
from tests.conftest import new_key
from tests.web.test_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.browser

Headers = dict[str, str]
HOUR = timedelta(hours=1)


@pytest.fixture
def server(app: FastAPI) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    instance = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=instance.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not instance.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    instance.should_exit = True
    thread.join(timeout=20)
    sock.close()


def seed(client: TestClient, auth: Headers) -> dict[str, int]:
    support = candidate_and_champion(client, auth)
    rollback = start_canary(
        client,
        auth,
        support["v2"],
        start=hours_ago(6).isoformat(),
        cohorts=[{"dimension": "region", "value": "eu"}],
    )
    send(
        client,
        auth,
        served("v1", 1800, every(20, refusal=True, eval_passed=False), hours_ago(5.5), 5 * HOUR),
        served("v2", 200, every(4, refusal=True, eval_passed=False), hours_ago(5.5), 5 * HOUR),
    )
    client.post(f"/api/v1/canaries/{rollback['id']}/evaluate", headers=auth).raise_for_status()

    search = candidate_and_champion(client, auth, model="search-bot")
    promote = start_canary(
        client,
        auth,
        search["v2"],
        model="search-bot",
        start=hours_ago(30).isoformat(),
        signals=["refusal_rate"],
        comparisons=["served"],
        margin=0.05,
    )
    span = 24 * HOUR
    send(
        client,
        auth,
        served("v1", 2000, every(20, refusal=True), hours_ago(26), span, "s1", "search-bot"),
        served("v2", 2000, every(20, refusal=True), hours_ago(26), span, "s2", "search-bot"),
    )
    client.post(f"/api/v1/canaries/{promote['id']}/evaluate", headers=auth).raise_for_status()
    return {"rollback": rollback["id"], "promote": promote["id"], "v3": support["v3"]}


def test_decide_promote_stop_and_roll_back_from_the_pages(
    server: str, app: FastAPI, client: TestClient, auth: Headers, database_url: str
) -> None:
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (.ci/run installs it)")
    shots = ARTIFACTS / database_url.split(":", 1)[0]
    shots.mkdir(parents=True, exist_ok=True)
    ids = seed(client, auth)
    key = new_key(app, "acme", Role.write, "browser")
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
        main = page.locator("main")

        page.goto(f"{server}/canaries/{ids['rollback']}")
        page.fill("#api_key", key)
        page.click("button[type=submit]")
        expect(page.locator("h1")).to_contain_text(f"Canary #{ids['rollback']}")
        expect(page.locator("h1 .badge")).to_have_text("rollback")
        expect(main).to_contain_text("refusal_rate on all=all (served): the candidate is worse")
        expect(page.locator("td .badge-worse").first).to_be_visible()
        expect(page.locator(".chart .main-svg").first).to_be_visible()
        assert page.locator(".chart .plot-container").count() >= 2
        page.select_option("#c-cohort", label="region=eu")
        page.click(".filters button[type=submit]")
        expect(page).to_have_url(re.compile(r"cohort=1"))
        expect(page.locator(".chart .main-svg").first).to_be_visible()
        page.screenshot(path=str(shots / "canary-rollback.png"), full_page=True)

        page.click("a:has-text('Roll back v2')")
        expect(page.locator("h1")).to_contain_text(f"Roll back canary #{ids['rollback']}")
        page.screenshot(path=str(shots / "canary-rollback-confirm.png"), full_page=True)
        page.click("button:has-text('Confirm rollback of v2')")
        expect(page.locator(".notice")).to_contain_text("Rolled back")
        expect(main).to_contain_text("Rolled back")

        page.goto(f"{server}/canaries/{ids['promote']}")
        expect(page.locator("h1 .badge")).to_have_text("promote")
        page.click("button:has-text('Promote v2')")
        expect(page.locator(".notice")).to_contain_text("v2 is the champion of search-bot")
        page.screenshot(path=str(shots / "canary-promoted.png"), full_page=True)

        running = start_canary(client, auth, ids["v3"])
        page.goto(f"{server}/canaries/{running['id']}")
        expect(page.locator("h1 .badge")).to_have_text("running")
        page.fill("#stop-reason", "wrong build")
        page.click("button:has-text('Stop')")
        expect(page.locator("h1 .badge")).to_have_text("stopped")
        expect(main).to_contain_text("wrong build")

        page.goto(f"{server}/models/support-bot")
        expect(page.locator("main")).to_contain_text("Canaries")
        expect(page.locator(f"a[href='/canaries/{ids['rollback']}']")).to_be_visible()
        page.screenshot(path=str(shots / "model-canaries.png"), full_page=True)
        browser.close()

    assert problems == []


def test_the_page_says_how_many_shadow_traces_were_left_out_and_why(
    server: str, app: FastAPI, client: TestClient, auth: Headers, database_url: str
) -> None:
    """A shadow canary whose traffic mixes one-call requests (30 pairs) with agent traces of
    three served calls (12, each with one shadow answer): those 12 form no pair (a shadow
    answer names the trace, not the call it replays). The API's evidence said 12
    (`shadow_traces_left_out`); the page said nothing, so the 30 pairs read as all the
    shadow traffic. It now says how many were left out and why; a served-only canary's page
    says nothing of it."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (.ci/run installs it)")
    shots = ARTIFACTS / database_url.split(":", 1)[0]
    shots.mkdir(parents=True, exist_ok=True)
    ids = candidate_and_champion(client, auth)
    canary = start_canary(
        client,
        auth,
        ids["v2"],
        start=hours_ago(6).isoformat(),
        signals=["refusal_rate"],
        comparisons=["shadow"],
    )
    since = hours_ago(5)
    agent_steps = (
        {
            "trace_id": f"agent-{trace}",
            "span_id": f"step-{step}",
            "timestamp": (since + HOUR * (trace / 12) + timedelta(seconds=step)).isoformat(),
            "model": "support-bot",
            "checkpoint_version": "v1",
            "refusal": False,
        }
        for trace in range(12)
        for step in range(3)
    )
    send(
        client,
        auth,
        served("v1", 30, every(10, refusal=True), since, HOUR, "one"),
        shadows("v2", "one", 30, every(10, refusal=True), since, HOUR),
        agent_steps,
        shadows("v2", "agent", 12, every(10, refusal=False), since, HOUR),
    )
    evaluated = client.post(f"/api/v1/canaries/{canary['id']}/evaluate", headers=auth).json()
    assert evaluated["evidence"]["shadow_traces_left_out"] == 12
    search = candidate_and_champion(client, auth, model="search-bot")
    served_only = start_canary(
        client, auth, search["v2"], model="search-bot", comparisons=["served"]
    )
    key = new_key(app, "acme", Role.read, "browser")

    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{server}/canaries/{canary['id']}")
        page.fill("#api_key", key)
        page.click("button[type=submit]")
        left_out = page.locator("#shadow-left-out")
        playwright_api.expect(left_out).to_contain_text("12 shadow traces left out")
        playwright_api.expect(left_out).to_contain_text("several calls")
        page.screenshot(path=str(shots / "canary-shadow-left-out.png"), full_page=True)
        page.goto(f"{server}/canaries/{served_only['id']}")
        playwright_api.expect(page.locator("h1 .badge")).to_have_text("running")
        assert page.locator("#shadow-left-out").count() == 0
        browser.close()
