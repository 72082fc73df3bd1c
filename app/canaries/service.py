"""Canaries: start one, evaluate it (on demand, on every read, and every few minutes in the
background), stop it, roll it back. Promotion on a canary's word is the registry's
(`registry.service.promote` with `canary_id`): the registry checks the canary through the
models, so it never imports this package.

Invariants:
- one running canary per model (a partial unique index; a race answers 409);
- a canary leaves 'running' once, by a conditional UPDATE from 'running': when several
  processes (the background loop, an API call, a page view) evaluate it at once, exactly one
  records the decision, and only that one audits it and queues its `canary.decided` webhook,
  in the same transaction; the others' evidence is dropped, so decided evidence is frozen;
- each evaluation reads the counts in one short transaction and writes in another, so the
  statistics never run while holding SQLite's write lock.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from app.canaries import queries
from app.canaries.evidence import (
    Assessment,
    Bounds,
    all_bounds,
    assess,
    first_crossing,
    mix_differs,
)
from app.canaries.plan import Plan
from app.canaries.schemas import CanaryIn, CanaryOut, EvidenceOut
from app.core import audit
from app.core.auth import Principal
from app.core.db import get_owned, utcnow
from app.core.errors import Conflict, Unprocessable
from app.core.links import Links
from app.core.pagination import paginate
from app.core.settings import Settings
from app.models import Canary, Checkpoint, Model
from app.models.canaries import CanaryDecision, CanaryStatus
from app.models.project import Role
from app.models.registry import CheckpointStatus
from app.registry import service as registry
from app.webhooks import outbox

log = logging.getLogger("plumbline.canaries")

SYSTEM_ACTOR = "plumbline canary"
"""Who decides: the sequential test, whichever process or reader triggered the evaluation."""
START_TOLERANCE = timedelta(minutes=5)  # clock skew between the caller and this server
HISTORY_POINTS = 96  # points per line on the canary page: every 15 minutes of a day's canary


def create_canary(
    session: Session, principal: Principal, model_name: str, body: CanaryIn, retention_days: int
) -> Canary:
    """Starts comparing `body.checkpoint_id` with the model's current champion.

    Its whole window fits in the event retention (`retention_days`,
    PLUMBLINE_RETENTION_DAYS): retention deletes events older than that, and a canary
    running longer would lose its first days mid-run and decide on the rest."""
    if body.max_days > retention_days:
        raise Unprocessable(
            f"max_days: {body.max_days} days is longer than the event retention "
            f"({retention_days} days, PLUMBLINE_RETENTION_DAYS): the canary's first events "
            f"would be deleted before it decides; give max_days of at most {retention_days}",
            field="max_days",
        )
    model = registry.get_model(session, principal.project_id, model_name)
    candidate = get_owned(
        session, Checkpoint, principal.project_id, body.checkpoint_id, "checkpoint", "checkpoint_id"
    )
    if candidate.model_id != model.id:
        raise Unprocessable(
            f"checkpoint_id: checkpoint {candidate.id} does not belong to model '{model.name}'",
            field="checkpoint_id",
        )
    champion = registry.champion_of(session, model.project_id, model.id)
    if champion is None:
        raise Conflict(
            f"model '{model.name}' has no champion to compare with: promote a first champion",
            field="checkpoint_id",
        )
    if champion.id == candidate.id:
        raise Conflict(
            f"checkpoint_id: checkpoint {candidate.id} is the champion; a canary compares a "
            "candidate with it",
            field="checkpoint_id",
        )
    now = utcnow()
    start = body.start or now
    if start > now + START_TOLERANCE:
        raise Unprocessable("start: in the future", field="start")
    if start <= now - timedelta(days=body.max_days):
        raise Unprocessable(
            f"start: more than max_days ({body.max_days}) ago; the canary would end at once",
            field="start",
        )
    took_over = registry.champion_change_since(session, model.project_id, model.id, start)
    if took_over is not None:
        raise Unprocessable(
            f"start: before the champion was replaced at {took_over.created_at.isoformat()} "
            f"(history entry {took_over.id}); the comparison would count hours of another "
            "champion: start at or after that time",
            field="start",
        )
    _no_running_canary(session, model)
    canary = Canary(
        project_id=principal.project_id,
        model_id=model.id,
        checkpoint_id=candidate.id,
        champion_id=champion.id,
        status=CanaryStatus.running,
        signals=list(body.signals),
        cohorts=[c.model_dump() for c in body.cohorts],
        scope=body.scope.model_dump() if body.scope else None,
        comparisons=list(body.comparisons),
        margin=body.margin,
        margins=dict(body.margins),
        alpha=body.alpha,
        max_days=body.max_days,
        min_hours=body.min_hours,
        started_at=start,
        next_evaluation_at=now,
        actor=principal.actor,
        api_key_id=principal.key_id,
    )
    session.add(canary)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()  # another request started one first (the partial unique index)
        _no_running_canary(session, model)
        raise
    audit.record(
        session,
        principal,
        "canary.started",
        "canary",
        canary.id,
        {
            "model": model.name,
            "checkpoint_id": candidate.id,
            "version": candidate.version,
            "champion_id": champion.id,
            "signals": canary.signals,
            "cohorts": canary.cohorts,
            "scope": canary.scope,
            "comparisons": canary.comparisons,
            "margin": canary.margin,
            "margins": canary.margins,
            "alpha": canary.alpha,
        },
    )
    session.commit()
    return canary


def _no_running_canary(session: Session, model: Model) -> None:
    running = session.scalar(
        select(Canary.id).where(
            Canary.project_id == model.project_id,
            Canary.model_id == model.id,
            Canary.status == CanaryStatus.running,
        )
    )
    if running is not None:
        raise Conflict(
            f"model '{model.name}' already has a running canary ({running}); stop it first",
            canary_id=running,
        )


def get_canary(session: Session, project_id: int, canary_id: int) -> Canary:
    return get_owned(session, Canary, project_id, canary_id, "canary")


def list_canaries(
    session: Session, project_id: int, model_name: str, cursor: str | None, limit: int
) -> tuple[Sequence[Canary], str | None]:
    model = registry.get_model(session, project_id, model_name)
    stmt = select(Canary).where(Canary.project_id == project_id, Canary.model_id == model.id)
    return paginate(session, stmt, Canary.id, cursor, limit)


def canary_out(session: Session, canary: Canary, links: Links) -> CanaryOut:
    """The canary as the API, the pages and the webhook payload show it, with what the
    registry would answer to promoting on it now (`promotion_refused`, read live: a block
    lifted or a policy changed since the decision changes it, and the decided evidence
    keeps the answer of its moment)."""
    out = CanaryOut.model_validate(canary, context={"links": links})
    promotable = canary.status is CanaryStatus.promote and canary.promoted_at is None
    if promotable and canary.rolled_back_at is None:
        out.promotion_refused = registry.canary_promotion_refusal(session, canary)
    return out


# --- Evaluation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BaselineGone:
    """Why the canary's baseline no longer holds, and since when (None: no change recorded,
    say the champion was removed): the comparison is sound up to then, not after.
    `candidate_serves`: the champion now is the canary's own candidate (promoted on a gate,
    or by force past the canary)."""

    reason: str
    since: datetime | None
    candidate_serves: bool = False


def _baseline_gone(session: Session, canary: Canary) -> BaselineGone | None:
    """Why the canary's baseline no longer holds, if it does not: the champion is another
    checkpoint now, or it changed and changed back since the start (the two arms then did
    not see the same champion throughout, and the bounds assume they did)."""
    champion = registry.champion_of(session, canary.project_id, canary.model_id)
    changed = registry.champion_change_since(
        session, canary.project_id, canary.model_id, canary.started_at
    )
    since = changed.created_at if changed is not None else None
    if champion is None or champion.id != canary.champion_id:
        now_champion = f"checkpoint {champion.id}" if champion else "none"
        candidate_serves = champion is not None and champion.id == canary.checkpoint_id
        return BaselineGone(
            f"the champion changed (now {now_champion}"
            + (", the canary's candidate" if candidate_serves else "")
            + "); the comparison's baseline is gone",
            since,
            candidate_serves,
        )
    if changed is None:
        return None
    return BaselineGone(
        f"the champion changed during the canary and back (history entry {changed.id}, "
        f"{changed.action.value} of checkpoint {changed.checkpoint_id}); the two arms did not "
        "see the same champion throughout",
        since,
    )


def _assess_up_to(
    session: Session, canary: Canary, plan: Plan, now: datetime, until: datetime
) -> tuple[Assessment, dict[str, Any]]:
    """The assessment of the window from `started_at` to `until` (at most the deadline), and
    its evidence as stored. Ends the read transaction before the statistics run."""
    deadline = canary.started_at + timedelta(days=canary.max_days)
    end = max(min(until, deadline), canary.started_at)
    hours = (end - canary.started_at).total_seconds() / 3600.0
    bucket_hours = _bucket_hours(hours)
    counts = queries.load_counts(session, canary, plan, end, bucket_hours)
    first_seen = queries.candidate_first_seen(session, canary, plan, end)
    # A canary routed to a segment (beyond its scope, if it has one) shows as arms serving
    # different mixes (docs/statistics.md §12.9). Shadow pairs are two answers to one
    # request: never confounded.
    mix_counts = queries.load_mix(session, canary, plan, end) if plan.served else {}
    outside_scope = queries.candidate_outside_scope(session, canary, plan, end)
    begun_before = queries.begun_before(session, canary, plan, end) if plan.served else None
    session.commit()  # ends the read transaction: the statistics run without holding a lock
    # min_hours are hours of the candidate's traffic: a canary started long before its
    # candidate took a call has seen none of the day it waits for.
    traffic_hours = (end - first_seen).total_seconds() / 3600.0 if first_seen else 0.0
    cumulative = counts.cumulative()
    totals = cumulative.last()
    mix = mix_differs(mix_counts)
    assessment = assess(plan, totals, traffic_hours, canary.min_hours, mix)
    if assessment.decision is not CanaryDecision.rollback:
        # A confidence sequence holds at every moment at once: a rollback threshold crossed
        # earlier in the window, where no evaluation looked (late calls; or later calls
        # brought the bound back), is as valid as one crossed now (docs/statistics.md 12.2).
        differs = frozenset(m.dimension for m in mix)
        crossing = first_crossing(plan, cumulative, differs)
        if crossing is not None:
            at = _bucket_ends(canary.started_at, end, bucket_hours, crossing.bucket + 1)[-1]
            when = f"crossed at {at.isoformat(timespec='seconds')}, between evaluations"
            reasons = [f"{reason}; {when}" for reason in crossing.reasons]
            assessment = Assessment(
                assessment.comparisons, CanaryDecision.rollback, reasons, assessment.mix_differs
            )
    left_out = int(totals.left_out.sum()) if plan.paired_signals else None
    evidence = assessment.evidence(
        plan, now, canary.started_at, end, traffic_hours, left_out, outside_scope, begun_before
    )
    return assessment, evidence.model_dump(mode="json")


def _first_reason(assessment: Assessment) -> str:
    more = len(assessment.reasons) - 1
    return assessment.reasons[0] + (f" (and {more} more)" if more else "")


def evaluate(
    session: Session, links: Links, canary: Canary, trigger: str, now: datetime | None = None
) -> Canary:
    """Computes the evidence on everything since `started_at` and applies the decision.

    Looking at any time is safe: every bound is a confidence sequence. A canary that is not
    running is returned unchanged (its evidence is the one it was decided on).

    When the champion changed, the comparison held until the change and no later: the
    window ends there, a rollback that window shows is still decided (the candidate was
    worse than the baseline while the baseline served, whoever looked first), and otherwise
    the canary stops with that window's evidence. A promotion is not: it would replace a
    champion that no longer serves. Nor is a rollback once the candidate itself is the
    champion (promoted on a gate, or by force past the canary): the canary cannot take it
    off traffic (its rollback answers 409), and a `rollback` decision with its link, its
    button and its webhook would ask for what only a rollback of the model does; it stops,
    its reason saying what the window before the promotion showed."""
    if canary.status is not CanaryStatus.running:
        return canary
    now = now or utcnow()
    plan = Plan.of(canary)
    baseline_gone = _baseline_gone(session, canary)
    if baseline_gone is not None:
        until = min(baseline_gone.since or now, now)
        assessment, evidence = _assess_up_to(session, canary, plan, now, until)
        harmful = assessment.decision is CanaryDecision.rollback
        if harmful and not baseline_gone.candidate_serves:
            at = until.isoformat(timespec="seconds")
            reason = (
                f"{_first_reason(assessment)}; on the traffic before the champion changed at {at}"
            )
            _end(
                session,
                links,
                canary,
                CanaryStatus.rollback,
                CanaryDecision.rollback,
                reason,
                trigger,
                evidence,
                CanaryDecision.rollback.value,
            )
            return canary
        reason = baseline_gone.reason
        if harmful:
            reason += (
                f"; before it, {_first_reason(assessment)}: roll the model back if that still holds"
            )
        _end(
            session,
            links,
            canary,
            CanaryStatus.stopped,
            None,
            reason,
            trigger,
            evidence,
            "champion_changed",
        )
        return canary
    deadline = canary.started_at + timedelta(days=canary.max_days)
    assessment, evidence = _assess_up_to(session, canary, plan, now, now)
    if assessment.decision is not None:
        reason = _first_reason(assessment)
        if assessment.decision is CanaryDecision.promote:
            reason = _promotion_refused(session, canary, evidence, reason)
        _end(
            session,
            links,
            canary,
            CanaryStatus(assessment.decision.value),
            assessment.decision,
            reason,
            trigger,
            evidence,
            assessment.decision.value,
        )
    elif now >= deadline:
        reason = f"inconclusive: no decision within max_days ({canary.max_days})"
        _end(
            session,
            links,
            canary,
            CanaryStatus.stopped,
            None,
            reason,
            trigger,
            evidence,
            "inconclusive",
        )
    else:
        session.execute(
            update(Canary)
            .where(
                Canary.project_id == canary.project_id,
                Canary.id == canary.id,
                Canary.status == CanaryStatus.running,
            )
            .values(evidence=evidence, evaluated_at=now)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        session.refresh(canary)
    return canary


def _promotion_refused(
    session: Session, canary: Canary, evidence: dict[str, Any], reason: str
) -> str:
    """The reason of a 'promote' decision, and its `evidence`, naming what makes the registry
    refuse the promotion at the decision (a standing gate block, a policy not accepting
    canaries, ...), if anything: the webhook would otherwise announce a promotion that
    answers 409. The decision stands: it is about the traffic, and the registry keeps its own
    checks. Both are frozen with the decision, so they say "when decided"; what the registry
    answers now is the canary's live `promotion_refused` (`canary_out`)."""
    refused = registry.canary_promotion_refusal(session, canary)
    if refused is None:
        return reason
    evidence["promotion_refused"] = refused
    return f"{reason}; when decided, the registry refused the promotion: {refused}"


