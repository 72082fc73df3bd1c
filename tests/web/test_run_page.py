"""The run page's heatmaps against the API's summary of the same run."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.datasets.test_runs import run_with_a_judge_that_cannot_judge
from tests.web.test_pages import sign_in
from tests.web.test_reliability import figures_of


def api_cells(summary: dict[str, Any], metric: str) -> dict[tuple[str, str], Any]:
    """(evaluator, cohort) -> the API's rate, cohorts named as the page names them."""
    cells = {
        (e["evaluator"], "all" if e["dimension"] == "all" else f"{e['dimension']}={e['value']}"): e
        for e in summary["by_cohort"]
    }
    cells |= {(e["evaluator"], f"risk={e['risk']}"): e for e in summary["by_risk"]}
    return {key: entry[metric] for key, entry in cells.items()}


def test_the_run_heatmaps_leave_evaluator_errors_out_as_the_api_does(
    app: FastAPI, client: TestClient, admin_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The judge cannot reach a verdict (nothing answers it) on five of six rows; the
    sixth (k5, output not text) is a fail. Its low-risk cohort has only errors: no pass rate,
    a blank cell, not a red 0 %; and every cell equals the API's summary."""
    auth = {"Authorization": f"Bearer {admin_key}"}
    run = run_with_a_judge_that_cannot_judge(app, client, auth, monkeypatch)
    sign_in(client, admin_key)

    page = client.get(f"/runs/{run['id']}")
    assert page.status_code == 200
    pass_figure, score_figure = (figure["data"][0] for figure in figures_of(page.text))
    for figure, metric in ((pass_figure, "pass_rate"), (score_figure, "mean_score")):
        shown = {
            (evaluator, cohort): figure["z"][i][j]
            for i, evaluator in enumerate(figure["y"])
            for j, cohort in enumerate(figure["x"])
        }
        expected = api_cells(run["summary"], metric)
        assert shown.keys() == expected.keys()
        for key, value in expected.items():
            assert shown[key] == (pytest.approx(value) if value is not None else None), key
    judge_row = pass_figure["y"].index("llm_judge")
    low = pass_figure["x"].index("risk=low")
    assert pass_figure["z"][judge_row][low] is None
    # rows, calls, evaluator errors behind the blank cell
    assert pass_figure["customdata"][judge_row][low] == [2, 2, 2]
    # The table says how many calls the rates leave out.
    row = re.search(r"<td>llm_judge</td>(.*?)</tr>", page.text, re.S)
    assert row is not None
    cells = re.findall(r'<td class="num">([^<]*)</td>', row.group(1))
    assert cells[:4] == ["6", "6", "5", "0.0%"]  # rows, calls, evaluator errors, pass rate

    # The rows table: the judge's five errors are errors, not fails, and "Failures only"
    # keeps its one real failure (k5).
    def judge_badges(**params: str) -> list[str]:
        rows = client.get(f"/runs/{run['id']}", params={"evaluator": "llm_judge", **params})
        assert rows.status_code == 200
        table = rows.text.split('<table class="rows">', 1)[1]
        return re.findall(r'<span class="badge[^"]*">(pass|fail|error)</span>', table)

    assert sorted(judge_badges()) == ["error"] * 5 + ["fail"]
    assert judge_badges(failures="true") == ["fail"]
