"""Are the drift alerts right? False alerts, detection and persistence on simulated known truth.

Two engines judge the same simulated traffic (bench/traffic_sim.py): ``judge_day`` below,
the pure statistics of app/stats in memory (fast: many seeds), and, under "daily_job", the
product's daily job on a migrated database (bench/alerts_job.py: references frozen by the
job, judgements and CUSUM state stored, alerts opened and resolved by app/drift), which is
what the targets are judged on. The two differ in the latency/token quantiles (the product
fits a log-normal to the day's log moments; judge_day uses the day's order statistics).

Scenarios (reference: 28 frozen days after 7 warm-up days; then monitoring days):
- steady: false alerts over 60 days at 0%, 10% and 20% day-to-day relative wobble across
  the 8 cohorts + "all" x 12 signals, and "heterogeneous": segments at 5%, 20% and 25%
  wobble (where pooling the wobble across cohorts could hurt);
- first_day: a 2x refusal-rate step on the 600/day cohort, caught on its first day?
- persistent_1_3x: 1.3x on the 2,000/day cohort for 40 days: days to detect, stays open?
- ramp: refusal 5% -> 10% over 30 days on the 1,200/day cohort: days to detect;
- persistent_2x: 2x on the 1,200/day cohort for 40 days (the issue's case): stays open?
- persistent_2x_600: the first-day step held for 40 days: the share caught within 1, 2, 3
  ... days (every shift scenario reports ``detected_within_days``).

    nice .venv/bin/python bench/alerts.py [--quick] [--seeds N] [--steady-seeds N]
        [--job-only] [--job-seeds N] [--job-steady-seeds N] [--url postgresql://...]
        [--no-job] [--no-pool]

``--no-job`` skips the daily-job scenarios; ``--no-pool`` (in memory) freezes each row's own
tau^2, as before the wobble was pooled across cohorts (app/stats/pooling.py).

Prints one JSON object. Targets: 0 false alerts in 60 steady days at 0-10% wobble, <= 1
at 20%; 2x at 600/day on day one in >= 85% of seeds; a persistent shift stays alerted
while it lasts; a 5 -> 10% ramp within 15 days; 1.3x at 2,000/day within 10 days.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.stats import alerting, budget
from app.stats.bands import (
    MAX_SCORE,
    estimate_rate_reference,
    rate_min_pvalue,
    rate_normal_score,
    rate_predictive_pvalue,
)
from app.stats.calibration import (
    brier_day_signal,
    ece_predictive_pvalue,
    estimate_ece_reference,
)
from app.stats.continuous import (
    estimate_mean_reference,
    log_moments,
    log_signal,
    mean_normal_score,
    mean_predictive_pvalue,
)
from app.stats.cusum import (
    DEFAULT_HEADROOM,
    DEFAULT_K,
    DEFAULT_RELEASE,
    cusum_update,
    reference_error_sd,
    release_level,
)
from app.stats.reference import Reference
from bench import alerts_job
from bench.traffic_sim import (
    CONTINUOUS,
    PRICED_CONTINUOUS,
    RATE_SIGNALS,
    Change,
    Cohort,
    Traffic,
    TrafficSpec,
    simulate,
)

COHORTS = (
    Cohort("s100", 100, zero_day_prob=0.02),
    Cohort("s250", 250, zero_day_prob=0.01),
    Cohort("s600", 600, high_risk=True),
    Cohort("s1200", 1200),
    Cohort("s2000", 2000),
    Cohort("s3000", 3000, high_risk=True),
    Cohort("s6000", 6000),
    Cohort("s12000", 12000),
)
HETEROGENEOUS = tuple(
    Cohort(c.name, c.volume, c.high_risk, c.zero_day_prob, wobble)
    for c, wobble in zip(COHORTS, (0.05, 0.2, 0.05, 0.2, 0.05, 0.2, 0.05, 0.25), strict=True)
)
"""The steady scenario where pooling the wobble across cohorts can hurt: half the segments
wobble by 5%, half by 20%, and the largest by 25%."""
WARMUP, MONITOR = 7, 60
WITHIN_DAYS = (1, 2, 3, 5, 10, 15)
"""Detection delays each shift scenario reports the share of seeds caught within."""


@dataclass(frozen=True)
class Config:
    alpha: float = budget.DEFAULT_DAILY_ALPHA
    band_share: float = budget.DEFAULT_BAND_SHARE
    k: float = DEFAULT_K
    headroom: float = DEFAULT_HEADROOM
    release: float = DEFAULT_RELEASE
    resolve_after: int = alerting.DEFAULT_RESOLVE_AFTER
    reference_days: int = 28
    population_weight: float = budget.POPULATION_WEIGHT
    high_risk_weight: float = budget.HIGH_RISK_WEIGHT
    priced: bool = False  # the model's checkpoints have prices: cost is judged too
    pool: bool = True  # tau^2 partially pooled across the segments of a signal (pooling.py)

    @property
    def continuous_signals(self) -> tuple[str, ...]:
        metrics = PRICED_CONTINUOUS if self.priced else CONTINUOUS
        return tuple(f"{m}_{q}" for m in metrics for q in ("p50", "p95"))

    @property
    def signals(self) -> tuple[str, ...]:
        """Every hypothesis of a cohort, in the order of the state arrays' columns."""
        return (*RATE_SIGNALS, "brier_score", "ece", *self.continuous_signals)


