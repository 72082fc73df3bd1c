"""Frozen references: which known-good days a model is judged against, and their summaries.

The reference is the champion's known-good period. Invariants:
- A model has at most one ``active`` reference; a new one supersedes it and is never edited.
- Known-good days are days the checkpoint served (it has an all-traffic row) that are not a
  marked incident day and on which no alert of the model was unresolved (from its shift's
  onset to its last judged day; to today while it is unresolved), nor a shift was building
  (from the onset of a CUSUM past its release level on the latest judged day).
- Automatic freezing (``active_for_day``, called by the daily job before judging a day):
  once the current champion has ``reference_days`` known-good days after its
  ``warmup_days`` (the project's DriftSettings), its first ``reference_days`` such days are
  frozen ("warmup"). Until then the day is judged against the previous champion's
  reference; if that one was never frozen (it was replaced before completing its window),
  its last known-good days (at most ``reference_days``) are frozen when the champion changes
  ("champion_change"), provided there are at least MIN_REFERENCE_DAYS of them.
- A champion that returns (rolled back to, promoted again) gets its own latest reference
  back, copied as a new version ("champion_returned").
- Only the newest day moves references: an earlier day run again is judged against the
  version that judged it and freezes nothing.
- ``rebaseline`` freezes the current champion's last ``reference_days`` known-good days on
  request, with a reason, audited. The CUSUM restarts from 0 against a new reference
  (judge.py keys its state by reference version).
- Changing the settings never touches a frozen reference: the new values apply at the next
  freeze (the warm-up of a new champion, a champion change, or a rebaseline).
- Entries are never changed; entries may be added for cohorts the reference did not hold,
  each from its own window (``add_new_cohorts``): while the active reference is the current
  champion's own, a cohort without any entry (it first served after the freeze, or on too
  few of the window's days) gets entries once it has ``reference_days`` known-good days
  with data of its own, counted from the end of its own ``warmup_days`` after its first day
  of data in the champion's period on or after the reference's first day (the days a
  rebaseline left behind never come back as a cohort's window). They are summarised
  exactly as a freeze would, added to the same version (every other CUSUM keeps its state;
  the new keys start at 0) and recorded in ``cohorts_added`` with their days and the first
  day judged with them (``added_on``), before which no day, a rerun included, is judged
  against them (``entries_for_day``).
  Only the newest day adds entries, as only it freezes.

A model with no champion history is judged against its most-served checkpoint, counted from
that checkpoint's first day of traffic. Per cohort x signal the stored summary is what
app/stats needs to rebuild a ``Reference``; see DriftReference.stats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core import audit
from app.core.auth import Principal
from app.core.db import today_utc
from app.core.errors import Conflict, Unprocessable
from app.drift.queries import cohort_judgements
from app.drift.schemas import DriftSettings, RebaselineIn
from app.drift.settings import drift_settings
from app.drift.signals import CONTINUOUS_SIGNALS, PRICED_SIGNALS, RATE_SIGNALS
from app.models import (
    Alert,
    ChampionHistory,
    DailySignal,
    DriftJudgement,
    DriftReference,
    DriftReferenceCohort,
    IncidentDay,
    Model,
)
from app.models.drift import AlertStatus
from app.registry.service import get_model
from app.stats.bands import estimate_rate_reference
from app.stats.calibration import (
    DEFAULT_BINS,
    brier_day_signal,
    estimate_ece_reference,
)
from app.stats.continuous import (
    estimate_mean_reference,
    log_moments,
    lognormal_quantile_signal,
)
from app.stats.reference import DEFAULT_MIN_DAYS, Reference

MIN_REFERENCE_DAYS = DEFAULT_MIN_DAYS
ACTIVE, SUPERSEDED = "active", "superseded"
RETURNED = "champion_returned"
"""Trigger of a returning champion's own reference, copied: it stands in until the champion
has a full window of known-good days in its new period, which is then frozen ("warmup")."""
BIN_FIELDS = ("n", "sum_prob", "sum_label", "sum_prob_sq", "sum_prob_label")

StatsKey = tuple[str, str, str]  # (signal, dimension, value)
Cohort = tuple[str, str]  # (dimension, value)


def stats_key(signal: str, dimension: str, value: str) -> str:
    return f"{signal}|{dimension}|{value}"


def cohort_part(dimension: str, value: str) -> str:
    """The part of a stats key after its signal ("dimension|value"), as `cohort_of` gives it.

    A key cannot be split back into dimension and value (both may hold "|": dimension
    "team|region", value "eu"), so cohorts are compared with keys in this joined form."""
    return f"{dimension}|{value}"


def cohort_of(key: str) -> str:
    """The cohort part of a stats key (signal names never hold "|"): see `cohort_part`."""
    return key.split("|", 1)[1]


def to_reference(entries: Sequence[Sequence[float] | None]) -> Reference:
    """Rebuilds app/stats' Reference for a list of stored entries (None: no reference)."""
    rows = np.array(
        [list(e[:5]) if e is not None else [np.nan, np.nan, np.nan, 0, 0] for e in entries],
        dtype=np.float64,
    ).reshape(-1, 5)
    used = rows[:, 3].astype(np.int64)
    valid = (used >= MIN_REFERENCE_DAYS) & np.isfinite(rows[:, 0])
    return Reference(
        center=rows[:, 0],
        between_var=rows[:, 1],
        center_var=rows[:, 2],
        days_used=used,
        days_excluded=rows[:, 4].astype(np.int64),
        valid=np.asarray(valid, dtype=np.bool_),
    )