def _end(
    session: Session,
    links: Links,
    canary: Canary,
    status: CanaryStatus,
    decision: CanaryDecision | None,
    reason: str,
    trigger: str,
    evidence: dict[str, Any] | None,
    outcome: str,
) -> None:
    """The sequential test's (or the deadline's, or a changed champion's) end of a running
    canary, with its effects: audited and announced as `canary.decided`
    (msg id canary.{id}.decided.{outcome}), unless another process ended it first."""
    now = utcnow()
    ended = session.execute(
        update(Canary)
        .where(
            Canary.project_id == canary.project_id,
            Canary.id == canary.id,
            Canary.status == CanaryStatus.running,
        )
        .values(
            status=status,
            decision=decision,
            evidence=evidence,
            evaluated_at=now,
            ended_at=now,
            ended_by=SYSTEM_ACTOR,
            reason=reason,
        )
        .execution_options(synchronize_session=False)
    )
    if ended.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        session.refresh(canary)
        return
    session.refresh(canary)
    if decision is CanaryDecision.rollback:
        candidate = session.get_one(Checkpoint, canary.checkpoint_id)
        if candidate.status in (CheckpointStatus.registered, CheckpointStatus.evaluated):
            candidate.status = CheckpointStatus.blocked  # as a blocking gate would
    system = Principal(canary.project_id, None, Role.admin, SYSTEM_ACTOR)
    details = _details(canary) | {"status": status.value, "trigger": trigger}
    audit.record(session, system, "canary.decided", "canary", canary.id, details, reason)
    _notify(session, links, canary, outcome)
    session.commit()
    log.info("canary %s: %s (%s)", canary.id, status.value, reason)