@dataclass(frozen=True)
class Frozen:
    """The frozen references (cohorts x signals of each family) and hypothesis weights."""

    rates: Reference
    brier: Reference
    ece: Reference
    continuous: dict[str, Reference]
    weights: np.ndarray  # (cohorts, Config.signals)
    reference_sd: np.ndarray  # the frozen centre's error in predictive SDs (cohorts, signals)


@dataclass
class State:
    """What the daily job persists per cohort x signal (arrays (cohorts, Config.signals))."""

    cusum: np.ndarray
    is_open: np.ndarray
    days_in_control: np.ndarray

    @classmethod
    def fresh(cls, shape: tuple[int, int]) -> State:
        return cls(np.zeros(shape), np.zeros(shape, bool), np.zeros(shape, np.int64))


@dataclass
class DayResult:
    action: np.ndarray
    rules: np.ndarray
    pvalue: np.ndarray
    band_alpha: np.ndarray
    cusum: np.ndarray
    cusum_h: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)


def _cal_fields(
    cal: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return cal[..., 0, :], cal[..., 1, :], cal[..., 2, :], cal[..., 3, :], cal[..., 4, :]


def _continuous_day(moments: np.ndarray, quantile: str) -> tuple[np.ndarray, np.ndarray]:
    mean, var = log_moments(moments[..., 0], moments[..., 1], moments[..., 2])
    column = 3 if quantile == "p50" else 4
    return log_signal(quantile, moments[..., 0], mean, var, moments[..., column])  # type: ignore[arg-type]


def freeze(traffic: Traffic, days: slice, cfg: Config) -> Frozen:
    """References from the given reference days (vectorised over cohorts)."""
    num = np.moveaxis(traffic.rate_num[days], 0, -1)  # (cohorts, signals, days)
    den = np.moveaxis(traffic.rate_den[days], 0, -1)
    c, s, d = num.shape
    # The daily job pools the segments of one signal ("segment" is one dimension); "all" is
    # a dimension of its own, so it keeps its own estimate.
    segment = np.where(np.arange(c) == 0, -1, 0)
    rate_groups = np.where(segment[:, None] < 0, -1, np.arange(s)[None, :]).reshape(-1)
    rates = estimate_rate_reference(
        num.reshape(c * s, d), den.reshape(c * s, d), groups=rate_groups if cfg.pool else None
    )
    groups = segment if cfg.pool else None
    cal = traffic.calibration[days]
    brier, brier_var = brier_day_signal(*_cal_fields(cal), traffic.calibration_fourth[days])
    cont = {}
    for name in cfg.continuous_signals:
        m, q = name.rsplit("_", 1)
        value, var = _continuous_day(traffic.moments[m][days], q)
        cont[name] = estimate_mean_reference(value.T, var.T, groups=groups)
    weights = budget.hypothesis_weights(
        np.arange(c)[:, None] == 0,
        np.array(traffic.high_risk)[:, None],
        np.ones(len(cfg.signals)),
        cfg.population_weight,
        cfg.high_risk_weight,
    )
    brier_ref = estimate_mean_reference(brier.T, brier_var.T, groups=groups)
    ece_ref = estimate_ece_reference(*(np.moveaxis(f, 0, 1) for f in _cal_fields(cal)[:4]))
    days_used = np.concatenate(
        [
            rates.days_used.reshape(c, s),
            brier_ref.days_used[:, None],
            ece_ref.days_used[:, None],
            *(cont[name].days_used[:, None] for name in cfg.continuous_signals),
        ],
        axis=1,
    )
    return Frozen(
        rates=rates,
        brier=brier_ref,
        ece=ece_ref,
        continuous=cont,
        weights=weights,
        reference_sd=reference_error_sd(days_used),
    )


def judge_day(state: State, frozen: Frozen, traffic: Traffic, day: int, cfg: Config) -> DayResult:
    """One model-day: p-values and scores per cohort x signal, one budget, CUSUM, alert step.

    The function the integration replaces with the daily job (same inputs from the DB:
    yesterday's state, the frozen reference, today's aggregates).
    """
    n_c, n_r = traffic.rate_num.shape[1:]
    shape = (n_c, len(cfg.signals))
    pvalue = np.full(shape, np.nan)
    pmin = np.ones(shape)
    z = np.full(shape, np.nan)
    # Rates.
    x, n = traffic.rate_num[day].ravel(), traffic.rate_den[day].ravel()
    pvalue[:, :n_r] = rate_predictive_pvalue(x, n, frozen.rates).reshape(n_c, n_r)
    pmin[:, :n_r] = rate_min_pvalue(n, frozen.rates).reshape(n_c, n_r)
    z[:, :n_r] = rate_normal_score(x, n, frozen.rates).reshape(n_c, n_r)
    # Brier (mean-type) and ECE (scaled chi-square).
    cal = _cal_fields(traffic.calibration[day])
    b, bv = brier_day_signal(*cal, traffic.calibration_fourth[day])
    pvalue[:, n_r] = mean_predictive_pvalue(b, bv, frozen.brier)
    z[:, n_r] = mean_normal_score(b, bv, frozen.brier)
    ece_p = ece_predictive_pvalue(*cal[:4], frozen.ece.center, frozen.ece.predictive_var())
    ece_p = np.where(frozen.ece.valid, ece_p, np.nan)
    pvalue[:, n_r + 1] = ece_p
    ece_p_score = ece_predictive_pvalue(
        *cal[:4], frozen.ece.center, frozen.ece.predictive_var(None)
    )
    ece_p_score = np.where(frozen.ece.valid, ece_p_score, np.nan)
    z[:, n_r + 1] = np.clip(stats.norm.isf(ece_p_score), -MAX_SCORE, MAX_SCORE)
    # Latency, tokens and (priced) cost.
    for j, name in enumerate(cfg.continuous_signals):
        metric, q = name.rsplit("_", 1)
        value, var = _continuous_day(traffic.moments[metric][day], q)
        ref = frozen.continuous[name]
        pvalue[:, n_r + 2 + j] = mean_predictive_pvalue(value, var, ref)
        z[:, n_r + 2 + j] = mean_normal_score(value, var, ref)
    has_data = np.isfinite(pvalue)
    pmin[:, n_r:] = np.where(has_data[:, n_r:], 0.0, 1.0)
    k = cfg.k
    alloc = budget.allocate(
        frozen.weights, pmin, has_data, cfg.alpha, cfg.band_share, k, 1, frozen.reference_sd
    )
    band_fired = has_data & (np.nan_to_num(pvalue, nan=1.0) < alloc.band_alpha)
    cusum = cusum_update(state.cusum, z, k, alloc.cusum_h + cfg.headroom)
    cusum_fired = has_data & (cusum > alloc.cusum_h)
    cusum_quiet = cusum <= release_level(alloc.cusum_h, cfg.release)
    step = alerting.alert_step(
        state.is_open,
        state.days_in_control,
        band_fired,
        cusum_fired,
        has_data,
        cfg.resolve_after,
        cusum_quiet,
    )
    state.cusum, state.is_open, state.days_in_control = cusum, step.is_open, step.days_in_control
    return DayResult(step.action, step.rules, pvalue, alloc.band_alpha, cusum, alloc.cusum_h)


def run(spec: TrafficSpec, cfg: Config, monitor_days: int) -> list[DayResult]:
    traffic = simulate(spec)
    frozen = freeze(traffic, slice(WARMUP, WARMUP + cfg.reference_days), cfg)
    state = State.fresh((len(traffic.cohorts), len(cfg.signals)))
    start = WARMUP + cfg.reference_days
    return [judge_day(state, frozen, traffic, start + t, cfg) for t in range(monitor_days)]


def _spec(
    cfg: Config,
    seed: int,
    wobble: float,
    days: int,
    changes: tuple[Change, ...] = (),
    cohorts: tuple[Cohort, ...] = COHORTS,
) -> TrafficSpec:
    return TrafficSpec(
        cohorts,
        WARMUP + cfg.reference_days + days,
        wobble=wobble,
        changes=changes,
        seed=seed,
        priced=cfg.priced,
    )


def _wilson(successes: int, n: int) -> list[float]:
    if n == 0:
        return [0.0, 1.0]
    z = 1.959964
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(centre - half, 3), round(centre + half, 3)]