# --- Known-good days --------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """A checkpoint's time as the model's champion: [start, end) in days (end None: now)."""

    checkpoint_id: int
    start: date
    end: date | None


def champion_periods(session: Session, model: Model, day: date) -> list[Period]:
    """The champions up to and including `day`, oldest first, from the registry's history.

    Without any history, the model's most-served checkpoint from its first day of traffic."""
    history = session.scalars(
        select(ChampionHistory)
        .where(ChampionHistory.project_id == model.project_id, ChampionHistory.model_id == model.id)
        .order_by(ChampionHistory.id)
    ).all()
    entries = [
        (h.checkpoint_id, h.created_at.date()) for h in history if h.created_at.date() <= day
    ]
    if not entries:
        return _most_served_since_first_day(session, model, day)
    periods: list[Period] = []
    for index, (checkpoint_id, start) in enumerate(entries):
        end = entries[index + 1][1] if index + 1 < len(entries) else None
        periods.append(Period(checkpoint_id, start, end))
    return periods


def _most_served_since_first_day(session: Session, model: Model, day: date) -> list[Period]:
    """The model's most-served checkpoint up to `day`, from its first day of traffic.

    A call feeds several signals, so denominators are never summed across signals (that
    would favour the checkpoint whose calls carry more fields); each checkpoint's volume is
    its best-covered signal's total, and the larger volume wins (ties: the older id)."""
    totals = session.execute(
        select(
            DailySignal.checkpoint_id,
            DailySignal.signal,
            func.sum(DailySignal.denominator),
            func.min(DailySignal.day),
        )
        .where(
            DailySignal.project_id == model.project_id,
            DailySignal.model_id == model.id,
            DailySignal.dimension == "all",
            DailySignal.day <= day,
        )
        .group_by(DailySignal.checkpoint_id, DailySignal.signal)
    ).all()
    volume: dict[int, int] = {}
    first_day: dict[int, date] = {}
    for checkpoint_id, _signal, total, first in totals:
        volume[checkpoint_id] = max(volume.get(checkpoint_id, 0), int(total or 0))
        first_day[checkpoint_id] = min(first_day.get(checkpoint_id, first), first)
    if not volume:
        return []
    served = min(volume, key=lambda checkpoint_id: (-volume[checkpoint_id], checkpoint_id))
    return [Period(served, first_day[served], None)]


def known_good_days(
    session: Session,
    model: Model,
    checkpoint_id: int,
    first: date,
    end: date,
    alert_days_too: bool = False,
) -> list[date]:
    """Days in [first, end) the checkpoint served, minus incident days and (unless
    `alert_days_too`: a shift accepted as the new normal) alert days."""
    if first >= end:
        return []
    served = session.scalars(
        select(DailySignal.day)
        .where(
            DailySignal.project_id == model.project_id,
            DailySignal.checkpoint_id == checkpoint_id,
            DailySignal.dimension == "all",
            DailySignal.day >= first,
            DailySignal.day < end,
        )
        .distinct()
        .order_by(DailySignal.day)
    ).all()
    bad = excluded_days(session, model, first, end, alert_days=not alert_days_too)
    return [d for d in served if d not in bad]


def excluded_days(
    session: Session, model: Model, first: date, end: date, alert_days: bool = True
) -> set[date]:
    """Incident days and (with `alert_days`) days with an alert of the model and days of a
    shift building without one yet, in [first, end). An alert's days start at its shift's
    onset: the day after its CUSUM last stood at zero before it opened (a CUSUM accumulates
    for days before it crosses h, and those days are the shift's, not known-good). A
    building shift is a CUSUM past its release level on the model's latest judged day
    (_building_shifts): its days, from the same onset, are the shift's too. Until
    2026-12-01 they counted as known-good: a rebaseline with S at 2.56 (release 1.65, h 3.31,
    the alert due two days later) froze six days of a 10% -> 11% refusal shift into its
    14-day window, the CUSUM restarted against a centre halfway to the shift, and nothing
    alerted in the 34 days after."""
    bad = set(
        session.scalars(
            select(IncidentDay.day).where(
                IncidentDay.project_id == model.project_id,
                IncidentDay.model_id == model.id,
                IncidentDay.day >= first,
                IncidentDay.day < end,
            )
        ).all()
    )
    if not alert_days:
        return bad
    spans = session.execute(
        select(
            Alert.day, Alert.last_day, Alert.status, Alert.signal, Alert.dimension, Alert.value
        ).where(
            Alert.project_id == model.project_id,
            Alert.model_id == model.id,
            Alert.day < end,
        )
    ).all()
    runs = [
        (opened, last if status is AlertStatus.resolved else None, signal, dimension, value)
        for opened, last, status, signal, dimension, value in spans
    ]
    latest = _latest_judged_day(session, model)
    if latest is not None:
        building = _building_shifts(session, model, latest)
        runs += [(latest + timedelta(days=1), None, *key) for key in building]
    for opened, last, signal, dimension, value in runs:
        stop = end if last is None else min(end, last + timedelta(days=1))
        if opened > first:  # only then can an earlier onset reach into the window
            opened = _shift_onset(session, model, opened, signal, dimension, value)
        day = max(opened, first)
        while day < stop:
            bad.add(day)
            day += timedelta(days=1)
    return bad


