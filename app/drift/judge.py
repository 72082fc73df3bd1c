"""One model-day's verdicts: both rules, one error budget, the CUSUM state carried forward.

For the day's served checkpoint (the one with the most all-traffic events, a canary's
candidate set aside: canary_candidates), every signal row covered by an enabled monitor is
judged:

- "baseline" monitors (every default) against the model's frozen reference
  (references.py): the predictive band (app/stats/bands for rates, continuous for Brier and
  the log-scale latency/token quantiles, calibration for the debiased calibration error) and a
  one-sided CUSUM of the standardized residual (app/stats/cusum), in the monitor's side (the
  signal's harmful direction, up, unless it asks for "two-sided");
- the whole day's tests share one budget (app/stats/budget.allocate): the expected number
  of false alerts per model-day is the project's ``daily_alpha`` (DriftSettings), weighted
  toward the whole population and the cohorts a dataset version declares high-risk, with
  hypotheses that cannot reach significance at today's volume left out of the count
  (weighted Tarone); the CUSUM's threshold follows its share;
- "fixed" monitors compare the value with their bounds (outside the budget: their bounds
  are the user's).

The CUSUM statistic after each day is stored in drift_judgements; the next day starts from
the latest earlier row judged against the same reference version (a new reference starts
the statistic again at 0; a cohort added to the reference since, references.add_new_cohorts,
was not judged before and so starts at 0 too, while every other statistic goes on). A day
without data leaves it unchanged. Judging writes the day's
rows (replacing any earlier run of that day) and, when later days were judged (a rerun for
late events), recomputes their statistics from it, on whichever reference each was judged
against (carry_forward_model); alerts.py turns the verdicts into alerts.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import numpy as np
from sqlalchemy import delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from app.core.schemas import nfc
from app.drift.queries import cohort_judgements
from app.drift.references import (
    bin_arrays,
    champion_periods,
    entries_for_day,
    log_signal_of,
    priced_entry,
    stats_key,
    to_reference,
)
from app.drift.rollup import day_bounds
from app.drift.signals import (
    CONTINUOUS_SIGNALS,
    PRICED_SIGNALS,
    RATE_SIGNALS,
    SignalRow,
    shown_from_log,
)
from app.models import (
    Alert,
    Canary,
    DatasetVersion,
    DriftJudgement,
    DriftReference,
    Model,
    Monitor,
)
from app.models.drift import AlertStatus
from app.stats import budget
from app.stats.bands import (
    MAX_SCORE,
    Side,
    rate_min_pvalue,
    rate_normal_score,
    rate_predictive_band,
    rate_predictive_pvalue,
)
from app.stats.calibration import brier_day_signal, ece_predictive_pvalue
from app.stats.continuous import mean_normal_score, mean_predictive_band, mean_predictive_pvalue
from app.stats.cusum import (
    DEFAULT_HEADROOM,
    DEFAULT_K,
    DEFAULT_RELEASE,
    cusum_threshold,
    cusum_update,
    reference_error_sd,
    release_level,
)
from app.stats.lazy import scipy_stats as stats
from app.stats.reference import Reference

# How far back the CUSUM state is looked up (a cohort silent for longer starts again at 0).
STATE_LOOKBACK_DAYS = 60


@dataclass
class Verdict:
    """One monitor's verdict on one cohort x signal of the day.

    ``judged`` is False when the row was not tested (too little volume, no reference yet):
    such a day neither counts as recovery nor breaks a count. ``band_fired`` /
    ``cusum_fired`` are the rules; ``in_control`` means quiet *and* the CUSUM at or below its
    release level. Values are on the signal's own scale (a rate, ms, tokens)."""

    monitor: Monitor
    row: SignalRow
    side: str
    judged: bool = False
    observed: float | None = None
    center: float | None = None
    band_low: float | None = None
    band_high: float | None = None
    band_alpha: float = 0.0
    pvalue: float | None = None
    score: float | None = None
    cusum: float = 0.0
    cusum_lower: float = 0.0
    cusum_h: float | None = None
    band_fired: bool = False
    cusum_fired: bool = False
    in_control: bool = True
    reference: DriftReference | None = None

    @property
    def rules(self) -> list[str]:
        return [name for name, on in (("band", self.band_fired), ("cusum", self.cusum_fired)) if on]

    def evidence(self, day: date) -> dict[str, Any]:
        """What the API and webhook show of why the alert is open (JSON-ready)."""
        ref = self.reference
        release = None if self.cusum_h is None else float(release_level(self.cusum_h))
        added = None
        if ref is not None:
            added = next(
                (
                    c
                    for c in ref.cohorts_added
                    if (c.dimension, c.value) == (self.row.dimension, self.row.value)
                ),
                None,
            )
        return _finite(
            {
                "day": day.isoformat(),
                "checkpoint_id": self.row.checkpoint_id,
                "rules": self.rules,
                "observed": self.observed,
                "volume": self.row.denominator,
                "band": {
                    "low": self.band_low,
                    "high": self.band_high,
                    "alpha": self.band_alpha,
                    "p_value": self.pvalue,
                    "side": self.side,
                },
                "cusum": {
                    "statistic": max(self.cusum, self.cusum_lower),
                    "threshold": self.cusum_h,
                    "release": release,
                    "k": DEFAULT_K,
                    "score": self.score,
                },
                "reference": None
                if ref is None
                else {
                    "version": ref.version,
                    "checkpoint_id": ref.checkpoint_id,
                    "checkpoint_version": ref.checkpoint.version,
                    "first_day": ref.first_day.isoformat(),
                    "last_day": ref.last_day.isoformat(),
                    "days": len(ref.days),
                    "trigger": ref.trigger,
                    "center": self.center,
                    # The cohort's own window when its entries were added after the freeze.
                    "cohort_window": None
                    if added is None
                    else {
                        "first_day": added.first_day.isoformat(),
                        "last_day": added.last_day.isoformat(),
                        "days": len(added.days),
                        "added_on": added.added_on.isoformat(),
                    },
                },
            }
        )