def _poisson_mean_ci(total: int, runs: int) -> list[float]:
    low = stats.chi2.ppf(0.025, 2 * total) / 2 if total else 0.0
    high = stats.chi2.ppf(0.975, 2 * total + 2) / 2
    return [round(low / runs, 3), round(high / runs, 3)]


STEADY = {
    "wobble_0.0": (0.0, COHORTS, 0),
    "wobble_0.1": (0.1, COHORTS, 0),
    "wobble_0.2": (0.2, COHORTS, 1),
    "heterogeneous": (0.1, HETEROGENEOUS, 1),
}
"""The steady scenarios: (the spec's wobble, the cohorts, the target false alerts per seed).
The heterogeneous one's target is the 20% level's, since half its cohorts wobble by 20%+."""


def steady(seeds: int, cfg: Config) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, (wobble, cohorts, target) in STEADY.items():
        per_seed, by_rule = [], {"band": 0, "cusum": 0, "both": 0}
        by_signal: dict[str, int] = {}
        for seed in range(seeds):
            results = run(_spec(cfg, 1000 + seed, wobble, MONITOR, (), cohorts), cfg, MONITOR)
            opened = 0
            for r in results:
                hits = r.action == alerting.OPEN
                opened += int(hits.sum())
                for rule, name in ((1, "band"), (2, "cusum"), (3, "both")):
                    by_rule[name] += int((hits & (r.rules == rule)).sum())
                for j in np.flatnonzero(hits.any(0)):
                    name = cfg.signals[j]
                    by_signal[name] = by_signal.get(name, 0) + int(hits[:, j].sum())
            per_seed.append(opened)
        total = int(sum(per_seed))
        out[label] = {
            "seeds": seeds,
            "false_alerts_per_seed": per_seed,
            "mean_per_60_days": round(total / seeds, 3),
            "mean_ci95": _poisson_mean_ci(total, seeds),
            "target_per_seed": target,
            "seeds_meeting_target": sum(1 for v in per_seed if v <= target),
            "by_rule": by_rule,
            "by_signal": by_signal,
        }
    return out