def _latest_judged_day(session: Session, model: Model, before: date | None = None) -> date | None:
    """The model's latest day with stored verdicts (before `before`, when given)."""
    stmt = select(func.max(DriftJudgement.day)).where(
        DriftJudgement.project_id == model.project_id,
        DriftJudgement.model_id == model.id,
    )
    if before is not None:
        stmt = stmt.where(DriftJudgement.day < before)
    return session.scalar(stmt)


def building_shifts(session: Session, model: Model) -> list[dict[str, Any]]:
    """The CUSUMs past their release level on the model's latest judged day, as a rebaseline
    names them: {signal, dimension, value, statistic, threshold, onset}. Their days from the
    onset are not known-good (excluded_days), and a rebaseline that leaves them out, or
    finds too few days because of them, says so: about 8% of steady days hold one such
    CUSUM, and until 2026-12-01 the window moved back, or the request was refused with "only
    N known-good days", without naming why (accept_alert_days takes their days)."""
    latest = _latest_judged_day(session, model)
    if latest is None:
        return []
    return [
        {
            "signal": signal,
            "dimension": dimension,
            "value": value,
            "statistic": round(statistic, 2),
            "threshold": round(threshold, 2),
            "onset": _shift_onset(
                session, model, latest + timedelta(days=1), signal, dimension, value
            ).isoformat(),
        }
        for signal, dimension, value, statistic, threshold in _building_shift_rows(
            session, model, latest
        )
    ]


def _building_shifts(
    session: Session, model: Model, day: date, checkpoint_id: int | None = None
) -> list[tuple[str, str, str]]:
    """(signal, dimension, value) of the model's CUSUMs (of `checkpoint_id`'s rows, when
    given) standing past their release level (h/2) on `day`."""
    return [row[:3] for row in _building_shift_rows(session, model, day, checkpoint_id)]


def _building_shift_rows(
    session: Session, model: Model, day: date, checkpoint_id: int | None = None
) -> list[tuple[str, str, str, float, float]]:
    """(signal, dimension, value, S, h) of the model's CUSUMs (of `checkpoint_id`'s rows, when
    given) standing past their release level (h/2) on `day`; S the larger side's."""
    stmt = select(
        DriftJudgement.signal,
        DriftJudgement.dimension,
        DriftJudgement.value,
        DriftJudgement.cusum,
        DriftJudgement.cusum_lower,
        DriftJudgement.cusum_h,
    ).where(
        DriftJudgement.project_id == model.project_id,
        DriftJudgement.model_id == model.id,
        DriftJudgement.day == day,
        DriftJudgement.cusum_h.is_not(None),
        (DriftJudgement.cusum > DriftJudgement.cusum_h / 2)
        | (DriftJudgement.cusum_lower > DriftJudgement.cusum_h / 2),
    )
    if checkpoint_id is not None:
        stmt = stmt.where(DriftJudgement.checkpoint_id == checkpoint_id)
    return [
        (signal, dimension, value, max(upper, lower), float(h or 0.0))
        for signal, dimension, value, upper, lower, h in session.execute(stmt).all()
    ]


def _shift_building(session: Session, model: Model, checkpoint_id: int, day: date) -> bool:
    """Whether a CUSUM of the checkpoint stood past its release level (h/2) on the last day
    judged before `day`: a shift may be under way that has not opened an alert yet. Its
    reference waits (it is judged against the current one meanwhile) until the CUSUM falls
    back or the alert opens, whose days from the onset are then left out: otherwise the
    shift's first days would be frozen into the window and the CUSUM restarted against
    them, which hid a 1.3x shift for weeks."""
    last = _latest_judged_day(session, model, before=day)
    return last is not None and bool(_building_shifts(session, model, last, checkpoint_id))


def _shift_onset(
    session: Session, model: Model, opened: date, signal: str, dimension: str, value: str
) -> date:
    """The day after the cohort x signal's CUSUMs last stood at zero before `opened` (the
    CUSUM's own change-point estimate, Page 1954), or `opened` when none did."""
    at_zero = session.scalar(
        select(func.max(DriftJudgement.day)).where(
            *cohort_judgements(model, signal, dimension, value),
            DriftJudgement.day < opened,
            DriftJudgement.cusum <= 0.0,
            DriftJudgement.cusum_lower <= 0.0,
        )
    )
    return opened if at_zero is None else min(opened, at_zero + timedelta(days=1))


# --- Freezing ---------------------------------------------------------------------------------


def active_reference(session: Session, model: Model) -> DriftReference | None:
    return session.scalar(
        select(DriftReference).where(
            DriftReference.project_id == model.project_id,
            DriftReference.model_id == model.id,
            DriftReference.status == ACTIVE,
        )
    )


