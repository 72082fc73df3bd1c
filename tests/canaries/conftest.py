"""Webhook receivers in these tests listen on 127.0.0.1, so loopback targets are allowed."""

from __future__ import annotations

import pytest

from app.core.settings import Settings


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"webhook_allow_private": True})
