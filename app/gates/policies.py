"""Per-model gate policies: versioned (a stored gate names the version that decided it),
the built-in default when none is stored, and a request's override of some fields."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core import audit
from app.core.auth import Principal
from app.core.errors import Conflict, Unprocessable
from app.gates.schemas import GatePolicySpec
from app.models import (
    GatePolicy,
    Model,
)
from app.registry import service as registry
from app.registry.queries import latest_policy


@dataclass(frozen=True)
class PolicyState:
    model: Model
    stored: GatePolicy | None
    spec: GatePolicySpec


def get_policy(session: Session, project_id: int, model_name: str) -> PolicyState:
    """The model's current policy; the built-in default (version None) until one is stored."""
    model = registry.get_model(session, project_id, model_name)
    stored = latest_policy(session, model.project_id, model.id)
    return PolicyState(model, stored, effective_policy(stored, None))


def put_policy(
    session: Session, principal: Principal, model_name: str, spec: GatePolicySpec
) -> PolicyState:
    """Stores a new version; earlier versions stay, so every gate can name the one it used."""
    model = registry.get_model(session, principal.project_id, model_name)
    latest = latest_policy(session, model.project_id, model.id)
    row = GatePolicy(
        project_id=principal.project_id,
        model_id=model.id,
        version=(latest.version if latest else 0) + 1,
        policy=spec.as_stored(),
        actor=principal.actor,
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise Conflict("the gate policy was changed concurrently; retry") from exc
    audit.record(
        session,
        principal,
        "gate_policy.updated",
        "model",
        model.id,
        {"model": model.name, "version": row.version, "policy": row.policy},
    )
    session.commit()
    return PolicyState(model, row, spec)


def effective_policy(stored: GatePolicy | None, override: GatePolicySpec | None) -> GatePolicySpec:
    """The stored policy (or the default) with the request's explicitly given fields on top."""
    base = stored.policy if stored else GatePolicySpec().as_stored()
    given = override.model_dump(mode="json", exclude_unset=True) if override else {}
    try:
        return GatePolicySpec.model_validate({**base, **given})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        stale = (
            "" if given else f" (stored policy v{stored.version if stored else '-'}: PUT a new one)"
        )
        raise Unprocessable(
            f"policy: {where + ': ' if where else ''}{first['msg']}{stale}", field="policy"
        ) from exc