def active_for_day(
    session: Session, model: Model, day: date, settings: DriftSettings
) -> DriftReference | None:
    """The reference `day` is judged against, freezing one first when one is due (with the
    project's `settings`; an already frozen reference is kept whatever they say now).

    Only the newest day moves references: a day before the latest judged one (a rerun for
    late events, or a gap filled later) is judged against the reference that judged it, or
    else the newest one frozen from days before it, and freezes nothing. Rerunning an old
    champion's day used to freeze that champion again, and the next day the current one,
    restarting every CUSUM (its state is kept per reference version) under a running shift.
    A champion that returns (a rollback, a re-promotion) gets its own reference back
    ("champion_returned") instead of the one it replaced."""
    if _judged_after(session, model, day):
        return _reference_that_judges_past_day(session, model, day)
    periods = champion_periods(session, model, day)
    reference = _newest_reference(session, model, day, settings, periods)
    if reference is not None and periods:
        add_new_cohorts(session, model, reference, day, settings, periods[-1])
    return reference


def _newest_reference(
    session: Session,
    model: Model,
    day: date,
    settings: DriftSettings,
    periods: list[Period],
) -> DriftReference | None:
    """The reference the newest day `day` is judged against, frozen first when one is due."""
    warmup = timedelta(days=settings.warmup_days)
    length = settings.reference_days
    active = active_reference(session, model)
    if not periods:
        return active
    current = periods[-1]
    own_active = (
        active if active is not None and active.checkpoint_id == current.checkpoint_id else None
    )
    if own_active is not None and own_active.trigger != RETURNED:  # a returned copy stands in
        return own_active
    days = known_good_days(session, model, current.checkpoint_id, current.start + warmup, day)
    if len(days) >= length and not _shift_building(session, model, current.checkpoint_id, day):
        return freeze(session, model, current.checkpoint_id, days[:length], "warmup")
    if own_active is not None:
        return own_active
    own = session.scalar(
        select(DriftReference)
        .where(
            DriftReference.project_id == model.project_id,
            DriftReference.model_id == model.id,
            DriftReference.checkpoint_id == current.checkpoint_id,
        )
        .order_by(DriftReference.version.desc())
        .limit(1)
    )
    if own is not None:
        returned = _returned_reference(session, model, own)
        if returned is not None:
            return returned
    if len(periods) >= 2:
        previous = periods[-2]
        if active is None or active.checkpoint_id != previous.checkpoint_id:
            first = previous.start + warmup
            end = previous.end or day
            days = known_good_days(session, model, previous.checkpoint_id, first, end)
            if len(days) >= MIN_REFERENCE_DAYS:
                return freeze(
                    session,
                    model,
                    previous.checkpoint_id,
                    days[-length:],
                    "champion_change",
                )
    return active


def _returned_reference(
    session: Session, model: Model, own: DriftReference
) -> DriftReference | None:
    """A returning champion's last reference, frozen again as "champion_returned": a copy
    while its days are all still known-good, else re-summarised from those that are (a day
    marked as an incident since never enters a reference frozen afterwards); None when fewer
    than MIN_REFERENCE_DAYS remain."""
    days = sorted(date.fromisoformat(d) for d in own.days)
    added_days = sorted({date.fromisoformat(d) for c in own.cohorts_added for d in c.days})
    every = sorted({*days, *added_days})
    bad = excluded_days(session, model, every[0], every[-1] + timedelta(days=1)) if days else set()
    kept = [d for d in days if d not in bad]
    if len(kept) == len(days) and not bad.intersection(added_days):
        copy = _supersede_with(session, model, own.checkpoint_id, own.days, own.stats, RETURNED)
        for cohort in own.cohorts_added:  # its added entries came along: so do their records
            _record_added(
                session,
                copy,
                cohort.dimension,
                cohort.value,
                cohort.added_on,
                [date.fromisoformat(d) for d in cohort.days],
                cohort.entries,
            )
        return copy
    if len(kept) < MIN_REFERENCE_DAYS:
        return None
    # Re-summarised from its frozen window: cohorts added later wait for windows again.
    return freeze(session, model, own.checkpoint_id, kept, RETURNED)


def _judged_after(session: Session, model: Model, day: date) -> bool:
    return (
        session.scalar(
            select(DriftJudgement.day)
            .where(
                DriftJudgement.project_id == model.project_id,
                DriftJudgement.model_id == model.id,
                DriftJudgement.day > day,
            )
            .limit(1)
        )
        is not None
    )


def _reference_that_judges_past_day(
    session: Session, model: Model, day: date
) -> DriftReference | None:
    """The version that judged `day` before; for a day never judged, the one that judged the
    latest day before it (what would have judged it in order); else none."""
    version = session.scalar(
        select(DriftJudgement.reference_version)
        .where(
            DriftJudgement.project_id == model.project_id,
            DriftJudgement.model_id == model.id,
            DriftJudgement.reference_version.is_not(None),
            DriftJudgement.day <= day,
        )
        .order_by(DriftJudgement.day.desc())
        .limit(1)
    )
    if version is None:
        return None
    return session.scalar(
        select(DriftReference).where(
            DriftReference.project_id == model.project_id,
            DriftReference.model_id == model.id,
            DriftReference.version == version,
        )
    )


