"""Checkpoints and champions: registration, lineage, promotion, rollback."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core import audit
from app.core.auth import Principal
from app.core.db import get_owned, utcnow
from app.core.errors import Conflict, NotFound, Unprocessable
from app.core.links import Links
from app.core.pagination import paginate
from app.core.settings import key_variable_problem
from app.models import Alert, Canary, ChampionHistory, Checkpoint, EvaluationRun, Gate, Model
from app.models.canaries import CanaryDecision, CanaryStatus
from app.models.drift import AlertStatus
from app.models.gates import GateVerdict
from app.models.registry import ChampionAction, CheckpointStatus
from app.models.runs import RunStatus
from app.registry.queries import (
    latest_policy,
    newer_dataset_version,
    replaced_under_alert,
    runs_not_pooled,
    standing_blocks,
)
from app.registry.schemas import CheckpointIn, Pricing
from app.webhooks import outbox


@dataclass(frozen=True)
class ModelState:
    model: Model
    champion: Checkpoint | None
    rollback_target: Checkpoint | None
    history: Sequence[ChampionHistory]  # oldest first

    @property
    def newest_first(self) -> list[ChampionHistory]:
        return list(reversed(self.history))


def get_model(session: Session, project_id: int, name: str, *, lock: bool = False) -> Model:
    """`lock` serializes champion changes of the model on PostgreSQL until the transaction
    ends (SQLite's BEGIN IMMEDIATE already does), and expires what the session loaded before
    the lock was granted, so that every later read sees what the previous holder committed:
    a promotion or rollback must be decided on the champion it replaces, not on the one
    another request replaced meanwhile."""
    stmt = select(Model).where(Model.project_id == project_id, Model.name == name)
    model = session.scalar(stmt.with_for_update() if lock else stmt)
    if model is None:
        raise NotFound(f"no model named '{name}'")
    if lock:
        session.expire_all()
    return model


def _get_or_create_model(session: Session, project_id: int, name: str) -> Model:
    model = session.scalar(select(Model).where(Model.project_id == project_id, Model.name == name))
    if model is None:
        model = Model(project_id=project_id, name=name)
        session.add(model)
        session.flush()
    return model


def get_checkpoint(session: Session, project_id: int, checkpoint_id: int) -> Checkpoint:
    return get_owned(session, Checkpoint, project_id, checkpoint_id, "checkpoint")


def find_checkpoint(session: Session, model: Model, ref: int | str) -> Checkpoint | None:
    """A checkpoint of `model` by id (int) or version (str)."""
    column = Checkpoint.id if isinstance(ref, int) else Checkpoint.version
    return session.scalar(
        select(Checkpoint).where(
            Checkpoint.project_id == model.project_id,
            Checkpoint.model_id == model.id,
            column == ref,
        )
    )


def _spec_hash(body: CheckpointIn, parent_id: int | None) -> str:
    spec = body.model_dump(mode="json", exclude={"parent"}, exclude_none=True)
    spec["parent_id"] = parent_id
    spec["tags"] = sorted(set(body.tags))
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def register_checkpoint(
    session: Session,
    principal: Principal,
    body: CheckpointIn,
    key_variables: frozenset[str] = frozenset(),
) -> tuple[Checkpoint, bool]:
    """Returns (checkpoint, created). The same body again is idempotent; a different one for
    an existing (model, version) is a conflict, because a version names one artifact.
    `key_variables`: the names the endpoint may give as its `api_key_env` (the operator's
    Settings.key_variables; none by default)."""
    key_env = body.endpoint.api_key_env if body.endpoint else None
    problem = None if key_env is None else key_variable_problem(key_env, key_variables)
    if problem is not None:
        raise Unprocessable(f"endpoint.api_key_env: {problem}", field="endpoint.api_key_env")
    model = _get_or_create_model(session, principal.project_id, body.model)
    parent_id = None
    if body.parent is not None:
        parent = find_checkpoint(session, model, body.parent)
        if parent is None:
            raise Unprocessable(
                f"parent: no checkpoint '{body.parent}' in model '{body.model}'", field="parent"
            )
        parent_id = parent.id
    spec_hash = _spec_hash(body, parent_id)
    existing = find_checkpoint(session, model, body.version)
    if existing is not None:
        return _same_or_conflict(session, existing, spec_hash)
    checkpoint = Checkpoint(
        project_id=principal.project_id,
        model_id=model.id,
        version=body.version,
        kind=body.kind,
        parent_id=parent_id,
        base_model=body.base_model,
        artifact_uri=body.artifact_uri,
        endpoint=body.endpoint.model_dump(mode="json") if body.endpoint else None,
        training=body.training.model_dump(mode="json", exclude_none=True) if body.training else {},
        tags=sorted(set(body.tags)),
        spec_hash=spec_hash,
    )
    session.add(checkpoint)
    try:
        session.flush()
    except IntegrityError:
        # A concurrent registration of the same version won the race.
        session.rollback()
        model = _get_or_create_model(session, principal.project_id, body.model)
        raced = find_checkpoint(session, model, body.version)
        if raced is None:
            raise
        return _same_or_conflict(session, raced, spec_hash)
    audit.record(
        session,
        principal,
        "checkpoint.registered",
        "checkpoint",
        checkpoint.id,
        {"model": model.name, "version": checkpoint.version, "kind": checkpoint.kind.value},
    )
    session.commit()
    return checkpoint, True


def _same_or_conflict(
    session: Session, existing: Checkpoint, spec_hash: str
) -> tuple[Checkpoint, bool]:
    session.rollback()
    if existing.spec_hash != spec_hash:
        raise Conflict(
            f"version '{existing.version}' is already registered with a different body "
            f"(checkpoint {existing.id}); register a new version instead",
            checkpoint_id=existing.id,
        )
    return existing, False


def set_pricing(
    session: Session, principal: Principal, checkpoint_id: int, pricing: Pricing | None
) -> Checkpoint:
    """Sets (or, with None, clears) what serving the checkpoint costs, audited with the
    prices it replaces; setting the prices it has already is a no-op, clearing prices it
    does not have is a 404. Both prices change together. The drift job prices calls with
    the prices current when it runs: days computed before keep their costs until
    recomputed."""
    checkpoint = get_checkpoint(session, principal.project_id, checkpoint_id)
    before = checkpoint.pricing
    if pricing is None and before is None:
        raise NotFound(f"checkpoint {checkpoint_id} has no prices to clear")
    if pricing is not None and before == pricing.model_dump():
        return checkpoint
    checkpoint.usd_per_million_input_tokens = (
        pricing.usd_per_million_input_tokens if pricing else None
    )
    checkpoint.usd_per_million_output_tokens = (
        pricing.usd_per_million_output_tokens if pricing else None
    )
    audit.record(
        session,
        principal,
        "checkpoint.pricing_set" if pricing else "checkpoint.pricing_cleared",
        "checkpoint",
        checkpoint.id,
        {"before": before, "after": checkpoint.pricing},
    )
    session.commit()
    return checkpoint


def list_checkpoints(
    session: Session, project_id: int, model_name: str | None, cursor: str | None, limit: int
) -> tuple[Sequence[Checkpoint], str | None]:
    stmt = select(Checkpoint).where(Checkpoint.project_id == project_id)
    if model_name is not None:
        model = session.scalar(
            select(Model).where(Model.project_id == project_id, Model.name == model_name)
        )
        stmt = stmt.where(Checkpoint.model_id == (model.id if model else -1))
    return paginate(session, stmt, Checkpoint.id, cursor, limit)


def _history(session: Session, model: Model) -> Sequence[ChampionHistory]:
    return session.scalars(
        select(ChampionHistory)
        .where(ChampionHistory.project_id == model.project_id, ChampionHistory.model_id == model.id)
        .order_by(ChampionHistory.id)
    ).all()


def rollback_target_id(
    history: Sequence[ChampionHistory], alerted: Set[int], leaving: int | None = None
) -> int | None:
    """The latest champion in `history` other than `leaving` (default: the current champion)
    that was not itself replaced for cause; never `leaving` itself.

    A checkpoint counts as replaced for cause from a rollback away from it, or from an entry
    in `alerted` (`replaced_under_alert`: it was replaced while an alert about it stood, or
    one opened about it afterwards), until it is the champion again: fixing forward (A, then
    B regressing, then a fix C promoted instead of a rollback) must not make B the way back
    from C. Being made the champion again, promoted or rolled back to by name, is a person's
    decision that it is good.

    `leaving` took over from the champion of the day (the history's last entry) unless it is
    that champion: then it took over from the one before its own latest entry. Both are the
    latest entry naming another checkpoint. A checkpoint that serves without being the
    champion on record (deployed before its promotion, or a former champion redeployed without
    one) replaced the current champion, so that is its target: measured from `leaving`'s own
    promotion instead, "promote 1, 2, 3" with 2 serving again named 1 (the champion before 2's
    old promotion) where 2 had replaced 3, and a checkpoint deployed before its promotion named
    the champion two versions back."""
    if not history:
        return None
    leaving = history[-1].checkpoint_id if leaving is None else leaving
    for_cause: set[int] = set()
    for entry in history:
        for_cause.discard(entry.checkpoint_id)
        if entry.previous_checkpoint_id is not None and (
            entry.action is ChampionAction.rollback or entry.id in alerted
        ):
            for_cause.add(entry.previous_checkpoint_id)
    for entry in reversed(history):
        candidate = entry.checkpoint_id
        if candidate != leaving and candidate not in for_cause:
            return candidate
    return None


def model_state(
    session: Session, project_id: int, name: str, alert_id: int | None = None
) -> ModelState:
    """The model, its champion and history, and where a rollback would go: for a rollback
    made for alert `alert_id`, that alert's target (see `_rollback_target`)."""
    model = get_model(session, project_id, name)
    history = _history(session, model)
    champion = session.get(Checkpoint, history[-1].checkpoint_id) if history else None
    alert = _check_alert(session, project_id, alert_id, model) if alert_id else None
    return ModelState(model, champion, _rollback_target(session, history, alert), history)


def _rollback_target(
    session: Session, history: Sequence[ChampionHistory], alert: Alert | None
) -> Checkpoint | None:
    """For an alert, the known-good checkpoint the alert and its webhook named (the champion
    history as it stood on the judged day); otherwise the most recent earlier champion not
    itself replaced for cause (`rollback_target_id`). Never the current champion, and none
    for an alert whose checkpoint is no longer the champion (a fix promoted since: going back
    to the alert's target would replace the fix), nor for a resolved one. The model's target
    moves with every promotion: after one, it is the checkpoint that raised the alert if that
    alert was resolved by then and none opened about it since."""
    current = history[-1].checkpoint_id if history else None
    if alert is not None and (
        alert.checkpoint_id != current or alert.status is AlertStatus.resolved
    ):
        return None
    if alert is not None and alert.rollback_target_id is not None:
        target_id: int | None = alert.rollback_target_id
    else:
        target_id = rollback_target_id(history, replaced_under_alert(session, history))
    return session.get(Checkpoint, target_id) if target_id and target_id != current else None


def champion_of(session: Session, project_id: int, model_id: int) -> Checkpoint | None:
    latest = session.scalar(
        select(ChampionHistory)
        .where(ChampionHistory.project_id == project_id, ChampionHistory.model_id == model_id)
        .order_by(ChampionHistory.id.desc())
        .limit(1)
    )
    return session.get(Checkpoint, latest.checkpoint_id) if latest else None


def champion_change_since(
    session: Session, project_id: int, model_id: int, since: datetime
) -> ChampionHistory | None:
    """The model's first champion change after `since` that replaced one checkpoint with
    another (promotion or rollback; a first champion replaces none), if any. A comparison with
    "the champion" holds only while nothing replaced it: a change that was changed back still
    put another checkpoint in production in between."""
    return session.scalar(
        select(ChampionHistory)
        .where(
            ChampionHistory.project_id == project_id,
            ChampionHistory.model_id == model_id,
            ChampionHistory.previous_checkpoint_id.is_not(None),
            ChampionHistory.created_at > since,
        )
        .order_by(ChampionHistory.id)
        .limit(1)
    )


def _check_canary(
    session: Session, checkpoint: Checkpoint, current: Checkpoint | None, canary_id: int | None
) -> Canary | None:
    """A canary that decided 'promote' stands in for a passing gate when the model's gate
    policy accepts canaries (`accept_canary`, on by default). Read through the models, so the
    registry never imports the canaries package (which calls the registry)."""
    if canary_id is None:
        return None
    canary = get_owned(session, Canary, checkpoint.project_id, canary_id, "canary", "canary_id")
    if canary.checkpoint_id != checkpoint.id:
        raise Conflict(
            f"canary_id: canary {canary_id} compared checkpoint {canary.checkpoint_id}, not this "
            "one",
            field="canary_id",
        )
    if canary.decision is not CanaryDecision.promote or canary.status is not CanaryStatus.promote:
        raise Conflict(
            f"canary_id: canary {canary_id} is '{canary.status.value}'; promotion needs a canary "
            "that decided 'promote' (or a passing gate, or force with a written reason)",
            field="canary_id",
        )
    refused = canary_promotion_refusal(session, canary, current)
    if refused is not None:
        raise Conflict(f"canary_id: {refused}", field="canary_id")
    return canary


def canary_promotion_refusal(
    session: Session, canary: Canary, current: Checkpoint | None = None
) -> str | None:
    """Why promoting the candidate on the word of `canary` (a 'promote' decision, or one
    being taken now) is refused now, if it is: the champion it was compared with no longer
    serves, or changed and back since it started; newer evidence against the candidate; a
    gate block standing on it; a gate policy not accepting canaries. `current` is the
    champion when the caller read it already (a promotion holds the model's lock).

    The one check `_check_canary` answers 409 with and the canary's decision, API and page
    tell: a copy of part of it offered a Promote button that answered 409."""
    checkpoint = session.get_one(Checkpoint, canary.checkpoint_id)
    if current is None:
        current = champion_of(session, canary.project_id, canary.model_id)
    if current is not None and current.id == canary.checkpoint_id:
        return f"checkpoint {current.id}, the candidate of canary {canary.id}, is the champion"
    if current is None or current.id != canary.champion_id:
        return (
            f"canary {canary.id} compared against checkpoint {canary.champion_id}, which is no "
            "longer the champion"
        )
    changed = champion_change_since(session, canary.project_id, canary.model_id, canary.started_at)
    if changed is not None:
        return (
            f"the champion changed since canary {canary.id} started (history entry "
            f"{changed.id}, {changed.action.value} of checkpoint {changed.checkpoint_id}); its "
            "comparison no longer describes replacing the champion: run a new canary or gate"
        )
    # A canary deciding now has no ended_at yet: everything before now is what it saw.
    decided_at = canary.ended_at or utcnow()
    newer = _newer_evidence_against(session, checkpoint, decided_at, None)
    if newer is not None:
        return (
            f"{newer} after canary {canary.id} decided promote; only later evidence lifts it: "
            "a pass on the blocking gate's dataset, or a later canary after a rollback (or "
            "force with a written reason)"
        )
    standing = _standing_block(session, checkpoint)
    if standing is not None:
        return (
            f"{standing}; canary {canary.id} does not lift it (only a pass on that dataset "
            "against the block's baseline or the champion, under the stored gate policy, does; "
            "or force with a written reason)"
        )
    refuses = _policy_refusing_canaries(session, checkpoint)
    if refuses is not None:
        return f"{refuses}; promote with a passing gate"
    return None


def _policy_refusing_canaries(session: Session, checkpoint: Checkpoint) -> str | None:
    policy = latest_policy(session, checkpoint.project_id, checkpoint.model_id)
    if policy is not None and not policy.accepts_canary:
        return f"the gate policy (v{policy.version}) does not accept canaries (accept_canary)"
    return None


def _spend_canary(session: Session, canary: Canary) -> None:
    """Records the promotion on the canary, only while its 'promote' decision still stands:
    a conditional UPDATE, since a rollback of the candidate confirmed meanwhile
    (canaries.service.roll_back, which takes no lock on the model) is committed after this
    request read the canary. On PostgreSQL the UPDATE waits for that rollback and then finds
    the canary rolled back: 409, and nothing is promoted. Written over it, the candidate
    became the champion with its canary both rolled back and promoted."""
    spent = session.execute(
        update(Canary)
        .where(
            Canary.project_id == canary.project_id,
            Canary.id == canary.id,
            Canary.status == CanaryStatus.promote,
            Canary.decision == CanaryDecision.promote,
            Canary.rolled_back_at.is_(None),
            Canary.promoted_at.is_(None),
        )
        .values(promoted_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if spent.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise Conflict(
            f"canary_id: canary {canary.id} changed while its promotion was asked (rolled back, "
            "or already spent on a promotion); reload it",
            field="canary_id",
        )


def _check_gate(
    session: Session, checkpoint: Checkpoint, current: Checkpoint | None, gate_id: int | None
) -> Gate | None:
    """A gate that allows promoting `checkpoint` over `current`: its own, compared with
    `current` (a gate against another run, or against a champion since replaced, says
    nothing about replacing this one), passing (or inconclusive under a policy that allows
    it), and not followed by a blocking gate, a canary that decided rollback or a rollback
    of the model away from it in production; on the dataset's current version (a newer one
    may add rows or declare cohorts high-risk); and with no block standing on any dataset: a
    block stands until a later pass on the same dataset against the block's baseline (or the
    champion) under the stored policy (registry.queries.standing_blocks, docs/statistics.md
    §7.6); and having pooled every run of the checkpoint on its version, with none of them
    still in progress (a pass decided before a run finished never saw it). The gate must
    have been decided under the model's stored gate policy as it is now: a writer's request
    override (say, guarding nothing and allowing inconclusive) explores, but never promotes
    past the policy an admin set. "As it is now" is the policy's
    content, not its version number: a PUT of the same policy, or of a field that decides no
    gate (`accept_canary`), leaves a gate current, where re-deciding it would spend the next
    attempt's halved alpha on the same rows."""
    if gate_id is None:
        return None
    gate = get_owned(session, Gate, checkpoint.project_id, gate_id, "gate")
    if gate.checkpoint_id != checkpoint.id:
        raise Conflict(f"gate {gate_id} judged checkpoint {gate.checkpoint_id}, not this one")
    compared_with = session.scalar(
        select(EvaluationRun.checkpoint_id).where(EvaluationRun.id == gate.baseline_run_id)
    )
    if current is not None and compared_with != current.id:
        raise Conflict(
            f"gate {gate_id} compared with checkpoint {compared_with}, not with the champion "
            f"(checkpoint {current.id}); gate against the champion's run (or force with a "
            "written reason)"
        )
    allowed = gate.verdict is GateVerdict.passed or (
        gate.verdict is GateVerdict.inconclusive and bool(gate.policy.get("allow_inconclusive"))
    )
    if not allowed:
        raise Conflict(
            f"gate {gate_id} verdict is '{gate.verdict.value}'; promotion needs 'pass' "
            "(or force with a written reason)"
        )
    if gate.exploratory:
        # The notes name the overridden fields for the reader; the column decides.
        changed = gate.notes.get("policy_overrides")
        fields = f": {', '.join(changed)}" if changed else ""
        raise Conflict(
            f"gate {gate_id} is exploratory (policy overridden in the request{fields}): it "
            "spent no attempt of the retry budget and never promotes; promotion takes a gate "
            "decided under the policy itself (an admin changes it), or force with a written "
            "reason"
        )
    policy = latest_policy(session, checkpoint.project_id, checkpoint.model_id)
    version = policy.version if policy else None
    changed = policy.changes_from(gate.policy) if policy is not None else []
    if gate.policy_version != version and (policy is None or changed):
        fields = f" in {', '.join(changed)}" if changed else ""
        since = f"{_policy_name(gate.policy_version)} -> {_policy_name(version)}{fields}"
        raise Conflict(
            f"the model's gate policy changed since gate {gate_id} ({since}); decide a new "
            "gate under it"
        )
    later_version = newer_dataset_version(session, checkpoint.project_id, gate.dataset_version_id)
    if later_version is not None:
        raise Conflict(
            f"gate {gate_id} ran on dataset '{later_version.dataset}' v{later_version.gated}; it "
            f"is at v{later_version.latest} now, whose rows and cohort risks that gate never "
            "saw: gate on the current version (or force with a written reason)"
        )
    newer = _newer_evidence_against(session, checkpoint, gate.created_at, gate)
    if newer is not None:
        raise Conflict(
            f"{newer} after gate {gate_id}; only a later passing gate lifts it (or force with a "
            "written reason)"
        )
    unpooled = _run_not_pooled(session, checkpoint, gate)
    if unpooled is not None:
        finished = unpooled.status is RunStatus.succeeded
        raise Conflict(
            f"run {unpooled.id} of this checkpoint on the dataset version of gate {gate_id} "
            f"is '{unpooled.status.value}', and the gate never pooled it (it pooled runs "
            f"{', '.join(map(str, _pooled_by(gate)))}): "
            + ("gate again, which pools it" if finished else "wait for it, then gate again")
            + " (or force with a written reason)"
        )
    _refuse_standing_block(session, checkpoint, f"gate {gate_id}", "gate_id")
    return gate


def _pooled_by(gate: Gate) -> list[int]:
    """The candidate's runs a gate pooled (a gate stored before pooling names its one run)."""
    return gate.candidate_run_ids or [gate.candidate_run_id]


def _run_not_pooled(session: Session, checkpoint: Checkpoint, gate: Gate) -> EvaluationRun | None:
    """The first run of `checkpoint` on the gate's dataset version that the gate did not pool
    and that is or may become evidence (in progress, or succeeded after the gate): a pass
    promoted on while another run was in progress picks the first to finish by its timing."""
    unpooled = runs_not_pooled(
        session, checkpoint.project_id, checkpoint.id, gate.dataset_version_id, _pooled_by(gate)
    )
    return unpooled[0] if unpooled else None


def _policy_name(version: int | None) -> str:
    return "the default" if version is None else f"v{version}"


def _refuse_standing_block(
    session: Session, checkpoint: Checkpoint, evidence: str, field: str
) -> None:
    """409 while a gate's block stands on any dataset: only a later pass on that dataset
    lifts it. A pass elsewhere measured other rows, and a canary live traffic, which rarely
    holds the golden set's high-risk rows the block was about."""
    standing = _standing_block(session, checkpoint)
    if standing is not None:
        raise Conflict(
            f"{standing}; {evidence} does not lift it (only a pass on that dataset against the "
            "block's baseline or the champion, under the stored gate policy, does; or force "
            "with a written reason)",
            field=field,
        )


def _standing_block(session: Session, checkpoint: Checkpoint) -> str | None:
    standing = standing_blocks(session, checkpoint.project_id, checkpoint.id)
    if not standing:
        return None
    block = standing[0]
    return (
        f"gate {block.gate_id} blocked this checkpoint on dataset '{block.dataset}' and no "
        "later gate on that dataset passed it"
    )


def _newer_evidence_against(
    session: Session, checkpoint: Checkpoint, since: datetime, after_gate: Gate | None
) -> str | None:
    """What happened to `checkpoint` after the evidence decided at `since` (a gate's or a
    canary's) that outweighs it, if anything: a blocking gate (after `after_gate` by id, ids
    being the order gates were decided in), a canary that decided rollback (a rollback by
    hand of a canary stopped earlier keeps its ended_at, hence the coalesce), a rollback of
    the model away from it, or a change of champion that replaced it under an alert
    (`replaced_under_alert`): a checkpoint replaced while regressing is no more promotable
    again on its old evidence than one rolled back. An alert alone is not: one resolved as a
    false alarm before any change leaves a first promotion to its gate (review R-M1b)."""
    later_gate = Gate.id > after_gate.id if after_gate is not None else Gate.created_at > since
    evidence = (
        (
            select(Gate.id).where(
                Gate.project_id == checkpoint.project_id,
                Gate.checkpoint_id == checkpoint.id,
                later_gate,
                Gate.verdict == GateVerdict.block,
                Gate.exploratory.is_(False),  # a what-if policy's block is not evidence
            ),
            "gate {} blocked this checkpoint",
        ),
        (
            select(Canary.id).where(
                Canary.project_id == checkpoint.project_id,
                Canary.checkpoint_id == checkpoint.id,
                Canary.decision == CanaryDecision.rollback,
                func.coalesce(Canary.rolled_back_at, Canary.ended_at) > since,
            ),
            "canary {} decided rollback for this checkpoint",
        ),
        (
            select(ChampionHistory.id).where(
                ChampionHistory.project_id == checkpoint.project_id,
                ChampionHistory.previous_checkpoint_id == checkpoint.id,
                ChampionHistory.action == ChampionAction.rollback,
                ChampionHistory.created_at > since,
            ),
            "the model was rolled back from this checkpoint (history entry {})",
        ),
    )
    for statement, message in evidence:
        found = session.scalar(statement.order_by(statement.selected_columns[0]).limit(1))
        if found is not None:
            return message.format(found)
    history = _history(session, session.get_one(Model, checkpoint.model_id))
    alerted = replaced_under_alert(session, history)
    for entry in history:
        if (
            entry.previous_checkpoint_id == checkpoint.id
            and entry.created_at > since
            and entry.id in alerted
        ):
            return (
                "the model replaced this checkpoint under an alert about it (history entry "
                f"{entry.id}: alerts {entry.previous_open_alert_ids or 'opened after it'})"
            )
    return None


def promote(
    session: Session,
    principal: Principal,
    links: Links,
    model_name: str,
    checkpoint_id: int,
    gate_id: int | None,
    force: bool,
    reason: str | None,
    canary_id: int | None = None,
) -> ModelState:
    """Makes a checkpoint the champion. A model that already has a champion needs a passing
    gate for the newcomer, or a canary of it that decided 'promote' (the canary records when
    it was promoted on), or `force` with a written reason (all audited). The model is locked
    first: two champion changes at once (a promotion and another, or a rollback) would both
    read one champion and both replace it."""
    model = get_model(session, principal.project_id, model_name, lock=True)
    checkpoint = get_checkpoint(session, principal.project_id, checkpoint_id)
    if checkpoint.model_id != model.id:
        raise Unprocessable(f"checkpoint {checkpoint_id} does not belong to model '{model_name}'")
    current = champion_of(session, model.project_id, model.id)
    if current is not None and current.id == checkpoint.id:
        raise Conflict(f"checkpoint {checkpoint_id} is already the champion")
    reason = (reason or "").strip() or None
    overrode: dict[str, Any] = {}
    # `force` with a written reason promotes past a refused gate or canary as it does without
    # one (their 409s say so); either is then no basis of the promotion, only what it overrode.
    try:
        gate = _check_gate(session, checkpoint, current, gate_id)
    except Conflict as refused:
        if not (force and reason is not None):
            raise
        gate, overrode["refused_gate"] = None, {"gate_id": gate_id, "detail": refused.detail}
    try:
        canary = _check_canary(session, checkpoint, current, canary_id)
    except Conflict as refused:
        if not (force and reason is not None):
            raise
        canary, overrode["refused_canary"] = (
            None,
            {"canary_id": canary_id, "detail": refused.detail},
        )
    if canary is not None:
        reason = reason or f"canary {canary.id} decided promote"
        _spend_canary(session, canary)
    elif gate is None:
        if current is not None and not force:
            raise Conflict(
                "promotion needs a passing gate (gate_id) or a canary that decided 'promote' "
                "(canary_id) for this checkpoint, or force=true with a written reason"
            )
        if reason is None:
            raise Unprocessable("reason: a written reason is required without a gate")
    forced = force and gate is None and canary is None
    if forced:
        overrode["standing_blocks"] = [
            {"gate_id": block.gate_id, "dataset": block.dataset}
            for block in standing_blocks(session, model.project_id, checkpoint.id)
        ]
    _change_champion(
        session,
        principal,
        links,
        model,
        checkpoint,
        current,
        ChampionAction.promote,
        reason=reason,
        forced=forced,
        gate_id=gate.id if gate else None,
        canary_id=canary.id if canary else None,
        overrode=overrode,
    )
    session.commit()
    return model_state(session, principal.project_id, model_name)


def rollback(
    session: Session,
    principal: Principal,
    links: Links,
    model_name: str,
    to: int | str | None,
    reason: str,
    alert_id: int | None = None,
    reviewed: tuple[int, int] | None = None,
) -> ModelState:
    """Makes the rollback target (or `to`, an earlier champion) the champion again. The
    model is locked first, as for a promotion. `reviewed`: the (champion, target) a person
    confirmed on the confirmation page, 409 unless the rollback is that one now: replacing a
    champion nobody reviewed, or going to another target, is not what was confirmed. The
    page sends them beside no `to`, so an alert's checks (its checkpoint still the champion,
    the alert unresolved) hold for it as for the API (review R3: posted as `to`, the
    confirmation of a rollback for an alert resolved meanwhile replaced the champion)."""
    model = get_model(session, principal.project_id, model_name, lock=True)
    history = _history(session, model)
    if not history:
        raise Conflict(f"model '{model_name}' has no champion to roll back")
    current = session.get_one(Checkpoint, history[-1].checkpoint_id)
    if reviewed is not None and reviewed[0] != current.id:
        raise Conflict(
            f"the champion changed since the rollback was reviewed: checkpoint {current.id} "
            f"({current.version}) serves now, not checkpoint {reviewed[0]}; review the "
            "rollback again"
        )
    alert = _check_alert(session, principal.project_id, alert_id, model) if alert_id else None
    if to is None:
        if alert is not None and alert.checkpoint_id != history[-1].checkpoint_id:
            # The alert's checkpoint was replaced since (a fix promoted): its target is where
            # to go back to from that checkpoint, not from the one serving now.
            raise Conflict(
                f"alert {alert_id} is about checkpoint {alert.checkpoint_id}, which is not "
                f"the champion (checkpoint {history[-1].checkpoint_id} is): name the "
                "checkpoint to roll back to with `to` if a rollback is still wanted"
            )
        if alert is not None and alert.status is AlertStatus.resolved:
            raise Conflict(
                f"alert {alert_id} is resolved ({alert.resolution}): there is nothing to roll "
                "back for it; name the checkpoint to roll back to with `to` if a rollback is "
                "still wanted"
            )
        target = _rollback_target(session, history, alert)
        if target is None:
            named = alert.rollback_target_id if alert is not None else None
            raise Conflict(
                f"checkpoint {named} (alert {alert_id}'s known-good target) is already the champion"
                if named is not None
                else f"model '{model_name}' has no earlier known-good checkpoint (every "
                "earlier champion was rolled back or replaced while an alert about it stood "
                "open); name the checkpoint to roll back to with `to` if a rollback is still "
                "wanted"
            )
    else:
        target = find_checkpoint(session, model, to)
        if target is None:
            raise NotFound(f"to: no checkpoint '{to}' in model '{model_name}'")
        if all(entry.checkpoint_id != target.id for entry in history):
            # Making it the champion is a promotion: a rollback would skip the gate and record
            # no `forced`, nor the blocks standing on it.
            raise Conflict(
                f"to: checkpoint {target.id} ({target.version}) was never the champion of "
                f"model '{model_name}'; a rollback goes back to an earlier champion: promote "
                "it instead (a passing gate, a canary that decided 'promote', or force with a "
                "written reason)",
                field="to",
            )
    if target.id == current.id:
        raise Conflict(f"checkpoint {target.id} is already the champion")
    if reviewed is not None and reviewed[1] != target.id:
        raise Conflict(
            f"the rollback target changed since it was reviewed: checkpoint {target.id} "
            f"({target.version}), not checkpoint {reviewed[1]}; review the rollback again"
        )
    _change_champion(
        session,
        principal,
        links,
        model,
        target,
        current,
        ChampionAction.rollback,
        reason=reason,
        alert_id=alert_id,
    )
    session.commit()
    return model_state(session, principal.project_id, model_name)


def _check_alert(session: Session, project_id: int, alert_id: int, model: Model) -> Alert:
    """A rollback made for an alert names it in the history (the alert's page and API show
    the rollbacks made for it from there); the alert must be about this model."""
    alert = get_owned(session, Alert, project_id, alert_id, "alert", "alert_id")
    if alert.model_id != model.id:
        raise Unprocessable(f"alert_id: alert {alert_id} is not about model '{model.name}'")
    return alert


def _change_champion(
    session: Session,
    principal: Principal,
    links: Links,
    model: Model,
    new: Checkpoint,
    old: Checkpoint | None,
    action: ChampionAction,
    *,
    reason: str | None,
    forced: bool = False,
    gate_id: int | None = None,
    alert_id: int | None = None,
    canary_id: int | None = None,
    overrode: Mapping[str, Any] | None = None,
) -> None:
    """`overrode`: what a forced promotion went past (a refused gate or canary, the blocks
    standing), kept in the audit entry."""
    if old is not None:
        old.status = (
            CheckpointStatus.rolled_back
            if action is ChampionAction.rollback
            else CheckpointStatus.retired
        )
    new.status = CheckpointStatus.champion
    open_alert_ids = (
        list(
            session.scalars(
                select(Alert.id)
                .where(
                    Alert.project_id == principal.project_id,
                    Alert.model_id == model.id,
                    Alert.checkpoint_id == old.id,
                    Alert.status != AlertStatus.resolved,
                )
                .order_by(Alert.id)
            )
        )
        if old is not None
        else []
    )
    entry = ChampionHistory(
        project_id=principal.project_id,
        model_id=model.id,
        checkpoint_id=new.id,
        previous_checkpoint_id=old.id if old else None,
        action=action,
        reason=reason,
        forced=forced,
        gate_id=gate_id,
        alert_id=alert_id,
        actor=principal.actor,
        api_key_id=principal.key_id,
        previous_open_alert_ids=open_alert_ids,
    )
    session.add(entry)
    session.flush()
    details: dict[str, Any] = {
        "model": model.name,
        "checkpoint_id": new.id,
        "version": new.version,
        "previous_checkpoint_id": old.id if old else None,
        "gate_id": gate_id,
        "forced": forced,
        "alert_id": alert_id,
        "canary_id": canary_id,
        "previous_open_alert_ids": open_alert_ids,
    }
    audit.record(
        session,
        principal,
        f"champion.{action.value}",
        "model",
        model.id,
        {**details, **(overrode or {})},
        reason,
    )
    outbox.emit(
        session,
        principal.project_id,
        "champion.changed",
        f"champion.changed.{entry.id}",
        f"model:{model.id}",
        {
            **details,
            "action": action.value,
            "previous_version": old.version if old else None,
            "reason": reason,
            "url": links.page("models", model.name),
        },
    )
