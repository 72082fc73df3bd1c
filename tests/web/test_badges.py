"""Status badges: every state that means "this checkpoint must not ship" is drawn red, every
state that means "fine" green, as the gate verdicts are."""

from __future__ import annotations

import re

from app.core.resources import resource_dir
from app.models.registry import CheckpointStatus

CSS = (resource_dir("static") / "css" / "app.css").read_text()


def colour_of(badge: str) -> str | None:
    """The background of the first rule whose selector list names `.badge-<badge>`."""
    for selectors, body in re.findall(r"([^{}]+)\{([^}]*)\}", CSS):
        names = {s.strip() for s in selectors.split(",")}
        if f".badge-{badge}" in names:
            found = re.search(r"background:\s*([^;]+);", body)
            return found.group(1).strip() if found else None
    return None


def test_a_blocked_checkpoint_is_drawn_like_a_blocking_gate() -> None:
    assert colour_of("block") is not None
    assert colour_of(CheckpointStatus.blocked.value) == colour_of("block")
    assert colour_of(CheckpointStatus.rolled_back.value) == colour_of("block")
    assert colour_of(CheckpointStatus.champion.value) == colour_of("pass")