def freeze(
    session: Session,
    model: Model,
    checkpoint_id: int,
    days: Sequence[date],
    trigger: str,
    reason: str | None = None,
    actor: str | None = None,
) -> DriftReference:
    """Writes a new active reference from the checkpoint's stored rows on `days`."""
    stats = summarize(session, model.project_id, checkpoint_id, days)
    iso_days = [d.isoformat() for d in sorted(days)]
    return _supersede_with(session, model, checkpoint_id, iso_days, stats, trigger, reason, actor)


def _supersede_with(
    session: Session,
    model: Model,
    checkpoint_id: int,
    days: list[str],
    stats: dict[str, list[float]],
    trigger: str,
    reason: str | None = None,
    actor: str | None = None,
) -> DriftReference:
    """The model's next reference version, active, the current one superseded."""
    latest = session.scalar(
        select(func.max(DriftReference.version)).where(
            DriftReference.project_id == model.project_id, DriftReference.model_id == model.id
        )
    )
    session.execute(
        update(DriftReference)
        .where(
            DriftReference.project_id == model.project_id,
            DriftReference.model_id == model.id,
            DriftReference.status == ACTIVE,
        )
        .values(status=SUPERSEDED)
    )
    reference = DriftReference(
        project_id=model.project_id,
        model_id=model.id,
        version=(latest or 0) + 1,
        checkpoint_id=checkpoint_id,
        status=ACTIVE,
        trigger=trigger,
        first_day=date.fromisoformat(days[0]),
        last_day=date.fromisoformat(days[-1]),
        days=days,
        stats=stats,
        reason=reason,
        actor=actor,
    )
    session.add(reference)
    session.flush()
    return reference


def summarize(
    session: Session,
    project_id: int,
    checkpoint_id: int,
    days: Sequence[date],
    cohort: Cohort | None = None,
) -> dict[str, list[float]]:
    """Per cohort x signal: [centre, between-day var, var of centre, days used, excluded].

    The between-day variance of each row is partially pooled with the other values of its
    dimension for the same signal (app/stats/pooling.py; ECE excepted): entries summarised
    together depend on each other's days. One `cohort` only (a cohort added after the
    freeze) is a group of one, so it gets its own row's estimate and changes no entry."""
    query = select(DailySignal).where(
        DailySignal.project_id == project_id,
        DailySignal.checkpoint_id == checkpoint_id,
        DailySignal.day.in_(list(days)),
    )
    if cohort is not None:
        query = query.where(DailySignal.dimension == cohort[0], DailySignal.value == cohort[1])
    rows = session.scalars(query).all()
    index = {d: i for i, d in enumerate(sorted(days))}
    by_key: dict[StatsKey, dict[int, DailySignal]] = {}
    for row in rows:
        by_key.setdefault((row.signal, row.dimension, row.value), {})[index[row.day]] = row
    width = len(index)
    out: dict[str, list[float]] = {}
    families: dict[str, list[StatsKey]] = {"rate": [], "brier": [], "ece": [], "log": []}
    for key in by_key:
        signal = key[0]
        if signal in RATE_SIGNALS:
            families["rate"].append(key)
        elif signal == "brier_score":
            families["brier"].append(key)
        elif signal == "ece":
            families["ece"].append(key)
        elif signal in CONTINUOUS_SIGNALS:
            families["log"].append(key)
    for family, keys in families.items():
        if not keys:
            continue
        matrix = [by_key[k] for k in keys]
        # The wobble is pooled across the values of one dimension, signal by signal.
        pools: dict[tuple[str, str], int] = {}
        groups = np.array([pools.setdefault((k[0], k[1]), len(pools)) for k in keys])
        reference = _FAMILY_REFERENCE[family](matrix, width, [k[0] for k in keys], groups)
        for i, key in enumerate(keys):
            if reference.valid[i]:
                out[stats_key(*key)] = [
                    float(reference.center[i]),
                    float(reference.between_var[i]),
                    float(reference.center_var[i]),
                    int(reference.days_used[i]),
                    int(reference.days_excluded[i]),
                ]
    for key in families["log"]:
        if key[0] in PRICED_SIGNALS and stats_key(*key) in out:
            prices = {tuple((r.extra or {}).get("prices") or ()) for r in by_key[key].values()}
            if len(prices) == 1 and (only := prices.pop()):
                out[stats_key(*key)] += [float(p) for p in only]
            else:
                # Days computed at different prices: the centre would sit between two cost
                # levels, so cost has no reference.
                del out[stats_key(*key)]
    return out


# --- Cohorts added after the freeze -----------------------------------------------------------


@dataclass(frozen=True)
class CohortWindow:
    """A cohort the reference holds no entry for, and its own window so far.

    ``first_day``/``last_day``: its first and last day with data under the current champion
    in the champion's period from the reference's first day (before the day judged);
    ``known_good``: its days with data from the end of its warm-up that are known-good;
    ``judged_from``: the first day it can be judged, if every day from the day judged on is
    known-good (None: the reference is a stand-in from another checkpoint, and the
    champion's own freeze will take the cohort)."""

    dimension: str
    value: str
    first_day: date
    last_day: date
    known_good: tuple[date, ...]
    judged_from: date | None