def stored_verdict(session: Session, monitor: Monitor, judgement: DriftJudgement) -> Verdict:
    """A verdict as `_store` kept it (drift_judgements), CUSUM as carried forward since: what
    an alert shows of a day it judged when that day's verdict is not at hand (a rerun of an
    earlier day moved its statistic)."""
    reference = None
    if judgement.reference_version is not None:
        reference = session.get(
            DriftReference,
            (judgement.project_id, judgement.model_id, judgement.reference_version),
        )
    row = SignalRow(
        model_id=judgement.model_id,
        checkpoint_id=judgement.checkpoint_id,
        signal=judgement.signal,
        dimension=judgement.dimension,
        value=judgement.value,
        numerator=(judgement.observed or 0.0) * judgement.volume,
        denominator=judgement.volume,
        rate=judgement.observed,
    )
    return Verdict(
        monitor=monitor,
        row=row,
        side=judgement.side,
        judged=True,
        observed=judgement.observed,
        center=judgement.center,
        band_low=judgement.band_low,
        band_high=judgement.band_high,
        band_alpha=judgement.band_alpha,
        pvalue=judgement.pvalue,
        score=judgement.score,
        cusum=judgement.cusum,
        cusum_lower=judgement.cusum_lower,
        cusum_h=judgement.cusum_h,
        band_fired=bool(judgement.rules & 1),
        cusum_fired=bool(judgement.rules & 2),
        in_control=judgement.rules == 0
        and (
            judgement.cusum_h is None
            or max(judgement.cusum, judgement.cusum_lower)
            <= float(release_level(judgement.cusum_h))
        ),
        reference=reference,
    )


def shows_shift_alone(
    session: Session, model: Model, since: date, day: date, verdict: Verdict
) -> bool:
    """Whether the checkpoint of `verdict`'s row shows the shift on its own evidence: the band
    fired on its day, or a CUSUM restarted at 0 on its own days (the stored scores of the
    cohort x signal from the newest run of days it served, on or after `since`, through
    `day`, stored by judge_day before alerts read them) exceeds today's h.

    An alert's statistic carries the evidence of the checkpoint that showed the shift, and
    decays by about k a day after a rollback cures it; one day's z > k on the checkpoint rolled
    back to (about 16% of clean days) lifts it a little and is no evidence about that
    checkpoint. Until 2026-12-01 such a day moved the alert onto the clean champion (28% of
    simulated rollbacks): the restarted CUSUM needs what any new alert needs, S > h."""
    if verdict.band_fired:
        return True
    if verdict.cusum_h is None:
        return False
    row = verdict.row
    days = session.execute(
        select(DriftJudgement.checkpoint_id, DriftJudgement.score, DriftJudgement.cusum_h)
        .where(
            *cohort_judgements(model, row.signal, row.dimension, row.value),
            DriftJudgement.day >= since,
            DriftJudgement.day <= day,
        )
        .order_by(DriftJudgement.day.desc())
    ).all()
    own = []
    for checkpoint_id, score, h in days:
        if checkpoint_id != row.checkpoint_id:
            break
        own.append((np.nan if score is None else score, np.inf if h is None else h))
    upper = lower = np.zeros(1)
    for score, h in reversed(own):
        upper = cusum_update(upper, score, DEFAULT_K, h + DEFAULT_HEADROOM)
        if verdict.side == "two-sided":
            lower = cusum_update(lower, -score, DEFAULT_K, h + DEFAULT_HEADROOM)
    return bool(max(float(upper[0]), float(lower[0])) > verdict.cusum_h)


