"""The deploy gate: a candidate checkpoint against a baseline checkpoint, per evaluator x
cohort, each side pooled over its runs on its dataset version.

Fetch (pairs.py), decide (decision.py, statistics in app.stats), store: this module is the
orchestration, the retry rule's bookkeeping (a gate's attempt number on its checkpoint and
dataset version, and whether it was blocked there before) and the gate's effects (checkpoint
status, audit, the gate.blocked event).

A gate whose request overrides the model's stored policy is exploratory: it never promotes
(registry.service._check_gate), so it cannot shop for a promotable verdict, and it spends
none of the retry budget. It is decided at the budget the next real gate would get, to show
what that gate would say."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core import audit
from app.core.auth import Principal
from app.core.db import get_owned
from app.core.errors import Conflict, Unprocessable
from app.core.links import Links
from app.core.pagination import paginate
from app.gates.decision import Decision, decide, floor_of
from app.gates.pairs import PairedResults, load_pairs
from app.gates.policies import effective_policy
from app.gates.schemas import GateIn, GatePolicySpec
from app.models import (
    Checkpoint,
    DatasetVersion,
    EvaluationRun,
    Gate,
    Model,
)
from app.models.gates import GateVerdict
from app.models.registry import CheckpointStatus
from app.models.runs import RunStatus
from app.registry import service as registry
from app.registry.queries import latest_policy, runs_not_pooled, standing_blocks
from app.webhooks import outbox


def _get_run(session: Session, project_id: int, run_id: int, field_name: str) -> EvaluationRun:
    run = get_owned(session, EvaluationRun, project_id, run_id, "evaluation run", field_name)
    if run.status is not RunStatus.succeeded:
        raise Conflict(
            f"{field_name}: run {run_id} is '{run.status.value}'; only succeeded runs can be "
            "gated (wait for it to finish)",
            field=field_name,
        )
    return run


def _champion_run(
    session: Session, model: Model, candidate: EvaluationRun, version: DatasetVersion
) -> EvaluationRun:
    champion = registry.champion_of(session, model.project_id, model.id)
    if champion is None:
        raise Conflict(
            f"model '{model.name}' has no champion to compare with: promote a first champion "
            "or pass baseline_run_id",
            field="baseline_run_id",
        )
    if champion.id == candidate.checkpoint_id:
        raise Conflict(
            f"checkpoint {champion.id} is already the champion: pass baseline_run_id",
            field="baseline_run_id",
        )
    run = session.scalar(
        select(EvaluationRun)
        .where(
            EvaluationRun.project_id == model.project_id,
            EvaluationRun.checkpoint_id == champion.id,
            EvaluationRun.dataset_version_id == candidate.dataset_version_id,
            EvaluationRun.status == RunStatus.succeeded,
        )
        .order_by(EvaluationRun.id.desc())
        .limit(1)
    )
    if run is None:
        raise Conflict(
            f"the champion of '{model.name}' (checkpoint {champion.id}, version "
            f"'{champion.version}') has no succeeded run on dataset version {version.version}: "
            "evaluate the champion on it, or pass baseline_run_id",
            field="baseline_run_id",
        )
    return run


@dataclass(frozen=True)
class RunComparison:
    """Everything a gate would decide about two runs, before anything is stored."""

    model: Model
    checkpoint: Checkpoint
    candidate: EvaluationRun
    baseline: EvaluationRun
    spec: GatePolicySpec
    policy_version: int | None
    paired: PairedResults
    decision: Decision
    notes: list[str]
    policy_overrides: list[str]
    """Policy fields whose value the request changed from the model's stored policy (or the
    default): a gate with any never promotes (registry.service._check_gate)."""
    in_progress: Sequence[EvaluationRun]
    """The candidate checkpoint's runs on the version still queued or running: not pooled,
    so a real gate waits for them (create_gate)."""

    @property
    def shared_rows(self) -> int:
        return len(self.paired.keys)

    @property
    def exploratory(self) -> bool:
        """Decided under a request override: spends no attempt, and never promotes."""
        return bool(self.policy_overrides)


def earlier_gates(
    session: Session, project_id: int, checkpoint_id: int, version_id: int
) -> tuple[int, bool]:
    """(attempt of the next real gate, whether an earlier real gate blocked) for a checkpoint on
    a dataset version, whatever the earlier gates' verdicts or baselines.

    Only real gates (no request override) spent attempts; the next is numbered after the
    highest of them, so no budget is spent twice even where a gate stored before exploratory
    gates were told apart left a number to one. Only a real gate's block sticks (an
    inconclusive re-gate after it is a block): an exploratory block was decided under a
    policy the user chose to explore, which says nothing about the candidate under the
    stored policy (docs/statistics.md §7.3). Until 2026-12-01 a what-if margin that blocked
    turned the next real gate's inconclusive into a block."""
    earlier = session.execute(
        select(Gate.attempt, Gate.exploratory, Gate.verdict).where(
            Gate.project_id == project_id,
            Gate.checkpoint_id == checkpoint_id,
            Gate.dataset_version_id == version_id,
        )
    ).all()
    spent = max((gate.attempt for gate in earlier if not gate.exploratory), default=0)
    blocked = any(gate.verdict is GateVerdict.block and not gate.exploratory for gate in earlier)
    return spent + 1, blocked


