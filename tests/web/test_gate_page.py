"""The gate page's forest plot against the stored gate: each cohort's own margin."""

from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.gates.figures import bound_digits
from tests.datasets.support import drain_worker
from tests.web.test_compare import ROWS, run_of
from tests.web.test_pages import sign_in
from tests.web.test_reliability import figures_of


def test_the_forest_plot_marks_each_cohorts_own_margin_from_its_risk(
    app: FastAPI, client: TestClient, admin_key: str
) -> None:
    """The high-risk cohort decides at a 0.02 margin, the rest at 0.1: one line at -0.1 would
    draw its drop of 0.075 as inside the margin. Every comparison's drawn margin
    is the one the gate used."""
    auth = {"Authorization": f"Bearer {admin_key}"}
    client.post("/api/v1/datasets", json={"name": "golden"}, headers=auth)
    version = client.post("/api/v1/datasets/golden/versions", json={"rows": ROWS}, headers=auth)
    assert version.status_code in (200, 201), version.text
    baseline = run_of(client, auth, "v1", wrong=set())
    candidate = run_of(client, auth, "v2", wrong={"billing-00", "billing-01", "billing-02"})
    drain_worker(app)
    gate = client.post(
        "/api/v1/gates",
        json={
            "candidate_run_id": candidate,
            "baseline_run_id": baseline,
            "policy": {"margin": 0.1, "risk_margins": {"high": 0.02}},
        },
        headers=auth,
    )
    assert gate.status_code in (200, 201), gate.text
    comparisons = gate.json()["comparisons"]
    margins = {
        f"{c['evaluator']} · {c['dimension']}={c['value']}": c["margin"] for c in comparisons
    }
    assert margins["exact_match · risk=high"] == 0.02
    sign_in(client, admin_key)

    page = client.get(f"/gates/{gate.json()['id']}")

    assert page.status_code == 200, page.text
    [forest] = figures_of(page.text)
    [marks] = [trace for trace in forest["data"] if trace.get("name") == "margin"]
    drawn = dict(zip(marks["y"], marks["x"], strict=True))
    assert drawn == {label: -m for label, m in margins.items() if m is not None}
    assert drawn["exact_match · risk=high"] == -0.02
    # No single line claims one margin for cohorts decided at two.
    assert [s["x0"] for s in forest["layout"].get("shapes", [])] == [0]
    # The table gives each comparison the line its bounds are judged against.
    rows = re.findall(r"<tr[^>]*>\s*<td>exact_match</td><td>([^<]+)<(.*?)</tr>", page.text, re.S)
    shown = {f"exact_match · {cohort.strip()}": row for cohort, row in rows}
    assert shown.keys() == margins.keys()
    for label, margin in margins.items():
        assert f'<td class="num">{-margin:.3f}</td>' in shown[label], label


def test_bounds_read_apart_from_the_margin_they_are_judged_against() -> None:
    """At three decimals a lower bound of -0.0204 (beyond a 0.02 margin) and -0.0196 (inside
    it) both read -0.020, the margin's own look."""
    beyond = {"ci_low": -0.0204, "ci_high": 0.01}
    inside = {"ci_low": -0.0196, "ci_high": 0.01}
    for comparison, shown in ((beyond, "-0.0204"), (inside, "-0.0196")):
        digits = bound_digits(comparison, 0.02)
        assert f"{comparison['ci_low']:.{digits}f}" == shown
        assert f"{-0.02:.{digits}f}" == "-0.0200"
    assert bound_digits({"ci_low": -0.05, "ci_high": 0.01}, 0.02) == 3
    assert bound_digits({"ci_low": -0.02, "ci_high": None}, 0.02) == 3  # on the line: equal