def _finite(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null (JSONB and strict parsers refuse them)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class DayJudgement:
    verdicts: list[Verdict]
    # Cohorts that had data the day, whether judged or not: the rest had no data.
    seen: set[tuple[str, str, str]]
    # The model's monitors as the day was judged (alerts.py: which monitor judges a cohort).
    monitors: Sequence[Monitor]


def pick_monitor(
    monitors: Sequence[Monitor], signal: str, dimension: str, value: str
) -> Monitor | None:
    """The most specific enabled monitor for a cohort: (dimension, value) > dimension > all."""
    best: tuple[int, int, Monitor] | None = None
    for monitor in monitors:
        if not monitor.enabled or monitor.signal != signal:
            continue
        if monitor.dimension is not None and monitor.dimension != dimension:
            continue
        if monitor.value is not None and monitor.value != value:
            continue
        rank = (monitor.dimension is not None) + (monitor.value is not None)
        if best is None or (rank, monitor.id) > best[:2]:
            best = (rank, monitor.id, monitor)
    return best[2] if best else None


def declared_high_risk(session: Session, project_id: int) -> set[tuple[str, str]]:
    """(dimension, value) cohorts any dataset version of the project declares high-risk, in
    NFC as events' cohorts are (a version stored before declarations were normalised may
    hold another form)."""
    out: set[tuple[str, str]] = set()
    for declared in session.scalars(
        select(DatasetVersion.cohort_risk).where(DatasetVersion.project_id == project_id)
    ).all():
        for dimension, values in (declared or {}).items():
            for value, risk in (values or {}).items():
                if risk == "high":
                    out.add((nfc(dimension), nfc(value)))
    return out


def judge_day(
    session: Session,
    model: Model,
    day: date,
    rows: Sequence[SignalRow],
    reference: DriftReference | None,
    high_risk: set[tuple[str, str]],
    daily_alpha: float,
    carry_forward: bool = True,
) -> DayJudgement:
    """The day's verdicts for the model (writes its drift_judgements rows, no commit);
    `daily_alpha` is the project's error budget for the model-day. `carry_forward`: the
    CUSUM of days already judged after this one is recomputed from this day's
    (carry_forward_model); a caller that judges those days next, in order, turns it off.
    job.judge_rows recomputes them again when the day's alerts open one (the later days it
    is open on start from its statistic, _state_under_alert)."""
    session.execute(
        delete(DriftJudgement).where(
            DriftJudgement.project_id == model.project_id,
            DriftJudgement.model_id == model.id,
            DriftJudgement.day == day,
        )
    )
    monitors = session.scalars(
        select(Monitor).where(Monitor.project_id == model.project_id, Monitor.model_id == model.id)
    ).all()
    if not rows:
        if reference is not None and carry_forward:
            carry_forward_model(session, model, day)
        return DayJudgement([], set(), monitors)
    served = served_checkpoint(rows, canary_candidates(session, model, day))
    served_rows = [r for r in rows if r.checkpoint_id == served]
    verdicts = [
        Verdict(monitor, row, _side(monitor))
        for row in served_rows
        if (monitor := pick_monitor(monitors, row.signal, row.dimension, row.value)) is not None
    ]
    _judge_fixed([v for v in verdicts if v.monitor.band.get("type") == "fixed"])
    referenced = [v for v in verdicts if v.monitor.band.get("type") != "fixed"]
    if reference is not None and referenced:
        _judge_against_reference(session, model, day, referenced, reference, high_risk, daily_alpha)
    _store(session, model, day, verdicts)
    if reference is not None and carry_forward:
        carry_forward_model(session, model, day)
    return DayJudgement(verdicts, {(r.signal, r.dimension, r.value) for r in served_rows}, monitors)


def served_checkpoint(rows: Sequence[SignalRow], aside: Collection[int] = ()) -> int:
    """The checkpoint with the most calls that day (ties: the newer id), of those not set
    `aside` (a canary's candidates: canary_candidates) when any of those served; of all
    otherwise. A call counts once per checkpoint, whichever signal it feeds: each
    whole-population rate row carries its checkpoint's event count (extra["events"]); a row's
    own denominator counts only the calls with that signal's fields (those with
    should_refuse for under-refusal, with latency for latency), so taking the last row's
    denominator judged a canary over a larger champion."""
    volumes: dict[int, int] = {}
    for row in rows:
        if row.dimension == "all":
            events = max(row.denominator, int((row.extra or {}).get("events", 0)))
            volumes[row.checkpoint_id] = max(volumes.get(row.checkpoint_id, 0), events)
    if not volumes:
        return rows[0].checkpoint_id
    kept = [checkpoint_id for checkpoint_id in volumes if checkpoint_id not in aside]
    return max(kept or volumes, key=lambda checkpoint_id: (volumes[checkpoint_id], checkpoint_id))


def canary_candidates(session: Session, model: Model, day: date) -> set[int]:
    """The checkpoints that serve `day` as a canary's candidate only: a canary of the model
    for them ran during the day (from its start until it was promoted, or until it ended
    when it was not: stopped, rolled back, decided and never promoted) and they were not the
    model's champion of record at any time of the day. A canary decided 'promote' whose
    promotion never came (refused, or left) ends at its decision (review R2: until its
    promotion, that was for good, so a candidate left serving beside the champion was never
    judged by anything again).

    Their traffic is the canary's, which its own sequential test judges against the
    champion's served calls; the drift job judges the champion. Taking the day's most-served
    checkpoint whatever it was, a canary at 60% of the calls was judged in the champion's
    place, on the champion's reference: a good canary hid the champion's regression (5% ->
    20% refusals on the other 40%: no alert in six days), and a bad one opened the drift
    alert and fed its shift into the cohort's CUSUM, which the champion's days carry on
    (the state is per cohort x signal across checkpoints, judge._previous_state)."""
    start, end = day_bounds(day)
    until = func.coalesce(Canary.promoted_at, Canary.ended_at)
    candidates = set(
        session.scalars(
            select(Canary.checkpoint_id).where(
                Canary.project_id == model.project_id,
                Canary.model_id == model.id,
                Canary.started_at < end,
                or_(until.is_(None), until > start),
            )
        ).all()
    )
    if not candidates:
        return candidates
    champions = {
        period.checkpoint_id
        for period in champion_periods(session, model, day)
        if period.end is None or period.end >= day
    }
    return candidates - champions


def _side(monitor: Monitor) -> str:
    return str(monitor.band.get("side") or "upper")


def _judge_fixed(verdicts: list[Verdict]) -> None:
    for v in verdicts:
        low, high = v.monitor.band.get("low"), v.monitor.band.get("high")
        v.band_low, v.band_high, v.observed = low, high, v.row.rate
        if v.row.denominator < v.monitor.min_volume or v.row.rate is None:
            continue
        v.judged = True
        rate = v.row.rate
        v.band_fired = (low is not None and rate < low) or (high is not None and rate > high)


def _judge_against_reference(
    session: Session,
    model: Model,
    day: date,
    verdicts: list[Verdict],
    reference: DriftReference,
    high_risk: set[tuple[str, str]],
    daily_alpha: float,
) -> None:
    count = len(verdicts)
    pricing = reference.checkpoint.pricing
    held = entries_for_day(reference, day)
    entries: list[Sequence[float] | None] = [
        held.get(stats_key(v.row.signal, v.row.dimension, v.row.value)) for v in verdicts
    ]
    # Cost is judged against the reference at its checkpoint's current prices (a repricing
    # is not a shift); the stored reference itself never changes.
    entries = [
        priced_entry(e, pricing) if v.row.signal in PRICED_SIGNALS else e
        for e, v in zip(entries, verdicts, strict=True)
    ]
    ref = to_reference(entries)
    pvalue = np.full(count, np.nan)
    pmin = np.ones(count)
    score = np.full(count, np.nan)
    within = np.full(count, np.nan)  # mean-type signals: today's within-day variance
    for v in verdicts:
        v.reference = reference
    usable = np.array(
        [
            bool(ref.valid[i]) and v.row.denominator >= v.monitor.min_volume
            for i, v in enumerate(verdicts)
        ],
        dtype=bool,
    )
    # Vectorised per family and side: one call of each statistic for all rows alike.
    for (family, side), rows in _groups(verdicts, usable).items():
        idx = np.array(rows)
        part = _rows(ref, idx)
        if family == "rate":
            x = np.array([round(verdicts[i].row.numerator) for i in rows])
            n = np.array([verdicts[i].row.denominator for i in rows])
            pvalue[idx] = rate_predictive_pvalue(x, n, part, side)
            pmin[idx] = rate_min_pvalue(n, part, side)
            score[idx] = rate_normal_score(x, n, part)
        elif family == "ece":
            bins = np.stack([bin_arrays(verdicts[i].row.extra)[:4] for i in rows], axis=1)
            n_k, sp, sy, spp = bins[0], bins[1], bins[2], bins[3]
            pvalue[idx] = ece_predictive_pvalue(
                n_k, sp, sy, spp, part.center, part.predictive_var(), side
            )
            mid = ece_predictive_pvalue(
                n_k, sp, sy, spp, part.center, part.predictive_var(None), "upper"
            )
            score[idx] = np.clip(stats.norm.isf(mid), -MAX_SCORE, MAX_SCORE)
            pmin[idx] = 0.0
        else:
            pairs = np.array([_mean_signal(verdicts[i].row) for i in rows]).reshape(-1, 2)
            value, var = pairs[:, 0], pairs[:, 1]
            within[idx] = var
            pvalue[idx] = mean_predictive_pvalue(value, var, part, side)
            score[idx] = mean_normal_score(value, var, part)
            pmin[idx] = 0.0
    for i, v in enumerate(verdicts):
        v.judged = bool(np.isfinite(pvalue[i]))
    pmin = np.where(np.isfinite(pvalue), pmin, 1.0)
    judged = np.array([v.judged for v in verdicts])
    previous = _starting_state(session, model, day, reference)
    if not judged.any():
        # Nothing testable (every cohort too small, say): each statistic stays where it
        # stood, as on a day without data, instead of the 0 the verdicts start from.
        for v in verdicts:
            key = (v.row.signal, v.row.dimension, v.row.value)
            v.cusum, kept_lower = previous.get(key, (0.0, 0.0))
            v.cusum_lower = kept_lower if v.side == "two-sided" else 0.0
        return
    weights = budget.hypothesis_weights(
        [v.row.dimension == "all" for v in verdicts],
        [(v.row.dimension, v.row.value) in high_risk for v in verdicts],
    )
    two_sided = np.array([v.side == "two-sided" for v in verdicts])
    sd = reference_error_sd(ref.days_used)
    alloc = budget.allocate(
        weights, pmin, judged, daily_alpha, budget.DEFAULT_BAND_SHARE, DEFAULT_K, 1, sd
    )
    with np.errstate(divide="ignore"):
        arl_two = np.where(
            alloc.cusum_alpha > 0, 2.0 / np.maximum(alloc.cusum_alpha, 1e-300), np.inf
        )
    h = np.where(two_sided, cusum_threshold(arl_two, DEFAULT_K, sd), alloc.cusum_h)
    state = np.array(
        [previous.get((v.row.signal, v.row.dimension, v.row.value), (0.0, 0.0)) for v in verdicts]
    ).reshape(-1, 2)
    upper_prev, lower_prev = state[:, 0], state[:, 1]
    z = np.where(judged, score, np.nan)
    cap = h + DEFAULT_HEADROOM
    upper = cusum_update(upper_prev, z, DEFAULT_K, cap)
    lower = np.where(two_sided, cusum_update(lower_prev, -z, DEFAULT_K, cap), 0.0)
    release = release_level(h, DEFAULT_RELEASE)
    for i, v in enumerate(verdicts):
        v.cusum, v.cusum_lower = float(upper[i]), float(lower[i])
        if not v.judged:
            continue
        v.pvalue = float(pvalue[i])
        v.score = float(score[i])
        v.band_alpha = float(alloc.band_alpha[i])
        v.cusum_h = float(h[i]) if np.isfinite(h[i]) else None
        v.band_fired = bool(pvalue[i] < alloc.band_alpha[i])
        statistic = max(upper[i], lower[i])
        v.cusum_fired = bool(np.isfinite(h[i]) and statistic > h[i])
        v.in_control = bool(statistic <= release[i])
        v.observed = v.row.rate
    judged = np.array([v.judged for v in verdicts], dtype=bool)
    _display(verdicts, ref, judged, alloc.band_alpha, within)


def _family(signal: str) -> str:
    if signal in RATE_SIGNALS:
        return "rate"
    return "ece" if signal == "ece" else "mean"


def _groups(verdicts: list[Verdict], usable: np.ndarray) -> dict[tuple[str, Side], list[int]]:
    """Row indexes of the usable verdicts by (family, side)."""
    groups: dict[tuple[str, Side], list[int]] = {}
    for i, v in enumerate(verdicts):
        if usable[i]:
            side: Side = v.side  # type: ignore[assignment]
            groups.setdefault((_family(v.row.signal), side), []).append(i)
    return groups


def _rows(ref: Reference, idx: np.ndarray) -> Reference:
    """The rows `idx` of a Reference."""
    return Reference(
        center=ref.center[idx],
        between_var=ref.between_var[idx],
        center_var=ref.center_var[idx],
        days_used=ref.days_used[idx],
        days_excluded=ref.days_excluded[idx],
        valid=ref.valid[idx],
    )


def _mean_signal(row: SignalRow) -> tuple[float, float]:
    """(value, within-day variance) of a Brier or latency/token row on its judged scale."""
    if row.signal == "brier_score":
        value, var = brier_day_signal(*bin_arrays(row.extra))
        return float(value), float(var)
    return log_signal_of(
        row.signal,
        row.denominator,
        float((row.extra or {}).get("sum_log", np.nan)),
        float((row.extra or {}).get("sum_log_sq", np.nan)),
    )


def _display(
    verdicts: list[Verdict],
    ref: Reference,
    judged: np.ndarray,
    band_alpha: np.ndarray,
    within: np.ndarray,
) -> None:
    """Reference centre and band edges on each signal's own scale (a rate, ms, tokens), for
    the judged rows; a band only where the row was tested (alpha > 0)."""
    for (family, side), rows in _groups(verdicts, judged).items():
        idx = np.array(rows)
        part = _rows(ref, idx)
        tested = band_alpha[idx] > 0
        if family == "rate":
            n = np.array([verdicts[i].row.denominator for i in rows])
            low, high = rate_predictive_band(n, part, band_alpha[idx], side)
            for j, i in enumerate(rows):
                verdicts[i].center = float(part.center[j])
                if tested[j]:
                    verdicts[i].band_low, verdicts[i].band_high = float(low[j]), float(high[j])
        elif family == "ece":
            for j, i in enumerate(rows):
                verdicts[i].center = float(np.sqrt(max(float(part.center[j]), 0.0)))
        else:
            low, high = mean_predictive_band(within[idx], part, band_alpha[idx], side)
            for j, i in enumerate(rows):
                v = verdicts[i]
                v.center = _shown(v.row.signal, float(part.center[j]))
                if tested[j]:
                    v.band_low = _shown(v.row.signal, float(low[j]))
                    v.band_high = _shown(v.row.signal, float(high[j]))


def _shown(signal: str, x: float) -> float | None:
    """A judged-scale value on the signal's own scale (log scale for latency, tokens, cost)."""
    if not np.isfinite(x):
        return None
    if signal in CONTINUOUS_SIGNALS:
        return shown_from_log(signal, x)
    return x


def _previous_state(
    session: Session, model: Model, day: date, version: int
) -> dict[tuple[str, str, str], tuple[float, float]]:
    """Per cohort x signal, the CUSUM pair after its latest earlier day on this reference."""
    latest = (
        select(
            DriftJudgement.signal,
            DriftJudgement.dimension,
            DriftJudgement.value,
            func.max(DriftJudgement.day).label("day"),
        )
        .where(
            DriftJudgement.project_id == model.project_id,
            DriftJudgement.model_id == model.id,
            DriftJudgement.reference_version == version,
            DriftJudgement.day < day,
            DriftJudgement.day >= day - timedelta(days=STATE_LOOKBACK_DAYS),
        )
        .group_by(DriftJudgement.signal, DriftJudgement.dimension, DriftJudgement.value)
        .subquery()
    )
    rows = session.execute(
        select(
            DriftJudgement.signal,
            DriftJudgement.dimension,
            DriftJudgement.value,
            DriftJudgement.cusum,
            DriftJudgement.cusum_lower,
        )
        .join(
            latest,
            (DriftJudgement.signal == latest.c.signal)
            & (DriftJudgement.dimension == latest.c.dimension)
            & (DriftJudgement.value == latest.c.value)
            & (DriftJudgement.day == latest.c.day),
        )
        .where(
            DriftJudgement.project_id == model.project_id,
            DriftJudgement.model_id == model.id,
        )
    ).all()
    return {(r[0], r[1], r[2]): (float(r[3]), float(r[4])) for r in rows}


def _starting_state(
    session: Session, model: Model, day: date, reference: DriftReference
) -> dict[tuple[str, str, str], tuple[float, float]]:
    """Per cohort x signal, the CUSUM pair `day`'s update against `reference` starts from:
    its latest earlier day on the reference (_previous_state) or, for a cohort under an
    alert open on `day` with no state on it yet, the pair the alert stood on
    (_state_under_alert). The one rule for judging a day and for recomputing the days
    after a rerun (_carry_forward): recomputed from _previous_state alone, the first day
    on a new reference frozen from none of an open alert's days restarted at 0, and with it
    every later day the next new day starts from."""
    previous = _previous_state(session, model, day, reference.version)
    previous.update(_state_under_alert(session, model, day, reference, previous))
    return previous


def _state_under_alert(
    session: Session,
    model: Model,
    day: date,
    reference: DriftReference,
    previous: dict[tuple[str, str, str], tuple[float, float]],
) -> dict[tuple[str, str, str], tuple[float, float]]:
    """Per cohort x signal with an alert open on `day` and no state on `reference` yet, the
    CUSUM pair it had on the reference that judged it last, when `reference` was frozen
    from none of the alert's days (a rebaseline without `accept_alert_days`, a returning
    champion's own reference, a champion change's freeze).

    Open on `day` means opened before it and either unresolved or resolved on `day` or later
    (its span reaches `day`): the answer must not depend on when the day is computed. Until
    2026-12-01 only alerts unresolved *now* counted, so rerunning the first day on a new
    reference after its alert resolved (late events, a backfill) restarted it at 0: S 4.31
    -> 0.43 on that day with nothing changed, its CUSUM rule and the next four days' lost.

    Such a reference is a new estimate of the same normal the shift is measured against,
    not the shift accepted as normal, so the evidence the alert stands on is carried over
    (capped at the new threshold's headroom by the next update). Restarted at 0, the
    statistic sat below its release level for the days it took to climb again, the alert
    resolved `recovered` after `resolve_after_days` of them while the shift went on, and a
    new alert opened days later: a 1.1x refusal shift at 2,000 calls a day, rebaselined
    mid-alert, was "recovered" on the third day and paged again two days after. When the
    window holds alert days, the shift was accepted and the statistic restarts at 0."""
    window = {date.fromisoformat(d) for d in reference.days}
    spans = session.execute(
        select(Alert.signal, Alert.dimension, Alert.value, Alert.day, Alert.last_day).where(
            Alert.project_id == model.project_id,
            Alert.model_id == model.id,
            Alert.day < day,
            or_(
                Alert.status.in_((AlertStatus.open, AlertStatus.acknowledged)),
                Alert.last_day >= day,
            ),
        )
    ).all()
    carried: dict[tuple[str, str, str], tuple[float, float]] = {}
    for signal, dimension, value, first, last in spans:
        key = (signal, dimension, value)
        if key in previous or key in carried or any(first <= d <= last for d in window):
            continue
        state = session.execute(
            select(DriftJudgement.cusum, DriftJudgement.cusum_lower)
            .where(
                *cohort_judgements(model, signal, dimension, value),
                DriftJudgement.reference_version.is_not(None),
                DriftJudgement.reference_version != reference.version,
                DriftJudgement.day < day,
                DriftJudgement.day >= day - timedelta(days=STATE_LOOKBACK_DAYS),
            )
            .order_by(DriftJudgement.day.desc())
            .limit(1)
        ).first()
        if state is not None:
            carried[key] = (float(state[0]), float(state[1]))
    return carried


def carry_forward_after(session: Session, project_id: int, day: date) -> None:
    """Every model's CUSUM of the days judged after `day` recomputed from the days up to it
    (carry_forward_model); no commit. For a backfill stopped by a failing day: the days it
    committed were judged without carrying forward (the backfill meant to judge their next
    days itself)."""
    models = session.scalars(
        select(Model)
        .where(
            Model.project_id == project_id,
            Model.id.in_(
                select(DriftJudgement.model_id).where(
                    DriftJudgement.project_id == project_id, DriftJudgement.day > day
                )
            ),
        )
        .order_by(Model.id)
    ).all()
    for model in models:
        carry_forward_model(session, model, day)


def carry_forward_model(session: Session, model: Model, day: date) -> None:
    """The model's CUSUM of the days judged after `day` recomputed from the days up to it,
    on each reference version those days were judged against, oldest first
    (_carry_forward): the first day on a newer version may start from an older one's
    statistic (_state_under_alert), so a rerun must reach past its own version. Until
    2026-12-01 a rerun recomputed only the days on the rerun day's version: late events
    raising the statistic of the last day before a rebaseline mid-alert (3.31 -> 4.31) left
    the next day at the 3.74 it had built on the incomplete day."""
    versions = session.scalars(
        select(DriftJudgement.reference_version)
        .where(
            DriftJudgement.project_id == model.project_id,
            DriftJudgement.model_id == model.id,
            DriftJudgement.day > day,
        )
        .distinct()
        .order_by(DriftJudgement.reference_version)
    ).all()
    for version in versions:
        if version is not None:  # fixed monitors' rows are judged against no reference
            _carry_forward(session, model, day, version)


def _carry_forward(session: Session, model: Model, day: date, version: int) -> None:
    """Recomputes the CUSUM pair (and its rule) of the days judged after `day` against the
    same reference, in day order, from their stored scores and thresholds.

    Each day's statistic starts from the day before (_starting_state), so rerunning a past
    day for late events changed that day alone, and the next new day started from a state
    built on the old numbers: late evidence of a shift never reached the CUSUM. The later
    days' scores and bands are their own (their data did not change) and their alerts stay
    as they were moved; only the statistic the next days read is brought up to date. A day
    with nothing judged after it costs one query."""
    later = session.execute(
        select(
            DriftJudgement.day,
            DriftJudgement.signal,
            DriftJudgement.dimension,
            DriftJudgement.value,
            DriftJudgement.side,
            DriftJudgement.score,
            DriftJudgement.cusum_h,
            DriftJudgement.rules,
        )
        .where(
            DriftJudgement.project_id == model.project_id,
            DriftJudgement.model_id == model.id,
            DriftJudgement.reference_version == version,
            DriftJudgement.day > day,
        )
        .order_by(DriftJudgement.day)
    ).all()
    if not later:
        return
    reference = session.get(DriftReference, (model.project_id, model.id, version))
    if reference is None:  # reference_version is no foreign key: nothing to start from
        return
    by_day: dict[date, list[Any]] = {}
    for row in later:
        by_day.setdefault(row.day, []).append(row)
    for later_day, rows in by_day.items():
        previous = _starting_state(session, model, later_day, reference)
        state = np.array(
            [previous.get((r.signal, r.dimension, r.value), (0.0, 0.0)) for r in rows]
        ).reshape(-1, 2)
        z = np.array([np.nan if r.score is None else r.score for r in rows], dtype=np.float64)
        h = np.array([np.inf if r.cusum_h is None else r.cusum_h for r in rows], dtype=np.float64)
        two_sided = np.array([r.side == "two-sided" for r in rows])
        cap = h + DEFAULT_HEADROOM
        upper = cusum_update(state[:, 0], z, DEFAULT_K, cap)
        lower = np.where(two_sided, cusum_update(state[:, 1], -z, DEFAULT_K, cap), 0.0)
        fired = np.isfinite(z) & np.isfinite(h) & (np.maximum(upper, lower) > h)
        session.execute(
            update(DriftJudgement),
            [
                {
                    "project_id": model.project_id,
                    "model_id": model.id,
                    "day": later_day,
                    "signal": r.signal,
                    "dimension": r.dimension,
                    "value": r.value,
                    "cusum": float(upper[i]),
                    "cusum_lower": float(lower[i]),
                    "rules": (int(r.rules) & 1) + (2 if fired[i] else 0),
                }
                for i, r in enumerate(rows)
            ],
        )


def _store(session: Session, model: Model, day: date, verdicts: list[Verdict]) -> None:
    rows = [
        {
            "project_id": model.project_id,
            "model_id": model.id,
            "day": day,
            "signal": v.row.signal,
            "dimension": v.row.dimension,
            "value": v.row.value,
            "checkpoint_id": v.row.checkpoint_id,
            "reference_version": v.reference.version if v.reference is not None else None,
            "side": v.side,
            "observed": v.row.rate,
            "volume": v.row.denominator,
            "center": v.center,
            "band_low": v.band_low,
            "band_high": v.band_high,
            "band_alpha": v.band_alpha,
            "pvalue": v.pvalue,
            "score": v.score,
            "cusum": v.cusum,
            "cusum_lower": v.cusum_lower,
            "cusum_h": v.cusum_h,
            "rules": (1 if v.band_fired else 0) + (2 if v.cusum_fired else 0),
        }
        for v in verdicts
    ]
    if rows:
        session.execute(insert(DriftJudgement), rows)