def cohort_windows(
    session: Session,
    model: Model,
    reference: DriftReference,
    day: date,
    settings: DriftSettings,
    current: Period | None = None,
    could_fill_only: bool = False,
) -> list[CohortWindow]:
    """The cohorts with data under the current champion (`current`, else looked up) in its
    period before `day`, from the reference's first day on, that `reference` holds no entry
    for, with their own windows.

    With `could_fill_only` (the daily job), only cohorts with data on at least
    ``reference_days`` days: the others cannot have a full window (its days are days with
    data), so when none could, one aggregate query is the whole cost, and the known-good days
    (an onset query per alert of the model since the earliest cohort's first day) are not
    computed every day for cohorts that appear now and then, however long the history.

    A cohort's window skips its first ``warmup_days``, counted from its own first day: a new
    route or segment starts like a new champion does, with launch traffic (testers, a
    partial rollout) that is not its normal yet. Days before the reference's first day are
    never its window: a rebaseline left them behind as no longer normal, and adding a cohort
    from them would bring the replaced normal back into the new version."""
    if current is None:
        periods = champion_periods(session, model, day)
        if not periods:
            return []
        current = periods[-1]
    scope = (
        DailySignal.project_id == model.project_id,
        DailySignal.model_id == model.id,
        DailySignal.checkpoint_id == current.checkpoint_id,
        DailySignal.day >= max(current.start, reference.first_day),
        DailySignal.day < day,
        DailySignal.denominator > 0,
    )
    held = {cohort_of(key) for key in reference.stats}
    length = settings.reference_days
    spans = {
        (dimension, value): (first, last)
        for dimension, value, first, last, days_with_data in session.execute(
            select(
                DailySignal.dimension,
                DailySignal.value,
                func.min(DailySignal.day),
                func.max(DailySignal.day),
                func.count(DailySignal.day.distinct()),
            )
            .where(*scope)
            .group_by(DailySignal.dimension, DailySignal.value)
        )
        if cohort_part(dimension, value) not in held
        and (days_with_data >= length or not could_fill_only)
    }
    if not spans:
        return []
    if reference.checkpoint_id != current.checkpoint_id:
        return [
            CohortWindow(dimension, value, first, last, (), None)
            for (dimension, value), (first, last) in sorted(spans.items())
        ]
    warmup = timedelta(days=settings.warmup_days)
    earliest = min(first for first, _ in spans.values()) + warmup
    good = set(known_good_days(session, model, current.checkpoint_id, earliest, day))
    seen: dict[Cohort, set[date]] = {}
    for dimension, value, seen_day in session.execute(
        select(DailySignal.dimension, DailySignal.value, DailySignal.day)
        .where(
            *scope,
            DailySignal.day >= earliest,
            DailySignal.dimension.in_({dimension for dimension, _ in spans}),
            DailySignal.value.in_({value for _, value in spans}),
        )
        .distinct()
    ):
        seen.setdefault((dimension, value), set()).add(seen_day)
    windows = []
    for (dimension, value), (first, last) in sorted(spans.items()):
        start = first + warmup
        own = seen.get((dimension, value), set())
        days = tuple(sorted(d for d in own if d >= start and d in good))
        if len(days) >= length:
            judged_from = days[length - 1] + timedelta(days=1)
        else:
            judged_from = max(start, day) + timedelta(days=length - len(days))
        windows.append(CohortWindow(dimension, value, first, last, days, judged_from))
    return windows


def waiting_cohorts(
    session: Session, reference: DriftReference, settings: DriftSettings
) -> list[CohortWindow]:
    """The cohorts `reference` cannot judge yet, as the next day run (the day after the
    latest judged one) will find them: the drift page names them with their progress."""
    latest = session.scalar(
        select(func.max(DriftJudgement.day)).where(
            DriftJudgement.project_id == reference.project_id,
            DriftJudgement.model_id == reference.model_id,
        )
    )
    day = today_utc() if latest is None else latest + timedelta(days=1)
    return cohort_windows(session, reference.model, reference, day, settings)


def add_new_cohorts(
    session: Session,
    model: Model,
    reference: DriftReference,
    day: date,
    settings: DriftSettings,
    current: Period,
) -> list[DriftReferenceCohort]:
    """Adds to `reference` (the newest day's, `day`) the entries of every cohort it holds
    none for whose own window is full: its first ``reference_days`` known-good days,
    summarised as a freeze summarises (``summarize``). Existing entries and the version stay,
    so no CUSUM restarts; a stand-in reference (another checkpoint's) gains nothing. A
    cohort whose days give no valid summary (too few days with volume on every signal)
    keeps waiting."""
    length = settings.reference_days
    entries: dict[str, list[float]] = {}
    added = []
    for window in cohort_windows(
        session, model, reference, day, settings, current, could_fill_only=True
    ):
        if window.judged_from is None or len(window.known_good) < length:
            continue
        days = window.known_good[:length]
        cohort = (window.dimension, window.value)
        summary = summarize(session, model.project_id, reference.checkpoint_id, days, cohort)
        if summary:
            entries.update(summary)
            added.append(_record_added(session, reference, *cohort, day, days, len(summary)))
    if entries:
        assert not entries.keys() & reference.stats.keys(), "entries are never changed"
        reference.stats = {**reference.stats, **entries}
        session.flush()
    return added