def _first_open(results: list[DayResult], cohort: int, signal: int, start: int) -> int | None:
    for t in range(start, len(results)):
        if results[t].action[cohort, signal] in (alerting.OPEN, alerting.STAY):
            return t - start
    return None


def _weekday_lead(seed: int) -> int:
    """Monitoring days before the first-day step starts: seed by seed it falls on each
    weekday in turn, since volume follows a weekly cycle (±15%) and a step on the busiest
    weekday is caught more often than on the quietest."""
    return seed % 7


def first_day(seeds: int, cfg: Config, wobble: float) -> dict[str, Any]:
    cohort, signal = 1 + [c.name for c in COHORTS].index("s600"), cfg.signals.index("refusal_rate")
    caught, levels = 0, []
    for seed in range(seeds):
        lead = _weekday_lead(seed)
        change = Change("s600", "refusal_rate", cfg.reference_days + WARMUP + lead, 2.0)
        results = run(_spec(cfg, 2000 + seed, wobble, lead + 1, (change,)), cfg, lead + 1)
        caught += int(results[lead].action[cohort, signal] == alerting.OPEN)
        levels.append(float(results[lead].band_alpha[cohort, signal]))
    return {
        "cohort_volume": 600,
        "base_rate": 0.05,
        "band_alpha_median": float(np.median(levels)),
        "high_risk": True,
        "wobble": wobble,
        "seeds": seeds,
        "caught_day_one": caught,
        "rate": round(caught / seeds, 3),
        "ci95": _wilson(caught, seeds),
    }


