"""The dashboard shows what the gate needs: rows per guarded cohort on the dataset page (from
a stated prior flip rate and from the latest gate), flip rates on the run page."""

from __future__ import annotations

import html
import re

from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.stats.planning import required_rows_prior
from tests.gates.support import add_run
from tests.gates.test_gates import EVALUATOR, champion_and_candidate, gate, passing, rows_of
from tests.web.test_pages import sign_in

Headers = dict[str, str]


def plan_lines(page: str) -> dict[str, str]:
    """The guarded cohorts' lines of the dataset page, text only, by cohort name."""
    section = page.split('<ul class="plan">', 1)[1].split("</ul>", 1)[0]
    lines = [html.unescape(re.sub(r"<[^>]+>", "", item)).strip() for item in section.split("<li>")]
    return {line.split(":", 1)[0]: line for line in lines if line}


def test_the_dataset_page_shows_the_rows_each_guarded_cohort_needs(
    app: FastAPI, client: TestClient, auth: Headers, admin_key: str
) -> None:
    rows = rows_of("billing", 100, "medium") + rows_of("core", 300, "low")
    for row in rows[100:150]:
        row["risk"] = "high"
    declared = {"route": {"billing": "high", "core": "low"}}
    champion, candidate = champion_and_candidate(client, auth)
    add_run(client, auth, champion, rows, {EVALUATOR: passing(rows)}, cohort_risk=declared)
    sign_in(client, admin_key)

    page = client.get("/datasets/golden", params={"flip_rate": 0.25, "margin": 0.02})
    assert page.status_code == 200
    assert "declared on this version" in page.text and "route=billing: high" in page.text
    lines = plan_lines(page.text)
    # Guarded: all (400 rows), risk=high (50), route=billing (100, declared high); route=core
    # is declared low, so it is not guarded. Each one's share of alpha is proportional to
    # 1/rows; three guarded comparisons with one evaluator.
    sizes = {"all": 400, "risk=high": 50, "route=billing": 100}
    assert set(lines) == set(sizes)
    inverse = {name: 1 / rows for name, rows in sizes.items()}
    for name, rows_in in sizes.items():
        need = required_rows_prior(
            0.25,
            0.02,
            guarded_comparisons=3,
            block_share=inverse[name] / sum(inverse.values()),
        )
        assert lines[name].startswith(
            f"{name}: {rows_in} rows; needs ~{need.rows} to decide at 2 points "
            f"(~{need.pass_rows} to show non-inferiority)"
        ), lines[name]
    assert "gate" not in lines["route=billing"]

    # With 3 calls per row the flip noise per row mean falls by 3: fewer rows.
    repeated = plan_lines(
        client.get("/datasets/golden", params={"flip_rate": 0.25, "repeats": 3}).text
    )
    need_3 = required_rows_prior(
        0.25,
        0.02,
        baseline_repeats=3,
        candidate_repeats=3,
        guarded_comparisons=3,
        block_share=inverse["route=billing"] / sum(inverse.values()),
    )
    assert f"needs ~{need_3.rows} " in repeated["route=billing"]
    bad = client.get("/datasets/golden", params={"flip_rate": 0.7})
    assert bad.status_code == 422 and "flip_rate" in bad.text

    # After a gate, its observed discordance gives a second number per guarded cohort.
    flipped = {f"billing-{i}" for i in range(0, 20, 2)} | {f"core-{i}" for i in range(30)}
    decided = gate(
        client,
        auth,
        add_run(
            client, auth, candidate, rows, {EVALUATOR: passing(rows, flipped)}, cohort_risk=declared
        ),
    )
    observed = {
        f"{c['dimension']}={c['value']}".replace("all=all", "all"): c["required_n"]
        for c in decided["comparisons"]
        if c["guarded"]
    }
    lines = plan_lines(client.get("/datasets/golden").text)
    for name, required in observed.items():
        assert f"gate #{decided['id']}'s observed discordance asks ~{required}" in lines[name]


def test_the_run_page_shows_flip_rates(
    app: FastAPI, client: TestClient, auth: Headers, admin_key: str
) -> None:
    rows = rows_of("core", 4, "high")
    champion, _ = champion_and_candidate(client, auth)
    # Row core-0 passes one call of two: for it two calls disagree; 1 of 4 rows.
    run = add_run(client, auth, champion, rows, {EVALUATOR: [[1.0, 0.0], 1.0, 1.0, 0.0]}, repeats=2)
    sign_in(client, admin_key)
    page = client.get(f"/runs/{run}")
    assert page.status_code == 200
    assert "2 calls per row" in page.text and "Flip rate" in page.text
    assert "25.0% ± 25.0%" in page.text  # 1/4; SE = SD of (1, 0, 0, 0) / 2