def _notify(session: Session, links: Links, canary: Canary, outcome: str) -> None:
    """`canary.decided`, with the evidence (and for a rollback, the confirmation link)."""
    data = canary_out(session, canary, links).model_dump(mode="json")
    outbox.emit(
        session,
        canary.project_id,
        "canary.decided",
        f"canary.{canary.id}.decided.{outcome}",
        f"canary:{canary.id}",
        data,
    )


def _details(canary: Canary) -> dict[str, Any]:
    return {
        "model_id": canary.model_id,
        "checkpoint_id": canary.checkpoint_id,
        "champion_id": canary.champion_id,
        "decision": canary.decision.value if canary.decision else None,
    }


def evaluate_due_canaries(sessions: sessionmaker[Session], settings: Settings) -> bool:
    """The background loop's batch: claims one running canary not evaluated for
    `canary_evaluate_every_s` and evaluates it. The claim is a conditional UPDATE of
    `next_evaluation_at`, so however many processes run the loop, each period's evaluation
    of a canary happens once; the decision's own conditional UPDATE covers the rest."""
    now = utcnow()
    with sessions() as session:
        # The one statement that looks across projects: the queue of due canaries.
        found = session.execute(
            select(Canary.project_id, Canary.id)
            .where(Canary.status == CanaryStatus.running, Canary.next_evaluation_at <= now)
            .order_by(Canary.next_evaluation_at)
            .limit(1)
        ).first()
        if found is None:
            session.rollback()
            return False
        project_id, due = found
        claimed = session.execute(
            update(Canary)
            .where(
                Canary.project_id == project_id,
                Canary.id == due,
                Canary.status == CanaryStatus.running,
                Canary.next_evaluation_at <= now,
            )
            .values(next_evaluation_at=now + timedelta(seconds=settings.canary_evaluate_every_s))
        )
        session.commit()
        if claimed.rowcount == 1:  # type: ignore[attr-defined]
            canary = get_canary(session, project_id, due)
            evaluate(session, Links.of(settings), canary, "schedule")
    return True