SHIFT_START, SHIFT_LENGTH, AFTER_SHIFT = 10, 40, 15
"""Monitoring days before a shift scenario's change, its length, and the days watched after."""


@dataclass(frozen=True)
class Shift:
    """A refusal-rate change on one cohort from monitoring day SHIFT_START for SHIFT_LENGTH
    days (a ramp reaches its multiplier after ramp_days), then AFTER_SHIFT days back to
    normal; ``target_days`` is the detection delay the scenario is judged by."""

    cohort: str
    multiplier: float
    ramp_days: int
    target_days: int

    def change(self, cfg: Config) -> Change:
        start = WARMUP + cfg.reference_days + SHIFT_START
        return Change(
            self.cohort,
            "refusal_rate",
            start,
            self.multiplier,
            self.ramp_days,
            start + SHIFT_LENGTH,
        )


SHIFTS = {
    "persistent_1_3x_2000": Shift("s2000", 1.3, 0, 10),
    "ramp_5_to_10pct_1200": Shift("s1200", 2.0, 30, 15),
    "persistent_2x_1200": Shift("s1200", 2.0, 0, 3),
    "persistent_2x_600": Shift("s600", 2.0, 0, 1),
}
"""The shift scenarios, in memory and through the daily job alike."""


@dataclass
class ShiftTally:
    """What a shift scenario saw, seed by seed: the days to detect (shifted days seen at the
    first alert, 1 = its first day; inf = missed within the shift), the rule that opened each
    first alert, how many stayed open to the shift's end, and the days each took to resolve
    after it."""

    delays: list[float] = field(default_factory=list)
    rules: dict[str, int] = field(default_factory=lambda: {"band": 0, "cusum": 0, "both": 0})
    stayed: int = 0
    resolved_after: list[int] = field(default_factory=list)

    def summary(self, shift: Shift, wobble: float) -> dict[str, Any]:
        """The scenario's JSON: the in-memory and the daily-job runs report alike."""
        seeds = len(self.delays)
        arr = np.array(self.delays)
        detected = int(np.isfinite(arr).sum())
        within = int((arr <= shift.target_days).sum())

        def q(level: float) -> float | None:
            value = float(np.quantile(arr, level, method="inverted_cdf"))
            return value if np.isfinite(value) else None

        return {
            "cohort": shift.cohort,
            "volume": next(c.volume for c in COHORTS if c.name == shift.cohort),
            "base_rate": 0.05,
            "multiplier": shift.multiplier,
            "ramp_days": shift.ramp_days,
            "shift_days": SHIFT_LENGTH,
            "wobble": wobble,
            "seeds": seeds,
            "detected": detected,
            "days_to_detect": {"median": q(0.5), "p90": q(0.9), "max": q(1.0)},
            "target_days": shift.target_days,
            "within_target": within,
            "within_target_rate": round(within / seeds, 3),
            "within_target_ci95": _wilson(within, seeds),
            "detected_within_days": {
                str(days): round(int((arr <= days).sum()) / seeds, 3) for days in WITHIN_DAYS
            },
            "detected_by_rule": self.rules,
            "stayed_open_to_end": self.stayed,
            "stayed_open_rate": round(self.stayed / max(detected, 1), 3),
            "stayed_open_ci95": _wilson(self.stayed, detected),
            "resolved_within_15_days_after_end": len(self.resolved_after),
            "median_days_to_resolve_after_end": (
                float(np.median(self.resolved_after)) if self.resolved_after else None
            ),
        }


