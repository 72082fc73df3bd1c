"""The overview's small multiples draw every model of the project."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from app.core.db import today_utc
from tests.drift.traffic import at, post_events, run_drift
from tests.web.test_pages import sign_in
from tests.web.test_reliability import figures_of

MODELS = [f"model-{i:02d}" for i in range(10)]  # more models than the palette has colours


def test_the_overview_draws_a_line_for_every_model_beyond_the_palette(
    client: TestClient, admin_key: str
) -> None:
    auth = {"Authorization": f"Bearer {admin_key}"}
    yesterday = today_utc() - timedelta(days=1)
    for model in MODELS:
        client.post("/api/v1/checkpoints", json={"model": model, "version": "v1"}, headers=auth)
    post_events(
        client,
        auth,
        [
            {
                "trace_id": f"{model}-{i}",
                "timestamp": at(yesterday, 60 * i),
                "model": model,
                "checkpoint_version": "v1",
                "eval_passed": i % 5 != 0,
            }
            for model in MODELS
            for i in range(20)
        ],
    )
    run_drift(client, auth, yesterday)
    sign_in(client, admin_key)

    [figure] = figures_of(client.get("/").text)

    eval_fail = [t for t in figure["data"] if t.get("xaxis", "x") == "x"]
    assert sorted(t["name"] for t in eval_fail) == MODELS
    styles = {(t["line"]["color"], t["line"]["dash"]) for t in eval_fail}
    assert len(styles) == len(MODELS)  # no two models drawn alike