@dataclass(frozen=True)
class History:
    """Each comparison's bounds as they stood at the end of each time bucket: what an
    evaluation then would have shown (a confidence sequence holds at all of them at once)."""

    plan: Plan
    times: list[datetime]
    bounds: list[Bounds]


def history(session: Session, canary: Canary, now: datetime | None = None) -> History:
    """The canary's window, up to now or its end, in at most HISTORY_POINTS buckets."""
    plan = Plan.of(canary)
    deadline = canary.started_at + timedelta(days=canary.max_days)
    end = max(min(_history_end(canary, now), deadline), canary.started_at)
    hours = (end - canary.started_at).total_seconds() / 3600.0
    bucket_hours = _bucket_hours(hours)
    # A decided canary's chart is of what its decision saw, not of calls that arrived since.
    received_by = canary.ended_at if canary.ended_by == SYSTEM_ACTOR else None
    counts = queries.load_counts(session, canary, plan, end, bucket_hours, received_by)
    session.commit()  # ends the read transaction before the statistics
    times = _bucket_ends(canary.started_at, end, bucket_hours, counts.events.shape[1])
    return History(plan, times, all_bounds(plan, counts.cumulative()))


def _bucket_hours(hours: float) -> float:
    """The time buckets of a window of `hours`: the page's history and every evaluation judge
    the same ones (at most HISTORY_POINTS, at least a quarter hour each)."""
    return max(hours / HISTORY_POINTS, 0.25)