def persistent(seeds: int, cfg: Config, wobble: float, shift: Shift) -> dict[str, Any]:
    """A shift judged in memory: when it is first alerted, whether the alert stays open to
    its end, and when it resolves after."""
    start, end, days = (
        SHIFT_START,
        SHIFT_START + SHIFT_LENGTH,
        SHIFT_START + SHIFT_LENGTH + AFTER_SHIFT,
    )
    cohort = 1 + [c.name for c in COHORTS].index(shift.cohort)
    signal = cfg.signals.index("refusal_rate")
    tally = ShiftTally()
    for seed in range(seeds):
        results = run(_spec(cfg, 3000 + seed, wobble, days, (shift.change(cfg),)), cfg, days)
        delay = _first_open(results, cohort, signal, start)
        if delay is None or delay >= SHIFT_LENGTH:
            tally.delays.append(np.inf)
            continue
        tally.delays.append(delay + 1.0)
        rule = int(results[start + delay].rules[cohort, signal])
        tally.rules[{1: "band", 2: "cusum", 3: "both"}.get(rule, "band")] += 1
        open_days = [
            results[t].action[cohort, signal] in (alerting.OPEN, alerting.STAY)
            for t in range(start + delay, end)
        ]
        tally.stayed += int(all(open_days))
        for t in range(end, len(results)):
            if results[t].action[cohort, signal] == alerting.RESOLVE:
                tally.resolved_after.append(t - end + 1)
                break
    return tally.summary(shift, wobble)


# --- The same scenarios through the real daily job on a database (bench/alerts_job.py) -----


def _job_alerts(sessions: Any, spec: TrafficSpec) -> list[alerts_job.JobAlert]:
    return alerts_job.run(sessions, spec)


def job_steady(sessions: Any, seeds: int, cfg: Config) -> dict[str, Any]:
    start = WARMUP + cfg.reference_days
    out: dict[str, Any] = {}
    for label, (wobble, cohorts, target) in STEADY.items():
        per_seed, by_signal, by_rule = [], {}, {"band": 0, "cusum": 0, "both": 0}
        for seed in range(seeds):
            found = [
                a
                for a in _job_alerts(
                    sessions, _spec(cfg, 1000 + seed, wobble, MONITOR, (), cohorts)
                )
                if a.opened >= start
            ]
            per_seed.append(len(found))
            for a in found:
                by_signal[a.signal] = by_signal.get(a.signal, 0) + 1
                by_rule["both" if len(a.rules) == 2 else (a.rules or ("band",))[0]] += 1
        total = sum(per_seed)
        out[label] = {
            "seeds": seeds,
            "false_alerts_per_seed": per_seed,
            "mean_per_60_days": round(total / seeds, 3),
            "mean_ci95": _poisson_mean_ci(total, seeds),
            "target_per_seed": target,
            "seeds_meeting_target": sum(1 for v in per_seed if v <= target),
            "by_rule": by_rule,
            "by_signal": by_signal,
        }
    return out


def job_first_day(sessions: Any, seeds: int, cfg: Config, wobble: float) -> dict[str, Any]:
    caught = 0
    for seed in range(seeds):
        lead = _weekday_lead(seed)
        day = cfg.reference_days + WARMUP + lead
        change = Change("s600", "refusal_rate", day, 2.0)
        found = _job_alerts(sessions, _spec(cfg, 2000 + seed, wobble, lead + 1, (change,)))
        caught += int(
            any(
                a.signal == "refusal_rate" and a.cohort == "s600" and a.opened == day for a in found
            )
        )
    return {
        "cohort_volume": 600,
        "base_rate": 0.05,
        "high_risk": True,
        "wobble": wobble,
        "seeds": seeds,
        "caught_day_one": caught,
        "rate": round(caught / seeds, 3),
        "ci95": _wilson(caught, seeds),
        "target_rate": 0.85,
    }


def job_persistent(
    sessions: Any, seeds: int, cfg: Config, wobble: float, shift: Shift
) -> dict[str, Any]:
    """As ``persistent``, read from the alerts the daily job left: the first alert of the
    cohort's refusal rate at or after the change; whether it covered every day to the end."""
    start = WARMUP + cfg.reference_days + SHIFT_START
    end = start + SHIFT_LENGTH - 1
    days = SHIFT_START + SHIFT_LENGTH + AFTER_SHIFT
    tally = ShiftTally()
    for seed in range(seeds):
        found = [
            a
            for a in _job_alerts(
                sessions, _spec(cfg, 3000 + seed, wobble, days, (shift.change(cfg),))
            )
            if a.signal == "refusal_rate" and a.cohort == shift.cohort and a.last >= start
        ]
        first = min(found, key=lambda a: a.opened, default=None)
        if first is None or first.opened >= start + SHIFT_LENGTH:
            tally.delays.append(np.inf)
            continue
        tally.delays.append(max(first.opened - start, 0) + 1.0)
        tally.rules["both" if len(first.rules) == 2 else (first.rules or ("band",))[0]] += 1
        tally.stayed += int(not first.resolved or first.last >= end)
        if first.resolved and first.last >= end:
            tally.resolved_after.append(first.last - end)
    return tally.summary(shift, wobble)


