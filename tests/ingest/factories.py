"""Event bodies as clients send them."""

from __future__ import annotations

from typing import Any


def event(index: int = 0, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "trace_id": f"trace-{index:05d}",
        "span_id": f"span-{index:05d}",
        "timestamp": "2024-05-01T12:00:00Z",
        "model": "support-bot",
        "checkpoint_version": "v1",
        "cohort": {"route": "/chat", "prompt_version": "p3", "user_segment": "free"},
        "input": "How do I reset my password?",
        "output": "Open settings, then choose 'Reset password'.",
        "latency_ms": 120.5,
    }
    body.update(overrides)
    return body
