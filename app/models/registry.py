"""Models, their checkpoints, the append-only champion history and gate policies."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.models.base import Base, CreatedAt, JSONType, TenantKeyed, postgresql_primary_key, str_enum

PRICING_PAIR = "(usd_per_million_input_tokens IS NULL) = (usd_per_million_output_tokens IS NULL)"


class CheckpointKind(StrEnum):
    full = "full"
    lora = "lora"
    rlhf = "rlhf"
    quantized = "quantized"
    base = "base"
    api = "api"


class CheckpointStatus(StrEnum):
    registered = "registered"
    evaluated = "evaluated"
    champion = "champion"
    retired = "retired"
    blocked = "blocked"
    rolled_back = "rolled_back"


class ChampionAction(StrEnum):
    promote = "promote"
    rollback = "rollback"


class Model(CreatedAt, Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("project_id", "name"),)


class Checkpoint(CreatedAt, Base):
    __tablename__ = "checkpoints"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[str] = mapped_column(String(200))
    kind: Mapped[CheckpointKind] = mapped_column(str_enum(CheckpointKind, "checkpoint_kind"))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("checkpoints.id"))
    base_model: Mapped[str | None] = mapped_column(String(300))
    artifact_uri: Mapped[str | None] = mapped_column(Text)
    endpoint: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    training: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tags: Mapped[list[str]] = mapped_column(JSONType, default=list)
    status: Mapped[CheckpointStatus] = mapped_column(
        str_enum(CheckpointStatus, "checkpoint_status"), default=CheckpointStatus.registered
    )
    # Hash of the registration body: same body again is idempotent, a different one conflicts.
    spec_hash: Mapped[str] = mapped_column(String(64))
    # What serving costs, set apart from registration (prices change, the artifact does not):
    # both or neither (CHECK "pricing_pair"), in USD per million tokens. The drift job prices
    # each call with its checkpoint's current prices (cost signals).
    usd_per_million_input_tokens: Mapped[float | None]
    usd_per_million_output_tokens: Mapped[float | None]

    # Loaded with the row (one extra SELECT per query, not per row): every shape of a
    # checkpoint names its model, and most name its parent.
    model: Mapped[Model] = relationship(lazy="selectin")
    parent: Mapped[Checkpoint | None] = relationship(
        remote_side=[id], lazy="selectin", join_depth=1
    )

    @property
    def pricing(self) -> dict[str, float] | None:
        """The prices as the API shows them (None: not priced, so no cost signals)."""
        if self.usd_per_million_input_tokens is None or self.usd_per_million_output_tokens is None:
            return None
        return {
            "usd_per_million_input_tokens": self.usd_per_million_input_tokens,
            "usd_per_million_output_tokens": self.usd_per_million_output_tokens,
        }

    __table_args__ = (
        UniqueConstraint("model_id", "version"),
        Index("ix_checkpoints_project_model", "project_id", "model_id"),
        Index("ix_checkpoints_parent", "parent_id"),
        CheckConstraint(PRICING_PAIR, name="pricing_pair"),
    )


class ChampionHistory(TenantKeyed, CreatedAt, Base):
    """Append-only: the prior known-good checkpoint can always be found again."""

    __tablename__ = "champion_history"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    checkpoint_id: Mapped[int] = mapped_column(ForeignKey("checkpoints.id"))
    previous_checkpoint_id: Mapped[int | None] = mapped_column(ForeignKey("checkpoints.id"))
    action: Mapped[ChampionAction] = mapped_column(str_enum(ChampionAction, "champion_action"))
    reason: Mapped[str | None] = mapped_column(Text)
    forced: Mapped[bool] = mapped_column(default=False)
    gate_id: Mapped[int | None] = mapped_column(ForeignKey("gates.id", ondelete="SET NULL"))
    alert_id: Mapped[int | None] = mapped_column(ForeignKey("alerts.id", ondelete="SET NULL"))
    actor: Mapped[str] = mapped_column(String(100))
    api_key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="SET NULL"))
    # The alerts about `previous_checkpoint_id` that stood unresolved when it was replaced: a
    # checkpoint replaced under an alert is no known-good rollback target, like one rolled
    # back (registry.service.rollback_target_id). Taken at the change, so resolving the
    # alert later ("fixed in the next version") does not make the old checkpoint good again.
    previous_open_alert_ids: Mapped[list[int]] = mapped_column(
        JSONType, default=list, server_default=text("'[]'")
    )

    checkpoint: Mapped[Checkpoint] = relationship(foreign_keys=[checkpoint_id], lazy="selectin")
    previous_checkpoint: Mapped[Checkpoint | None] = relationship(
        foreign_keys=[previous_checkpoint_id], lazy="selectin"
    )

    __table_args__ = (
        Index("ix_champion_history_model", "model_id", "id"),
        postgresql_primary_key("project_id", "id"),
    )


NO_VERDICT_FIELDS = frozenset(
    {
        # Whether a canary may stand in for a gate, never what a gate decides.
        "accept_canary",
        # Only the rows `required_n` asks for (app.stats.planning): no test reads them.
        "power",
        "block_power",
        "min_effect",
        # Retired: accepted and ignored (docs/statistics.md §7.6).
        "min_rows",
        "warn_risks",
        "bootstrap_resamples",
        "seed",
    }
)
"""Gate policy fields a gate's verdict does not depend on: changing one keeps a gate
decided before current for promotion."""


class GatePolicy(TenantKeyed, CreatedAt, Base):
    """Versioned: a stored gate records which policy version decided it."""

    __tablename__ = "gate_policies"

    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    version: Mapped[int]
    policy: Mapped[dict[str, Any]]
    actor: Mapped[str] = mapped_column(String(100))

    __table_args__ = (
        UniqueConstraint(
            "project_id", "model_id", "version", name="uq_gate_policies_project_model_version"
        ),
        postgresql_primary_key("project_id", "id"),
    )

    @property
    def accepts_canary(self) -> bool:
        """Whether a canary that decided 'promote' counts as a passing gate. Versions stored
        before the field existed have no key and accept, as the policy's default does."""
        return bool(self.policy.get("accept_canary", True))

    def changes_from(self, decided: Mapping[str, Any]) -> list[str]:
        """The fields in which this version differs from the policy a gate was decided under
        (the gate's stored `policy`), but for those that decide no verdict
        (`NO_VERDICT_FIELDS`). Empty: the gate was decided under this policy, whatever
        version numbers lie between (a PUT of the same policy, or a change made and
        undone)."""
        fields = (self.policy.keys() | decided.keys()) - NO_VERDICT_FIELDS
        return sorted(key for key in fields if self.policy.get(key) != decided.get(key))