def _record_added(
    session: Session,
    reference: DriftReference,
    dimension: str,
    value: str,
    added_on: date,
    days: Sequence[date],
    entries: int,
) -> DriftReferenceCohort:
    record = DriftReferenceCohort(
        project_id=reference.project_id,
        model_id=reference.model_id,
        version=reference.version,
        dimension=dimension,
        value=value,
        added_on=added_on,
        first_day=min(days),
        last_day=max(days),
        days=[d.isoformat() for d in sorted(days)],
        entries=entries,
    )
    session.add(record)
    reference.cohorts_added.append(record)
    return record


def entries_for_day(reference: DriftReference, day: date) -> dict[str, list[float]]:
    """The reference's entries that may judge `day`: all but those of cohorts added after
    it (a rerun of an earlier day is judged as it was, never against days after it)."""
    later = {cohort_part(c.dimension, c.value) for c in reference.cohorts_added if c.added_on > day}
    if not later:
        return reference.stats
    return {key: entry for key, entry in reference.stats.items() if cohort_of(key) not in later}


MIN_REPRICED_COST = 10_000.0
"""Nano-dollars (a thousandth of a cent). ln(1 + kx) - ln(1 + x) - ln k = ln((1/k + x)/(1 + x))
is about (1 - k)/(kx): under 1e-4 in size while both x and kx are at least this."""


def priced_entry(
    entry: Sequence[float] | None, pricing: dict[str, float] | None
) -> Sequence[float] | None:
    """A cost entry at the reference checkpoint's current `pricing` (Checkpoint.pricing), so
    that repricing the checkpoint is not read as a cost shift.

    A cost of x nano-dollars is logged as ln(1 + x) ~ ln x, so scaling both prices by k moves
    the centre by ln k and leaves the day-to-day and the centre's variances as they were.
    The shift is ln k to within 1e-4 while the centre's cost stays at least
    MIN_REPRICED_COST nano-dollars at both prices (a thousandth of a cent: below any real
    call). The entry is unchanged when the prices did not change, or when the checkpoint
    has no prices now (the frozen ones still say what it cost). None (not judged: a reference
    at the new prices is needed) when the two prices changed by different factors, since
    ln(a·in + b·out) then moves by an amount that depends on each call's input/output mix,
    which the stored moments do not keep, or when the calls are too cheap for the
    approximation."""
    if entry is None or pricing is None:
        return entry
    current = (pricing["usd_per_million_input_tokens"], pricing["usd_per_million_output_tokens"])
    frozen = (entry[5], entry[6])
    if current == frozen:
        return entry
    if any(f == 0.0 and c != 0.0 for c, f in zip(current, frozen, strict=True)):
        return None
    ratios = [c / f for c, f in zip(current, frozen, strict=True) if f > 0.0]
    scale = ratios[0] if ratios else 0.0
    if scale <= 0.0 or not all(math.isclose(r, scale, rel_tol=1e-9) for r in ratios):
        return None
    if math.exp(entry[0]) * min(scale, 1.0) < MIN_REPRICED_COST:
        return None
    return [entry[0] + math.log(scale), *entry[1:5], *current]


def bin_arrays(extra: dict[str, Any] | None) -> np.ndarray:
    """(5, DEFAULT_BINS) per-bin sums from a calibration row's extra["bins"] (zeros: empty)."""
    out = np.zeros((len(BIN_FIELDS), DEFAULT_BINS))
    for entry in (extra or {}).get("bins", []):
        b = int(entry["bin"])
        if 0 <= b < DEFAULT_BINS:
            out[:, b] = [float(entry[f]) for f in BIN_FIELDS]
    return out


def log_signal_of(
    signal: str, count: float, sum_log: float, sum_log_sq: float
) -> tuple[float, float]:
    """(log-scale daily value, within-day variance) of a latency/token row; NaN: not judged."""
    mean, var = log_moments(count, sum_log, sum_log_sq)
    value, within = lognormal_quantile_signal(signal.rsplit("_", 1)[1], count, mean, var)
    return float(value), float(within)


def _rate_reference(
    matrix: list[dict[int, DailySignal]], width: int, _: list[str], groups: np.ndarray
) -> Reference:
    num = np.zeros((len(matrix), width))
    den = np.zeros((len(matrix), width))
    for i, days in enumerate(matrix):
        for j, row in days.items():
            num[i, j], den[i, j] = row.numerator, row.denominator
    return estimate_rate_reference(np.minimum(num, den), den, groups=groups)


def _brier_reference(
    matrix: list[dict[int, DailySignal]], width: int, _: list[str], groups: np.ndarray
) -> Reference:
    values = np.full((len(matrix), width), np.nan)
    within = np.full((len(matrix), width), np.nan)
    for i, days in enumerate(matrix):
        for j, row in days.items():
            bins = bin_arrays(row.extra)
            value, var = brier_day_signal(*bins)
            values[i, j], within[i, j] = float(value), float(var)
    return estimate_mean_reference(values, within, groups=groups)


