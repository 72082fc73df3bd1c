"""Installs the `stated_score` evaluator plugin as a real distribution for every gate test,
and allows the loopback webhook target the blocked-gate test registers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.core.settings import Settings
from plumbline.evals import ENTRY_POINT_GROUP, available_evaluators


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhook_allow_private": True})


@pytest.fixture(autouse=True)
def stated_score_plugin(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """A dist-info on sys.path declaring the entry point, discovered like any installed one."""
    site = tmp_path_factory.mktemp("site")
    dist_info = site / "plumbline_gate_tests-1.0.dist-info"
    dist_info.mkdir()
    metadata = "Metadata-Version: 2.1\nName: plumbline-gate-tests\nVersion: 1.0\n"
    (dist_info / "METADATA").write_text(metadata)
    entry_point = f"[{ENTRY_POINT_GROUP}]\nstated_score = tests.gates.stated_score:StatedScore\n"
    (dist_info / "entry_points.txt").write_text(entry_point)
    monkeypatch.syspath_prepend(str(site))
    available_evaluators(refresh=True)
    yield
    monkeypatch.undo()
    available_evaluators(refresh=True)