def daily_job(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    """The headline scenarios through app.drift.job.judge_rows on a migrated database."""
    seeds = args.job_seeds
    began = time.perf_counter()
    with alerts_job.database(args.url) as sessions:
        result: dict[str, Any] = {
            "database": "postgresql" if args.url else "sqlite",
            "steady": job_steady(sessions, args.job_steady_seeds, cfg),
            "first_day_2x_600": job_first_day(sessions, args.job_first_day_seeds, cfg, args.wobble),
            **{
                name: job_persistent(sessions, seeds, cfg, args.wobble, shift)
                for name, shift in SHIFTS.items()
            },
        }
    result["wall_seconds"] = round(time.perf_counter() - began, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few seeds: a smoke run")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per detection scenario")
    parser.add_argument("--steady-seeds", type=int, default=None)
    parser.add_argument("--wobble", type=float, default=0.1, help="wobble in detection scenarios")
    parser.add_argument("--reference-days", type=int, default=28)
    parser.add_argument(
        "--job-only", action="store_true", help="only the scenarios through the daily job"
    )
    parser.add_argument("--job-seeds", type=int, default=20, help="seeds per job scenario")
    parser.add_argument("--job-steady-seeds", type=int, default=5)
    parser.add_argument("--job-first-day-seeds", type=int, default=50)
    parser.add_argument("--url", default=None, help="database for the job (default: SQLite)")
    parser.add_argument(
        "--no-job", action="store_true", help="in memory only (skip the daily-job scenarios)"
    )
    parser.add_argument(
        "--no-pool",
        action="store_true",
        help="each row's own tau^2, as before pooling (in memory only: the job pools)",
    )
    parser.add_argument(
        "--priced",
        action="store_true",
        help="the model's checkpoints have prices: cost p50/p95 are judged too (in memory only)",
    )
    args = parser.parse_args()
    if args.job_only and args.priced:
        parser.error("--priced runs in memory only")
    seeds = args.seeds or (10 if args.quick else 50)
    steady_seeds = args.steady_seeds or (2 if args.quick else 10)
    cfg = Config(reference_days=args.reference_days, priced=args.priced, pool=not args.no_pool)
    began = time.process_time()
    if args.job_only:
        print(json.dumps({"daily_job": daily_job(args, cfg)}))
        return
    result: dict[str, Any] = {
        "settings": {
            "cohorts": [
                {
                    "name": c.name,
                    "volume": c.volume,
                    "high_risk": c.high_risk,
                    "zero_day_prob": c.zero_day_prob,
                }
                for c in COHORTS
            ],
            "signals": list(cfg.signals),
            "hypotheses_per_day": (len(COHORTS) + 1) * len(cfg.signals),
            "warmup_days": WARMUP,
            "reference_days": cfg.reference_days,
            "steady_days": MONITOR,
            "daily_alpha": cfg.alpha,
            "band_share": cfg.band_share,
            "cusum_k": cfg.k,
            "cusum_headroom": cfg.headroom,
            "cusum_release_fraction": cfg.release,
            "resolve_after_days": cfg.resolve_after,
            "weights": {
                "all": cfg.population_weight,
                "high_risk": cfg.high_risk_weight,
                "other": 1.0,
            },
            "detection_wobble": args.wobble,
            "pooled_wobble": cfg.pool,
            "quick": args.quick,
        },
        "steady": steady(steady_seeds, cfg),
        "first_day_2x_600": first_day(seeds, cfg, args.wobble),
        "first_day_2x_600_no_wobble": first_day(seeds, cfg, 0.0),
        **{name: persistent(seeds, cfg, args.wobble, shift) for name, shift in SHIFTS.items()},
    }
    result["cpu_seconds"] = round(time.process_time() - began, 1)
    if not (args.priced or args.no_job or args.no_pool):  # the job: the unpriced product's
        result["daily_job"] = daily_job(args, cfg)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