def _bucket_ends(
    start: datetime, end: datetime, bucket_hours: float, buckets: int
) -> list[datetime]:
    return [min(start + timedelta(hours=bucket_hours * (i + 1)), end) for i in range(buckets)]


def _history_end(canary: Canary, now: datetime | None) -> datetime:
    """Where the page's history stops: now while running; for a canary the test ended, the
    end of the window it was decided on (a changed champion ends the comparison at the
    change, before the canary noticed it); otherwise when it was ended."""
    if canary.ended_at is None:
        return now or utcnow()
    if canary.ended_by == SYSTEM_ACTOR and canary.evidence is not None:
        return EvidenceOut.model_validate(canary.evidence).window_end
    return canary.ended_at


# --- People's actions -----------------------------------------------------------------------


def stop(session: Session, principal: Principal, canary_id: int, reason: str) -> Canary:
    """Ends a running canary without a decision (the candidate's traffic is someone else's
    to turn off); audited."""
    canary = get_canary(session, principal.project_id, canary_id)
    now = utcnow()
    stopped = session.execute(
        update(Canary)
        .where(
            Canary.project_id == canary.project_id,
            Canary.id == canary.id,
            Canary.status == CanaryStatus.running,
        )
        .values(status=CanaryStatus.stopped, ended_at=now, ended_by=principal.actor, reason=reason)
        .execution_options(synchronize_session=False)
    )
    if stopped.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise Conflict(
            f"canary {canary.id} is '{canary.status.value}'; only a running canary can be stopped"
        )
    audit.record(
        session, principal, "canary.stopped", "canary", canary.id, _details(canary), reason
    )
    session.commit()
    session.refresh(canary)
    return canary