def _ece_reference(
    matrix: list[dict[int, DailySignal]], width: int, _: list[str], __: np.ndarray
) -> Reference:
    """Not pooled: the squared calibration error's day-to-day variance is on a scale (a
    debiased chi-square) whose within-day part depends on the level itself, and a cohort's
    miscalibration is its own; its own estimate stays."""
    sums = np.zeros((len(BIN_FIELDS), len(matrix), width, DEFAULT_BINS))
    for i, days in enumerate(matrix):
        for j, row in days.items():
            sums[:, i, j, :] = bin_arrays(row.extra)
    return estimate_ece_reference(sums[0], sums[1], sums[2], sums[3])


def _log_reference(
    matrix: list[dict[int, DailySignal]], width: int, signals: list[str], groups: np.ndarray
) -> Reference:
    values = np.full((len(matrix), width), np.nan)
    within = np.full((len(matrix), width), np.nan)
    for i, days in enumerate(matrix):
        for j, row in days.items():
            values[i, j], within[i, j] = log_signal_of(
                signals[i],
                row.denominator,
                float((row.extra or {}).get("sum_log", np.nan)),
                float((row.extra or {}).get("sum_log_sq", np.nan)),
            )
    return estimate_mean_reference(values, within, groups=groups)


_FAMILY_REFERENCE = {
    "rate": _rate_reference,
    "brier": _brier_reference,
    "ece": _ece_reference,
    "log": _log_reference,
}


# --- Rebaseline -------------------------------------------------------------------------------


def rebaseline(
    session: Session, principal: Principal, model_name: str, body: RebaselineIn
) -> DriftReference:
    """Freezes the current champion's last `reference_days` (the project's setting)
    known-good days in [first_day, last_day] as the model's reference. With
    `accept_alert_days`, days of the model's alerts count as known-good (a shift accepted as
    the new normal: otherwise a deliberately changed rate could never be rebaselined, since
    every day it serves is an alert day); incident days never do. Audited."""
    model = get_model(session, principal.project_id, model_name)
    today = today_utc()
    last = body.last_day or today - timedelta(days=1)
    if body.first_day is not None and body.first_day > last:
        raise Unprocessable("first_day: must not be after last_day", field="first_day")
    if last >= today:
        raise Unprocessable("last_day: must be before today (UTC)", field="last_day")
    # The champion now (a rollback today counts), and whichever of its own days served.
    periods = champion_periods(session, model, today)
    if not periods:
        raise Unprocessable(
            f"model '{model.name}' has no traffic to take a reference from", field="model"
        )
    checkpoint_id = periods[-1].checkpoint_id
    # By default a year back, whenever it served: a champion rolled back to is rebaselined on
    # its days before it was replaced, and a first champion's traffic may predate its
    # promotion (the registry adopted later).
    first = body.first_day or last - timedelta(days=365)
    length = drift_settings(session, principal.project_id).reference_days
    days = known_good_days(
        session, model, checkpoint_id, first, last + timedelta(days=1), body.accept_alert_days
    )
    days = days[-length:]
    # Building shifts whose days reach into the window were left out of it (by default).
    building = [
        b
        for b in ([] if body.accept_alert_days else building_shifts(session, model))
        if b["onset"] <= last.isoformat()
    ]
    if len(days) < MIN_REFERENCE_DAYS:
        raise Unprocessable(
            f"first_day: only {len(days)} known-good day(s) of the champion in that window; "
            f"a reference needs at least {MIN_REFERENCE_DAYS}" + _building_note(building),
            field="first_day",
        )
    try:
        reference = freeze(
            session, model, checkpoint_id, days, "rebaseline", body.reason, principal.actor
        )
    except IntegrityError:  # the daily job (or another request) froze a version meanwhile
        session.rollback()
        raise Conflict("another reference was frozen at the same time; retry") from None
    audit.record(
        session,
        principal,
        "drift.rebaselined",
        "model",
        model.id,
        {
            "version": reference.version,
            "checkpoint_id": reference.checkpoint_id,
            "first_day": reference.first_day.isoformat(),
            "last_day": reference.last_day.isoformat(),
            "days": len(days),
            "accept_alert_days": body.accept_alert_days,
            "building_shifts_left_out": building,
        },
        body.reason,
    )
    session.commit()
    return reference


def _building_note(building: list[dict[str, Any]]) -> str:
    """What a refused rebaseline says of the building shifts whose days it left out."""
    if not building:
        return ""
    named = ", ".join(
        f"{b['signal']} {b['dimension']}={b['value']} (S {b['statistic']}, h {b['threshold']},"
        f" from {b['onset']})"
        for b in building
    )
    return (
        f"; the days of CUSUMs building past their release level (h/2) without an alert are"
        f" not known-good: {named}; accept_alert_days takes them"
    )


def list_references(session: Session, project_id: int, model_name: str) -> list[DriftReference]:
    model = get_model(session, project_id, model_name)
    return list(
        session.scalars(
            select(DriftReference)
            .where(DriftReference.project_id == project_id, DriftReference.model_id == model.id)
            .order_by(DriftReference.version.desc())
        ).all()
    )
