"""Every table, imported in one place so Alembic and the app see the same metadata."""

from app.models.base import Base
from app.models.canaries import Canary
from app.models.datasets import Dataset, DatasetRow, DatasetVersion, EvaluationSuite
from app.models.drift import (
    Alert,
    DailySignal,
    DriftJudgement,
    DriftReference,
    DriftReferenceCohort,
    DriftRun,
    IncidentDay,
    Monitor,
)
from app.models.events import Event, EventCohort, EventKey, Feedback
from app.models.gates import Gate
from app.models.jobs import JobRun
from app.models.project import ApiKey, AuditLog, Project
from app.models.registry import ChampionHistory, Checkpoint, GatePolicy, Model
from app.models.runs import EvalResult, EvaluationRun, RunOutput
from app.models.webhooks import WebhookDelivery, WebhookEndpoint

__all__ = [
    "Alert",
    "ApiKey",
    "AuditLog",
    "Base",
    "Canary",
    "ChampionHistory",
    "Checkpoint",
    "DailySignal",
    "Dataset",
    "DatasetRow",
    "DatasetVersion",
    "DriftJudgement",
    "DriftReference",
    "DriftReferenceCohort",
    "DriftRun",
    "EvalResult",
    "EvaluationRun",
    "EvaluationSuite",
    "Event",
    "EventCohort",
    "EventKey",
    "Feedback",
    "Gate",
    "GatePolicy",
    "IncidentDay",
    "JobRun",
    "Model",
    "Monitor",
    "Project",
    "RunOutput",
    "WebhookDelivery",
    "WebhookEndpoint",
]
