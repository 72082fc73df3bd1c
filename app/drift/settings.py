"""A project's drift settings (reference length, warm-up, daily error budget): read by the
daily job once per project-day, changed by an admin through the API, audited.

They live under the "drift" key of projects.settings, next to other nouns' keys (ingest's
"online_eval"); writing one key keeps the others."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.core.auth import Principal
from app.drift.schemas import DriftSettings
from app.keys import service as projects

SETTINGS_KEY = "drift"


def drift_settings(session: Session, project_id: int) -> DriftSettings:
    """The project's settings; defaults for whatever it never set."""
    stored = projects.project_settings(session, project_id)
    return DriftSettings.model_validate(stored.get(SETTINGS_KEY) or {})


def set_drift_settings(
    session: Session, principal: Principal, body: DriftSettings
) -> DriftSettings:
    """Replaces the project's drift settings as a whole (other keys kept); audited."""
    projects.set_project_setting(session, principal, SETTINGS_KEY, body.model_dump())
    return body
