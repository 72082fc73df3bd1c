"""Alerts: where a day's verdicts become alert transitions and webhook messages.

Per (monitor, signal, cohort) there is at most one unresolved alert (a partial unique index).
Each judged verdict goes through app/stats/alerting.alert_step with the alert's state
(unresolved?, days in control) and the day's two rules:
- OPEN (either rule fired, no unresolved alert): open one with its evidence (which rule,
  band, p-value, CUSUM statistic and threshold, reference window) and emit alert.opened
  (msg id alert.opened.{id});
- STAY while a rule fires: refresh its numbers and evidence; remind (alert.opened, msg id
  alert.opened.{id}.reminder.{day}) only once the monitor's cooldown has passed since the
  last notification, and never while acknowledged. A day with no rule firing but the CUSUM
  still above its release level stays open and restarts the recovery count, so an alert
  stays open as long as a persistent shift lasts;
- RESOLVE after `resolve_after_days` consecutive in-control days (band quiet and CUSUM at or
  below its release level): emit alert.resolved. A day without data (or not judged) is
  annotated "no_data" and neither counts as recovery nor breaks the count; after
  UNJUDGED_RESOLVE_DAYS days the model served without a verdict on the cohort, the alert
  resolves `no_data` (its traffic stopped) or `unjudged` (it had data but no verdict).
Each alert remembers the last day it judged, so rerunning a day never counts twice, and a day
already judged by a since-resolved alert opens no new one. A rerun of a day the unresolved
alert judged (late events) shows the newest day of its span that still fires (the rerun's
verdict, or a later day's as stored after the rerun carried its CUSUM forward), and resolves
it `data_corrected` when no day of its span fires any more (_rejudge).
A later rerun of a day in the span of an alert resolved `data_corrected` that fires again
(more late events) reopens that alert (_reopen): the correction it was resolved on was itself
incomplete data, and the regression is the one it was about. Its receivers hear an
`alert.opened` with `reopened: true` (msg id alert.opened.{id}.reopened.{n}); resolving it
again sends alert.resolved.{id}.reopened.{n}, since receivers drop a message id they have seen.
An alert whose monitor no longer judges its cohort (disabled, or a more specific monitor
covers it now) is resolved `monitor_changed` at the next run, since nothing would ever
judge it again."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.core import audit
from app.core.auth import Principal
from app.core.db import get_owned, utcnow
from app.core.errors import Conflict
from app.core.links import Links
from app.core.pagination import paginate
from app.drift.judge import (
    DayJudgement,
    Verdict,
    pick_monitor,
    shows_shift_alone,
    stored_verdict,
)
from app.drift.queries import cohort_judgements
from app.drift.rollup import sample_trace_ids
from app.drift.schemas import AlertOut
from app.models import Alert, ChampionHistory, DriftJudgement, Model, Monitor
from app.models.drift import DATA_CORRECTED, AlertStatus
from app.registry.queries import replaced_under_alert
from app.registry.service import rollback_target_id
from app.stats.alerting import OPEN, RESOLVE, STAY, alert_step
from app.webhooks import outbox

AlertKey = tuple[int, str, str, str]  # (monitor, signal, dimension, value)
UNRESOLVED = (AlertStatus.open, AlertStatus.acknowledged)
NO_DATA = "no_data"
UNJUDGED = "unjudged"
UNJUDGED_RESOLVE_DAYS = 14
"""An unresolved alert its monitor has not judged on this many days the model served since
its last judged day resolves: `no_data` when its cohort had no data on any of them (its
traffic stopped: a prompt version replaced by the fix, a route retired), `unjudged` when it
had data on some but no verdict (below the monitor's min_volume, no reference entry for it,
no finite p-value), with a note saying which. Every day from an alert's onset to its
resolution is left out of the model's known-good days, so an alert nothing judges any more
would keep every reference of the model from freezing for good (a new champion judged
against the old one, new cohorts never added, the entry an unjudged cohort lacks never
frozen): that is why `unjudged` resolves too, though its regression may go on, and says so.
Days the model did not serve at all (an ingestion outage) do not count. A cohort judged again
within judge.STATE_LOOKBACK_DAYS keeps its CUSUM statistic, so a shift still under way opens
a new alert on its first judged day."""


def _key(alert: Alert) -> AlertKey:
    return (alert.monitor_id, alert.signal, alert.dimension, alert.value)


def apply_verdicts(
    session: Session, links: Links, model: Model, day: date, judgement: DayJudgement
) -> tuple[int, int]:
    """Opens, refreshes, reminds and resolves the model's alerts for `day`. -> (opened,
    resolved). Runs in the caller's transaction, so alerts and their outbox rows commit
    together."""
    unresolved = {
        _key(a): a
        for a in session.scalars(
            select(Alert).where(
                Alert.project_id == model.project_id,
                Alert.model_id == model.id,
                Alert.status.in_(UNRESOLVED),
            )
        ).all()
    }
    resolved = _resolve_unmonitored(session, links, judgement.monitors, unresolved)
    opened = 0
    judged: set[AlertKey] = set()
    for verdict in judgement.verdicts:
        if not verdict.judged:
            continue
        key = (verdict.monitor.id, verdict.row.signal, verdict.row.dimension, verdict.row.value)
        judged.add(key)
        alert = unresolved.get(key)
        if alert is not None and day <= alert.last_day:
            resolved += _rejudge(session, links, model, alert, day, verdict)
            continue
        step = alert_step(
            alert is not None,
            alert.days_in_band if alert is not None else 0,
            verdict.band_fired,
            verdict.cusum_fired,
            True,
            verdict.monitor.resolve_after_days,
            verdict.in_control,
        )
        action = int(step.action)
        if action == OPEN:
            covering = _judged_by_resolved(session, model, key, day)
            if covering is None:
                _open(session, links, model, day, verdict)
                opened += 1
            elif covering.resolution == DATA_CORRECTED:
                _reopen(session, links, covering, day, verdict)
                unresolved[key] = covering
                opened += 1
        elif action in (STAY, RESOLVE) and alert is not None:
            alert.days_in_band = int(step.days_in_control)
            if verdict.band_fired or verdict.cusum_fired:
                _refresh(session, links, model, alert, day, verdict)
            else:
                alert.last_day = max(alert.last_day, day)
            if action == RESOLVE:
                alert.days_in_band = verdict.monitor.resolve_after_days
                _resolve(session, links, alert, "recovered", note=None)
                resolved += 1
    served = bool(judgement.verdicts)
    for key, alert in unresolved.items():
        if key in judged or day <= alert.day:
            continue
        unjudged, with_data = (
            _served_days_unjudged(session, model, alert, day) if served else (0, 0)
        )
        if unjudged >= UNJUDGED_RESOLVE_DAYS:
            since = f"{unjudged} days the model served since {alert.last_day}"
            if with_data == 0:
                _resolve(session, links, alert, NO_DATA, f"no data on {since}: its traffic stopped")
            else:
                note = (
                    f"not judged on {since}, its cohort having data on {with_data} of them "
                    "(below the monitor's min_volume, or no reference entry for it): resolved "
                    "so that the model's later days can become known-good and a reference "
                    "can freeze; the regression may go on, and opens a new alert once judged"
                )
                _resolve(session, links, alert, UNJUDGED, note)
            resolved += 1
        else:
            _annotate_once(alert, {"kind": "no_data", "day": day.isoformat()})
    session.flush()
    return opened, resolved


def _served_days_unjudged(
    session: Session, model: Model, alert: Alert, day: date
) -> tuple[int, int]:
    """(the days after the alert's last judged day, through `day`, on which the model served
    (it has verdicts stored), how many of them the alert's cohort x signal had data on).
    judge_day stores a row for every monitored cohort of the served checkpoint with data,
    judged or not, so a day holding the alert's row had data; until 2026-12-01 a cohort with
    traffic every day but no verdict resolved `no_data` ("its traffic stopped")."""
    served = select(DriftJudgement.day).where(
        DriftJudgement.project_id == model.project_id,
        DriftJudgement.model_id == model.id,
        DriftJudgement.day > alert.last_day,
        DriftJudgement.day <= day,
    )
    with_data = served.where(
        DriftJudgement.signal == alert.signal,
        DriftJudgement.dimension == alert.dimension,
        DriftJudgement.value == alert.value,
    )
    counts = [
        session.scalar(select(func.count(func.distinct(days.c.day))).select_from(days))
        for days in (served.subquery(), with_data.subquery())
    ]
    return int(counts[0] or 0), int(counts[1] or 0)


def _rejudge(
    session: Session, links: Links, model: Model, alert: Alert, day: date, verdict: Verdict
) -> int:
    """A day the unresolved alert judged already, run again (late events): -> 1 if that
    resolved it. The day neither counts again nor notifies. Its newest day still firing: the
    alert's numbers and evidence become the rerun's. No day of the alert's span firing any
    more (the rerun's and, through the carried CUSUM, every later one's rows as stored):
    the data that opened it was incomplete, and it resolves `data_corrected` (alert.resolved)
    instead of paging on until `resolve_after_days` quiet days pass. A rerun of an earlier
    day carried its CUSUM into the later days' stored verdicts (judge._carry_forward), so
    the alert then shows the newest day of its span that still fires as stored now: before,
    it kept the statistic and rules its newest day had before the rerun."""
    if (verdict.band_fired or verdict.cusum_fired) and day == alert.last_day:
        _show(alert, day, verdict)
        return 0
    newest = _newest_firing(session, model, alert)
    if newest is not None:
        monitor = session.get(Monitor, alert.monitor_id)
        if monitor is not None:
            _show(alert, newest.day, stored_verdict(session, monitor, newest))
        return 0
    note = f"rerun of {day}: no day from {alert.day} to {alert.last_day} fires any more"
    _resolve(session, links, alert, DATA_CORRECTED, note)
    return 1


def _reopen(session: Session, links: Links, alert: Alert, day: date, verdict: Verdict) -> None:
    """A rerun of `day`, in the span of an alert resolved `data_corrected`, fires again: the
    events that "corrected" it were not the whole day either. The same alert reopens (its id
    is what tickets, rollbacks and receivers know; a second alert would cover days the first
    one claims) with the rerun's numbers and evidence, its recovery count restarted, and
    notifies as alert.opened with `reopened: true` under a message id of its own."""
    reopening = _reopen_count(alert) + 1
    alert.status = AlertStatus.open
    alert.resolved_at = None
    alert.resolution = None
    alert.acknowledged_at = None
    alert.days_in_band = 0
    alert.last_notified_at = utcnow()
    _show(alert, day, verdict)
    note = f"rerun of {day}: it fires again, later events undid the data correction"
    _annotate_once(
        alert,
        {"kind": "reopened", "day": day.isoformat(), "note": note, "at": utcnow().isoformat()},
    )
    session.flush()
    _notify(
        session,
        links,
        alert,
        "alert.opened",
        f"alert.opened.{alert.id}.reopened.{reopening}",
        reopened=True,
    )


def _reopen_count(alert: Alert) -> int:
    return sum(1 for a in alert.annotations if a.get("kind") == "reopened")


def _newest_firing(session: Session, model: Model, alert: Alert) -> DriftJudgement | None:
    """The stored verdict of the alert's cohort that fires on the newest day of its span."""
    return session.scalars(
        select(DriftJudgement)
        .where(
            *cohort_judgements(model, alert.signal, alert.dimension, alert.value),
            DriftJudgement.day >= alert.day,
            DriftJudgement.day <= alert.last_day,
            DriftJudgement.rules != 0,
        )
        .order_by(DriftJudgement.day.desc())
        .limit(1)
    ).first()


def _resolve_unmonitored(
    session: Session, links: Links, monitors: Sequence[Monitor], unresolved: dict[AlertKey, Alert]
) -> int:
    """Resolves (`monitor_changed`) the alerts whose monitor no longer judges their cohort:
    it was disabled, or a more specific monitor covers the cohort now. Nothing would ever
    judge them again, so they would stay open for good and keep every later day out of the
    model's known-good days (no reference could freeze). The monitor now in charge judges
    the cohort from today and opens an alert of its own if the shift goes on. Removes them
    from `unresolved`; -> how many."""
    resolved = 0
    for key, alert in list(unresolved.items()):
        _monitor_id, signal, dimension, value = key
        now_judged_by = pick_monitor(monitors, signal, dimension, value)
        if now_judged_by is not None and now_judged_by.id == alert.monitor_id:
            continue
        note = (
            f"monitor {now_judged_by.id} judges this cohort now"
            if now_judged_by is not None
            else f"monitor {alert.monitor_id} was disabled and no other monitor judges this cohort"
        )
        _resolve(session, links, alert, "monitor_changed", note)
        del unresolved[key]
        resolved += 1
    return resolved


def _judged_by_resolved(session: Session, model: Model, key: AlertKey, day: date) -> Alert | None:
    """The resolved alert of the model that already covered `day`, if any (a rerun must not
    open another one; one resolved `data_corrected` reopens). Filtered by project and model
    like every tenant query, though monitor ids are unique across projects."""
    monitor_id, signal, dimension, value = key
    return session.scalars(
        select(Alert)
        .where(
            Alert.project_id == model.project_id,
            Alert.model_id == model.id,
            Alert.monitor_id == monitor_id,
            Alert.signal == signal,
            Alert.dimension == dimension,
            Alert.value == value,
            Alert.status == AlertStatus.resolved,
            Alert.day <= day,
            Alert.last_day >= day,
        )
        .order_by(Alert.id.desc())
        .limit(1)
    ).first()


def _rollback_target(session: Session, model: Model, day: date, checkpoint_id: int) -> int | None:
    """The known-good checkpoint to go back to from `checkpoint_id`, as the champion history
    stood at the end of the judged `day` (a backfill after later promotions must not name a
    checkpoint of later days, or the regressing one itself); the whole history when the
    registry knew no champion yet that day (traffic older than its first promotion). Never
    `checkpoint_id` itself; the champion of the day when `checkpoint_id` serves without
    having been promoted by then (registry.rollback_target_id)."""
    history = session.scalars(
        select(ChampionHistory)
        .where(ChampionHistory.project_id == model.project_id, ChampionHistory.model_id == model.id)
        .order_by(ChampionHistory.id)
    ).all()
    end_of_day = datetime.combine(day + timedelta(days=1), time.min, tzinfo=UTC)
    known_then = [entry for entry in history if entry.created_at < end_of_day] or history
    return rollback_target_id(
        known_then, replaced_under_alert(session, known_then), leaving=checkpoint_id
    )


def _open(session: Session, links: Links, model: Model, day: date, verdict: Verdict) -> Alert:
    row = verdict.row
    alert = Alert(
        project_id=model.project_id,
        monitor_id=verdict.monitor.id,
        model_id=model.id,
        checkpoint_id=row.checkpoint_id,
        signal=row.signal,
        dimension=row.dimension,
        value=row.value,
        day=day,
        last_day=day,
        status=AlertStatus.open,
        observed=verdict.observed if verdict.observed is not None else 0.0,
        band_low=verdict.band_low,
        band_high=verdict.band_high,
        baseline=verdict.center,
        volume=row.denominator,
        sample_trace_ids=sample_trace_ids(
            session, model.project_id, day, row.checkpoint_id, row.signal, row.dimension, row.value
        ),
        rollback_target_id=_rollback_target(session, model, day, row.checkpoint_id),
        days_in_band=0,
        last_notified_at=utcnow(),
        annotations=[],
        evidence=verdict.evidence(day),
    )
    session.add(alert)
    session.flush()
    _notify(session, links, alert, "alert.opened", f"alert.opened.{alert.id}")
    return alert


def _refresh(
    session: Session, links: Links, model: Model, alert: Alert, day: date, verdict: Verdict
) -> None:
    row = verdict.row
    is_new_day = day > alert.last_day
    moves = (
        is_new_day
        and row.checkpoint_id != alert.checkpoint_id
        and shows_shift_alone(session, model, alert.day, day, verdict)
    )
    if moves:
        # Another checkpoint serves now (a rollback or promotion while the shift went on) and
        # its own days show the shift: the alert is about its traffic, its samples and where
        # to go back to from it. A CUSUM still above h after a rollback that cured the shift
        # (it decays by about k a day from its cap) says nothing about the new checkpoint,
        # nor does one day's z > k lifting it: until 2026-12-01 the alert moved onto the
        # clean champion that was rolled back to, naming a rollback target for it.
        alert.checkpoint_id = row.checkpoint_id
        alert.rollback_target_id = _rollback_target(session, model, day, row.checkpoint_id)
        alert.sample_trace_ids = sample_trace_ids(
            session, model.project_id, day, row.checkpoint_id, row.signal, row.dimension, row.value
        )
        _annotate_once(
            alert,
            {
                "kind": "checkpoint_changed",
                "day": day.isoformat(),
                "checkpoint_id": row.checkpoint_id,
            },
        )
    alert.last_day = max(alert.last_day, day)
    _show(alert, day, verdict)
    cooldown = timedelta(hours=verdict.monitor.cooldown_hours)
    last = alert.last_notified_at or alert.opened_at
    # A reminder says the regression goes on: not on a day of another checkpoint the alert
    # did not move to (its statistic decaying after a rollback that cured the shift).
    own_day = row.checkpoint_id == alert.checkpoint_id
    if is_new_day and own_day and alert.status is AlertStatus.open and utcnow() - last >= cooldown:
        alert.last_notified_at = utcnow()
        _notify(
            session,
            links,
            alert,
            "alert.opened",
            f"alert.opened.{alert.id}.reminder.{day.isoformat()}",
            reminder=True,
        )


def _show(alert: Alert, day: date, verdict: Verdict) -> None:
    """The alert's numbers and evidence from `day`'s firing verdict."""
    if verdict.observed is not None:
        alert.observed = verdict.observed
    alert.band_low, alert.band_high = verdict.band_low, verdict.band_high
    alert.baseline = verdict.center
    alert.volume = verdict.row.denominator
    alert.evidence = verdict.evidence(day)


def _resolve(
    session: Session, links: Links, alert: Alert, resolution: str, note: str | None
) -> None:
    alert.status = AlertStatus.resolved
    alert.resolved_at = utcnow()
    alert.resolution = resolution
    if note:
        _annotate_once(alert, {"kind": "note", "note": note, "at": utcnow().isoformat()})
    session.flush()
    reopenings = _reopen_count(alert)
    msg_id = f"alert.resolved.{alert.id}"
    if reopenings:
        msg_id += f".reopened.{reopenings}"
    _notify(session, links, alert, "alert.resolved", msg_id)


def _annotate_once(alert: Alert, annotation: dict[str, Any]) -> None:
    # Reassigned, not appended: the JSON column does not track in-place mutation.
    if annotation not in alert.annotations:
        alert.annotations = [*alert.annotations, annotation]


def _notify(
    session: Session,
    links: Links,
    alert: Alert,
    event_type: str,
    msg_id: str,
    reminder: bool = False,
    reopened: bool = False,
) -> None:
    session.flush()  # a new alert needs its id; its relationships load on first use
    data = alert_out(alert, links).model_dump(mode="json")
    if reminder:
        data["reminder"] = True
    if reopened:
        data["reopened"] = True
    outbox.emit(session, alert.project_id, event_type, msg_id, f"alert:{alert.id}", data)


def alert_out(alert: Alert, links: Links) -> AlertOut:
    """The alert as the API, the pages and the webhook payload show it."""
    return AlertOut.model_validate(alert, context={"links": links})


def get_alert(session: Session, project_id: int, alert_id: int) -> Alert:
    return get_owned(session, Alert, project_id, alert_id, "alert")


def list_alerts(
    session: Session,
    project_id: int,
    filters: dict[str, Any],
    cursor: str | None,
    limit: int,
) -> tuple[Sequence[Alert], str | None]:
    stmt = select(Alert).where(Alert.project_id == project_id)
    if filters.get("model") is not None:
        model_id = session.scalar(
            select(Model.id).where(Model.project_id == project_id, Model.name == filters["model"])
        )
        stmt = stmt.where(Alert.model_id == (model_id or -1))
    for column in ("status", "signal", "dimension", "value"):
        if filters.get(column) is not None:
            stmt = stmt.where(getattr(Alert, column) == filters[column])
    return paginate(session, stmt, Alert.id, cursor, limit)


def acknowledge(session: Session, principal: Principal, alert_id: int, note: str | None) -> Alert:
    alert = get_alert(session, principal.project_id, alert_id)
    if alert.status is not AlertStatus.open:
        raise Conflict(f"alert {alert_id} is {alert.status.value}; only open alerts are acked")
    alert.status = AlertStatus.acknowledged
    alert.acknowledged_at = utcnow()
    audit.record(session, principal, "alert.acknowledged", "alert", alert.id, note=note)
    session.commit()
    return alert


def resolve(
    session: Session, principal: Principal, links: Links, alert_id: int, note: str | None
) -> Alert:
    alert = get_alert(session, principal.project_id, alert_id)
    if alert.status is AlertStatus.resolved:
        raise Conflict(f"alert {alert_id} is already resolved")
    _resolve(session, links, alert, "manual", note)
    audit.record(session, principal, "alert.resolved", "alert", alert.id, note=note)
    session.commit()
    return alert