def compare_runs(
    session: Session,
    project_id: int,
    candidate_run_id: int,
    baseline_run_id: int | None,
    policy: GatePolicySpec | None = None,
) -> RunComparison:
    """Compares and decides under the candidate model's policy, storing nothing: the gate
    stores this, and the dashboard's "compare any two runs" only shows it, decided as the next
    gate would be (pooled runs, its attempt, an earlier block standing). Ends the session's
    read transaction (the statistics run without holding SQLite's lock)."""
    candidate = _get_run(session, project_id, candidate_run_id, "candidate_run_id")
    checkpoint = registry.get_checkpoint(session, project_id, candidate.checkpoint_id)
    model = session.get_one(Model, checkpoint.model_id)
    cand_version = session.get_one(DatasetVersion, candidate.dataset_version_id)
    if baseline_run_id is None:
        baseline = _champion_run(session, model, candidate, cand_version)
    else:
        baseline = _get_run(session, project_id, baseline_run_id, "baseline_run_id")
    if baseline.id == candidate.id:
        raise Unprocessable(
            "baseline_run_id: a run cannot be its own baseline", field="baseline_run_id"
        )
    if baseline.checkpoint_id == candidate.checkpoint_id:
        raise Unprocessable(
            f"baseline_run_id: run {baseline.id} is of the candidate's own checkpoint; a gate "
            "compares two checkpoints (each side pools all its runs on its dataset version)",
            field="baseline_run_id",
        )
    base_version = session.get_one(DatasetVersion, baseline.dataset_version_id)
    if base_version.dataset_id != cand_version.dataset_id:
        raise Unprocessable(
            f"baseline_run_id: run {baseline.id} evaluated another dataset; "
            "a gate compares runs on the same dataset",
            field="baseline_run_id",
        )
    stored = latest_policy(session, model.project_id, model.id)
    spec = effective_policy(stored, policy)
    as_is = effective_policy(stored, None).as_stored()
    changed = spec.as_stored()
    overrides = sorted(k for k in changed.keys() | as_is.keys() if changed.get(k) != as_is.get(k))
    attempt, previously_blocked = earlier_gates(session, project_id, checkpoint.id, cand_version.id)
    paired = load_pairs(
        session, candidate, baseline, spec.metric, lambda name: floor_of(spec, name) is not None
    )
    # Each side pools all its runs on its version: a run of either still in progress is
    # evidence the gate would not see (review R1: the baseline's were not waited for).
    in_progress = [
        *runs_not_pooled(
            session, project_id, checkpoint.id, cand_version.id, paired.candidate_run_ids
        ),
        *runs_not_pooled(
            session, project_id, baseline.checkpoint_id, base_version.id, paired.baseline_run_ids
        ),
    ]
    session.commit()  # ends the read transaction: the statistics run without holding a lock

    decision = decide(
        paired,
        spec,
        cand_version.cohort_risk,
        attempt=attempt,
        previously_blocked=previously_blocked,
    )
    notes = list(decision.notes)
    if base_version.id != cand_version.id:
        notes.insert(
            0,
            f"dataset versions differ (candidate v{cand_version.version}, baseline "
            f"v{base_version.version}): rows, risk and cohorts are v{cand_version.version}'s; "
            f"the keys both runs scored are compared, and a pass must also hold with the "
            f"baseline passing the rows v{base_version.version} lacks or asks differently",
        )
    if policy is not None:
        notes.append(
            "policy overridden in the request: " + ", ".join(sorted(policy.model_fields_set))
        )
    if overrides:
        notes.append(
            f"exploratory: the request changes the stored policy ({', '.join(overrides)}), so "
            f"this gate never promotes; decided at the budget of the next real gate (attempt "
            f"{attempt}), it spends none of it"
        )
    if in_progress:
        listed = ", ".join(
            f"run {run.id} ('{run.status.value}', checkpoint {run.checkpoint_id})"
            for run in in_progress
        )
        notes.append(
            f"not pooled, still in progress: {listed} on the compared dataset versions; a real "
            "gate waits for them"
        )
    return RunComparison(
        model,
        checkpoint,
        candidate,
        baseline,
        spec,
        stored.version if stored else None,
        paired,
        decision,
        notes,
        overrides,
        in_progress,
    )