def roll_back(
    session: Session, principal: Principal, links: Links, canary_id: int, reason: str
) -> Canary:
    """Takes the candidate off live traffic: confirms a `rollback` decision, or overrides any
    other state with one (then `canary.decided` goes out, decided by this key). The candidate
    is marked rolled back. Not once it was promoted: roll the model back instead."""
    canary = get_canary(session, principal.project_id, canary_id)
    if canary.rolled_back_at is not None:
        raise Conflict(f"canary {canary.id} was already rolled back")
    if canary.promoted_at is not None:
        raise Conflict(f"canary {canary.id}'s candidate was promoted; roll the model back instead")
    champion = registry.champion_of(session, canary.project_id, canary.model_id)
    if champion is not None and champion.id == canary.checkpoint_id:
        raise Conflict(
            f"checkpoint {canary.checkpoint_id} is the champion; roll the model back instead"
        )
    decided_here = canary.status is not CanaryStatus.rollback
    now = utcnow()
    values: dict[str, Any] = {"rolled_back_at": now}
    if decided_here:
        values |= {
            "status": CanaryStatus.rollback,
            "decision": CanaryDecision.rollback,
            "ended_at": canary.ended_at or now,
            "ended_by": principal.actor,
            "reason": reason,
        }
    rolled = session.execute(
        update(Canary)
        .where(
            Canary.project_id == canary.project_id,
            Canary.id == canary.id,
            Canary.status == canary.status,
            Canary.rolled_back_at.is_(None),
            Canary.promoted_at.is_(None),
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if rolled.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise Conflict(f"canary {canary.id} changed meanwhile; reload and try again")
    session.refresh(canary)
    candidate = session.get_one(Checkpoint, canary.checkpoint_id)
    candidate.status = CheckpointStatus.rolled_back
    audit.record(
        session, principal, "canary.rolled_back", "canary", canary.id, _details(canary), reason
    )
    if decided_here:
        _notify(session, links, canary, CanaryDecision.rollback.value)
    session.commit()
    return canary
