"""The seed's workflow through plumbline.client, against the app with its background worker on."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.core.settings import Settings
from app.main import create_app
from plumbline.client import Plumbline, PlumblineError
from plumbline.evals import Groundedness, JSONValidation
from tests.conftest import new_key

SCHEMA = {"type": "object", "required": ["answer"], "properties": {"answer": {"type": "string"}}}


def test_register_dataset_add_evaluation_wait_and_read_the_summary(
    settings: Settings, tmp_path: Path
) -> None:
    app = create_app(settings.model_copy(update={"run_workers": True, "worker_poll_s": 0.05}))
    with TestClient(app) as http:
        client = Plumbline("http://testserver", new_key(app, "acme"), http=http)
        ckpt = client.register_checkpoint(model="support-bot", version="v7", kind="lora")
        golden = client.dataset("support-golden")
        golden.create("seed workflow")
        rows = tmp_path / "rows.jsonl"
        rows.write_text(
            '{"key": "r1", "input": "Refund window?", "context": "Refunds within 30 days.",'
            ' "cohort": {"user_segment": "free"}, "risk": "high"}\n'
            '{"key": "r2", "input": "Shipping time?", "context": "Shipping takes 2 days.",'
            ' "cohort": {"user_segment": "pro"}}\n'
        )
        assert golden.add_version(file=rows)["row_count"] == 2
        outputs = [
            {"key": "r1", "output": '{"answer": "Refunds within 30 days."}'},
            {"key": "r2", "output": "not json"},
        ]
        run = golden.add_evaluation(
            checkpoint=ckpt,
            evaluators=[Groundedness(), JSONValidation(schema=SCHEMA)],
            outputs=outputs,
        )
        summary = run.wait(timeout=30, poll_s=0.05).summary
        assert summary is not None
        by_evaluator = {row["evaluator"]: row for row in summary["by_evaluator"]}
        assert by_evaluator["json_validation"]["pass_rate"] == pytest.approx(0.5)
        assert set(by_evaluator) == {"groundedness", "json_validation"}
        failed = run.results(evaluator="json_validation", passed=False)
        assert [result["key"] for result in failed] == ["r2"]

        with pytest.raises(PlumblineError) as error:
            golden.add_evaluation(checkpoint=ckpt, evaluators=[{"name": "vibes"}], outputs=outputs)
        assert error.value.status == 422
        assert error.value.problem["field"] == "evaluators[0].name"

        # Declared cohort risk on an uploaded version, and two calls per row.
        declared = golden.add_version(file=rows, cohort_risk={"user_segment": {"free": "high"}})
        assert declared["version"] == 2
        assert declared["cohort_risk"] == {"user_segment": {"free": "high"}}
        twice = golden.add_evaluation(
            checkpoint=ckpt,
            evaluators=[JSONValidation(schema=SCHEMA)],
            outputs=[{**o, "repeat": r} for r in range(2) for o in outputs[:1]]
            + [{"key": "r2", "repeat": 0, "output": "not json"}]
            + [{"key": "r2", "repeat": 1, "output": '{"answer": "2 days"}'}],
            repeats=2,
        )
        repeated = twice.wait(timeout=30, poll_s=0.05).summary
        assert repeated is not None and repeated["repeats"] == 2
        [json_row] = repeated["by_evaluator"]
        assert (json_row["calls"], json_row["pass_rate"]) == (4, pytest.approx(0.75))
        assert json_row["flip_rate"] == pytest.approx(0.5)  # r2's two calls disagree
        assert {r["repeat"] for r in twice.results(key="r2")} == {0, 1}
