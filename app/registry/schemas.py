"""Checkpoints, models, promotion and rollback: the registry's public contract."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AliasChoices,
    AliasPath,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from app.core.schemas import OrmModel, StrictModel
from app.core.settings import is_service_variable
from app.models.registry import ChampionAction, CheckpointKind, CheckpointStatus

Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\s/][^/]*$")]
ShortText = Annotated[str, StringConstraints(max_length=2000)]


class EndpointSpec(StrictModel):
    """An OpenAI-compatible endpoint the service may call to produce outputs."""

    base_url: Annotated[str, StringConstraints(pattern=r"^https?://", max_length=2000)]
    model: Annotated[str, StringConstraints(min_length=1, max_length=300)]
    api_key_env: Annotated[str, StringConstraints(pattern=r"^[A-Z_][A-Z0-9_]*$")] | None = None
    timeout_s: float = Field(default=60.0, gt=0, le=600)

    @field_validator("api_key_env")
    @classmethod
    def _not_a_service_variable(cls, name: str | None) -> str | None:
        if name is not None and is_service_variable(name):
            raise ValueError(f"{name} is a setting of the service, never sent as a key")
        return name


class TrainingMeta(BaseModel):
    """Known fields are typed; anything else a training stack records is kept as given."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False)

    optimizer: str | None = None
    learning_rate: float | None = Field(default=None, ge=0)
    batch_size: int | None = Field(default=None, ge=1)
    epochs: float | None = Field(default=None, ge=0)
    data: Any = None


class CheckpointIn(StrictModel):
    model: Name
    version: Name
    kind: CheckpointKind = CheckpointKind.full
    parent: int | Name | None = Field(
        default=None, description="Parent checkpoint, by id (integer) or version (string)."
    )
    base_model: Annotated[str, StringConstraints(max_length=300)] | None = None
    artifact_uri: Annotated[str, StringConstraints(max_length=2000)] | None = None
    endpoint: EndpointSpec | None = None
    training: TrainingMeta | None = None
    tags: list[Annotated[str, StringConstraints(min_length=1, max_length=100)]] = Field(
        default_factory=list, max_length=50
    )


class Pricing(StrictModel):
    """What serving a checkpoint costs, in USD per million tokens. The drift job prices each
    call as input tokens x input price + output tokens x output price (cost signals)."""

    usd_per_million_input_tokens: float = Field(ge=0, le=1_000_000)
    usd_per_million_output_tokens: float = Field(ge=0, le=1_000_000)


class CheckpointOut(OrmModel):
    id: int
    model: str = Field(validation_alias=AliasPath("model", "name"))
    version: str
    kind: CheckpointKind
    parent_id: int | None
    parent_version: str | None = Field(
        default=None, validation_alias=AliasPath("parent", "version")
    )
    base_model: str | None
    artifact_uri: str | None
    endpoint: dict[str, Any] | None
    training: dict[str, Any]
    tags: list[str]
    status: CheckpointStatus
    pricing: Pricing | None = Field(
        description="Set with PUT /api/v1/checkpoints/{id}/pricing; null: not priced."
    )
    created_at: datetime


class CheckpointRef(OrmModel):
    checkpoint_id: int = Field(validation_alias=AliasChoices("checkpoint_id", "id"))
    version: str


class HistoryEntryOut(OrmModel):
    id: int
    action: ChampionAction
    checkpoint_id: int
    checkpoint_version: str = Field(validation_alias=AliasPath("checkpoint", "version"))
    previous_checkpoint_id: int | None
    previous_checkpoint_version: str | None = Field(
        default=None, validation_alias=AliasPath("previous_checkpoint", "version")
    )
    reason: str | None
    forced: bool
    gate_id: int | None
    alert_id: int | None
    previous_open_alert_ids: list[int] = Field(
        description="Alerts about the replaced checkpoint that stood unresolved at the change: "
        "it is no rollback target until it is the champion again."
    )
    actor: str
    at: datetime = Field(validation_alias=AliasChoices("at", "created_at"))


class ModelOut(OrmModel):
    name: str = Field(validation_alias=AliasChoices(AliasPath("model", "name"), "name"))
    champion: CheckpointOut | None
    rollback_target: CheckpointRef | None
    history: list[HistoryEntryOut] = Field(
        validation_alias=AliasChoices("newest_first", "history"), description="Newest first."
    )


class PromoteIn(StrictModel):
    checkpoint_id: int
    gate_id: int | None = None
    canary_id: int | None = Field(
        default=None, description="A canary of this checkpoint that decided 'promote'."
    )
    force: bool = False
    reason: ShortText | None = None


class RollbackIn(StrictModel):
    to: int | Name | None = Field(
        default=None, description="Target checkpoint by id or version; default: rollback target."
    )
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    alert_id: int | None = None
