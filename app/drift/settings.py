"""A project's drift settings (reference length, warm-up, daily error budget): read by the
daily job once per project-day, changed by an admin through the API, audited.

They live under the "drift" key of projects.settings, next to other nouns' keys (ingest's
"online_eval"); writing one key keeps the others."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core import audit
from app.core.auth import Principal
from app.core.errors import NotFound
from app.drift.schemas import DriftSettings
from app.models import Project

SETTINGS_KEY = "drift"


def drift_settings(session: Session, project_id: int) -> DriftSettings:
    """The project's settings; defaults for whatever it never set."""
    stored = session.scalar(select(Project.settings).where(Project.id == project_id)) or {}
    return DriftSettings.model_validate(stored.get(SETTINGS_KEY) or {})


def set_drift_settings(
    session: Session, principal: Principal, body: DriftSettings
) -> DriftSettings:
    """Replaces the project's drift settings as a whole (other keys kept); audited."""
    project = session.get(Project, principal.project_id)
    if project is None:
        raise NotFound("project not found")
    values = body.model_dump()
    project.settings = {**(project.settings or {}), SETTINGS_KEY: values}
    audit.record(
        session, principal, "project.settings_changed", "project", project.id, {"drift": values}
    )
    session.commit()
    return body