def create_gate(session: Session, principal: Principal, links: Links, body: GateIn) -> Gate:
    """Compares, decides, and stores the decision with its attempt number, budget and pooled
    runs; a block queues a `gate.blocked` event. A real gate waits (409) while a run of the
    candidate on the version is queued or running: it would spend an attempt on part of the
    evidence and could not promote (registry.service._check_gate). Two real gates of one
    checkpoint on one version decided at once would share an attempt number: the unique key
    over real gates refuses the second (409). Exploratory gates share the next real gate's
    number freely."""
    compared = compare_runs(
        session, principal.project_id, body.candidate_run_id, body.baseline_run_id, body.policy
    )
    if compared.in_progress and not compared.exploratory:
        waiting = compared.in_progress[0]
        side = "candidate" if waiting.checkpoint_id == compared.checkpoint.id else "baseline"
        raise Conflict(
            f"run {waiting.id} of the {side}'s checkpoint {waiting.checkpoint_id} on the compared "
            f"dataset version is '{waiting.status.value}': a gate pools every run of both "
            f"checkpoints there, so wait for it (GET /api/v1/runs/{waiting.id}) and gate again "
            f"(decided now, this gate would spend attempt {compared.decision.attempt} on part of "
            "the evidence)",
            field=f"{side}_run_id",
        )
    decision = compared.decision
    gate = Gate(
        project_id=principal.project_id,
        model_id=compared.model.id,
        checkpoint_id=compared.checkpoint.id,
        candidate_run_id=compared.candidate.id,
        baseline_run_id=compared.baseline.id,
        dataset_version_id=compared.candidate.dataset_version_id,
        attempt=decision.attempt,
        previously_blocked=decision.previously_blocked,
        exploratory=compared.exploratory,
        alpha=decision.alpha,
        candidate_run_ids=compared.paired.candidate_run_ids,
        baseline_run_ids=compared.paired.baseline_run_ids,
        policy=compared.spec.as_stored(),
        policy_version=compared.policy_version,
        verdict=decision.verdict,
        reasons=decision.reasons,
        comparisons=decision.comparisons,
        notes={
            "messages": compared.notes,
            "shared_rows": compared.shared_rows,
            "guarded_comparisons": decision.guarded_comparisons,
            "policy_overrides": compared.policy_overrides,
        },
        api_key_id=principal.key_id,
    )
    session.add(gate)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(
            f"another gate of checkpoint {compared.checkpoint.id} on this dataset version was "
            "decided at the same time; retry (it will count as the next attempt)",
            field="candidate_run_id",
        ) from None
    _record_outcome(session, principal, links, gate, compared.model, compared.checkpoint)
    session.commit()
    return gate


def _record_outcome(
    session: Session,
    principal: Principal,
    links: Links,
    gate: Gate,
    model: Model,
    checkpoint: Checkpoint,
) -> None:
    """Audit, the checkpoint's status, and on a real gate's block the `gate.blocked` event."""
    current = session.get_one(Checkpoint, checkpoint.id)
    # An exploratory block answers a policy the user explored, not the stored one: it is
    # recorded and answered, but holds nothing back and sends nothing (a pipeline reading
    # `gate.blocked` as "stop this checkpoint" would act on it) (docs/statistics.md §7.3).
    if (
        gate.verdict is GateVerdict.block
        and not gate.exploratory
        and current.status
        in (
            CheckpointStatus.registered,
            CheckpointStatus.evaluated,
        )
    ):
        current.status = CheckpointStatus.blocked
    elif (
        gate.verdict is GateVerdict.passed
        and current.status is CheckpointStatus.blocked
        and not standing_blocks(session, principal.project_id, checkpoint.id)
    ):
        # A block stands until a later pass on its own dataset: a pass here lifts the status
        # only when no dataset's newest decisive gate still blocks the checkpoint.
        current.status = CheckpointStatus.evaluated
    details = {
        "gate_id": gate.id,
        "model": model.name,
        "checkpoint_id": checkpoint.id,
        "version": checkpoint.version,
        "candidate_run_id": gate.candidate_run_id,
        "baseline_run_id": gate.baseline_run_id,
        "verdict": gate.verdict.value,
        "policy_version": gate.policy_version,
        "dataset_version_id": gate.dataset_version_id,
        "attempt": gate.attempt,
        "exploratory": gate.exploratory,
        "alpha": gate.alpha,
        "candidate_run_ids": gate.candidate_run_ids,
        "baseline_run_ids": gate.baseline_run_ids,
    }
    audit.record(session, principal, "gate.decided", "gate", gate.id, details)
    if gate.verdict is GateVerdict.block and not gate.exploratory:
        url = links.page("gates", gate.id)
        blocking = [r for r in gate.reasons if r["severity"] == "block"]
        outbox.emit(
            session,
            principal.project_id,
            "gate.blocked",
            f"gate.{gate.id}.blocked",
            f"gate:{gate.id}",
            {**details, "reasons": blocking, "url": url},
        )


def get_gate(session: Session, project_id: int, gate_id: int) -> Gate:
    return get_owned(session, Gate, project_id, gate_id, "gate")


def list_gates(
    session: Session, project_id: int, checkpoint_id: int | None, cursor: str | None, limit: int
) -> tuple[Sequence[Gate], str | None]:
    stmt = select(Gate).where(Gate.project_id == project_id)
    if checkpoint_id is not None:
        stmt = stmt.where(Gate.checkpoint_id == checkpoint_id)
    return paginate(session, stmt, Gate.id, cursor, limit)
