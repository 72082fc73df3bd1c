"""What the Python client sends for what its caller passes: optional arguments left as None,
dataset and suite names that are not URL-safe, and arguments that cannot go together."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from app.core.settings import Settings
from app.main import create_app
from plumbline.client import Plumbline
from plumbline.evals import JSONValidation
from tests.conftest import new_key

ROWS = [
    {"key": "r1", "input": "Refund window?", "cohort": {"segment": "free"}},
    {"key": "r2", "input": "Shipping time?", "cohort": {"segment": "pro"}},
]
OUTPUTS = [{"key": "r1", "output": '{"answer": "30 days"}'}, {"key": "r2", "output": "not json"}]


@pytest.fixture
def live(settings: Settings) -> Iterator[tuple[Plumbline, TestClient]]:
    app = create_app(settings.model_copy(update={"run_workers": True, "worker_poll_s": 0.05}))
    with TestClient(app) as http:
        yield Plumbline("http://testserver", new_key(app, "acme"), http=http), http


def test_results_filters_left_as_none_filter_nothing(live: tuple[Plumbline, TestClient]) -> None:
    client, _http = live
    ckpt = client.register_checkpoint(model="support-bot", version="v1", kind="full")
    golden = client.dataset("golden")
    golden.create()
    golden.add_version(ROWS)
    run = golden.add_evaluation(ckpt, [JSONValidation()], outputs=OUTPUTS)
    run.wait(timeout=30, poll_s=0.05)
    # A caller forwarding its own optional arguments: None means "no filter", as on the API
    # (sent as "evaluator=", it matched no result at all).
    assert sorted(r["key"] for r in run.results(evaluator=None)) == ["r1", "r2"]
    every = run.results(evaluator=None, passed=None, key=None, error=None)
    assert sorted(r["key"] for r in every) == ["r1", "r2"]
    assert [r["key"] for r in run.results(evaluator="json_validation", passed=None)] == [
        "r1",
        "r2",
    ]


@pytest.mark.parametrize("name", ["golden#2", "q?a", "café golden"])
def test_a_dataset_name_with_url_characters_reaches_that_dataset(
    live: tuple[Plumbline, TestClient], name: str
) -> None:
    # ("r%41" is one too, sent raw it reaches dataset "rA"; Starlette's TestClient decodes
    # paths twice, so only a real server shows that.)
    client, http = live
    ckpt = client.register_checkpoint(model="support-bot", version="v1", kind="full")
    golden = client.dataset(name)
    assert golden.create()["name"] == name
    assert golden.add_version(ROWS)["row_count"] == 2
    versions = http.get(f"/api/v1/datasets/{quote(name, safe='')}/versions", headers=client.headers)
    assert [v["row_count"] for v in versions.json()["items"]] == [2]
    run = golden.add_evaluation(ckpt, [JSONValidation()], outputs=OUTPUTS).wait(30, 0.05)
    assert run.data["dataset"] == name


def test_a_suite_name_with_url_characters_is_saved_under_that_name(
    live: tuple[Plumbline, TestClient],
) -> None:
    client, _http = live
    saved = client.save_suite("json #1", [JSONValidation()])
    assert saved["name"] == "json #1"


def test_add_version_refuses_rows_and_a_file_together(
    live: tuple[Plumbline, TestClient], tmp_path: Path
) -> None:
    client, http = live
    golden = client.dataset("golden")
    golden.create()
    upload = tmp_path / "rows.jsonl"
    upload.write_text('{"key": "f1", "input": "from the file"}\n')
    with pytest.raises(ValueError, match="rows or file"):
        golden.add_version(ROWS, file=upload)
    listed = http.get("/api/v1/datasets/golden/versions", headers=client.headers).json()
    assert listed["items"] == []
