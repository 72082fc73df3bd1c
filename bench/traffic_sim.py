"""Simulated production traffic, aggregated per day and cohort exactly as the drift SQL does.

Known truth for judging the drift monitors: steady traffic as rough as real traffic, and
injected step shifts and ramps. Pure numpy; deterministic for a given seed (each cohort
draws from its own child stream, so adding a change to one cohort leaves the others' draws
unchanged).

Roughness modelled per cohort x signal:
- day-to-day wobble beyond binomial: the day's true rate is logit-normal around the base
  rate with relative SD ``wobble`` (logit SD wobble / (1 - p)), heavier-tailed than a beta;
  a cohort may have a wobble of its own (``Cohort.wobble``: cohorts that differ in wobble);
- weekday cycles: rates x (1 + A cos(2 pi (day + phase) / 7)), volume x (1 + 3A cos(...));
- volume swings: the day's volume is Poisson around base x weekday x lognormal(volume_sd);
- occasional zero-volume days (``Cohort.zero_day_prob``);
- calibration: a labelled fraction of events carries a probability p ~ Beta(2, 3) whose
  true event probability is expit(logit(p) + miscalibration + daily wobble);
- latency and tokens: row-level log-normal with a 3% slow/long tail, a daily wobble of the
  log location with SD ``wobble``;
- cost (``TrafficSpec.priced``): each call's tokens at an effective price per token that
  varies from call to call (log-SD 0.25: the input/output mix), in nano-dollars as the SQL
  logs it, so cost inherits the tokens' tail and wobble; drawn from its own stream, so
  pricing a spec leaves every other draw unchanged.
Cohort 0 is "all": the union of the segment cohorts, aggregated from their rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from app.stats.calibration import DEFAULT_BINS, bin_statistics, equal_mass_bins

RATE_SIGNALS = (
    "eval_fail_rate",
    "fallback_rate",
    "refusal_rate",
    "thumbs_down_rate",
    "over_refusal_rate",
    "under_refusal_rate",
)
BASE_RATES: Mapping[str, float] = {
    "eval_fail_rate": 0.10,
    "fallback_rate": 0.03,
    "refusal_rate": 0.05,
    "thumbs_down_rate": 0.20,
    "over_refusal_rate": 0.03,
    "under_refusal_rate": 0.20,
}
FEEDBACK_SHARE = 0.3  # thumbs_down_rate's denominator: events with feedback
SHOULD_REFUSE_SHARE = 0.05  # under_refusal_rate's denominator; the rest is over_refusal's
CONTINUOUS = ("latency", "tokens")
PRICED_CONTINUOUS = (*CONTINUOUS, "cost")
# Effective USD per million tokens of a call (input and output mixed) and the log-SD of the
# mix from call to call: 300 tokens cost about $0.00024.
COST_PRICE, COST_MIX_SD = 0.8, 0.25
# Per metric: the median of x and the SD of log x (tokens: of log(1 + tokens)).
CONTINUOUS_BASE: Mapping[str, tuple[float, float]] = {
    "latency": (800.0, 0.5),
    "tokens": (300.0, 0.6),
}
# Aggregates per continuous metric and day: count, sum log, sum log^2, p50, p95.
MOMENT_FIELDS = ("count", "sum_log", "sum_log_sq", "p50", "p95")
# Calibration sums per bin (calibration.BinStatistics order).
BIN_FIELDS = ("count", "sum_prob", "sum_label", "sum_prob_sq", "sum_prob_label")


@dataclass(frozen=True)
class Cohort:
    name: str
    volume: float
    high_risk: bool = False
    zero_day_prob: float = 0.0
    wobble: float | None = None  # this cohort's own day-to-day wobble (None: the spec's)

    def wobble_in(self, spec: TrafficSpec) -> float:
        return spec.wobble if self.wobble is None else self.wobble


@dataclass(frozen=True)
class Change:
    """From ``start`` the cohort's signal is multiplied by a factor growing linearly from 1 to
    ``multiplier`` over ``ramp_days`` (0: a step), until ``end`` (exclusive; None: forever).

    Rate signals multiply the rate (capped at 0.95); latency and tokens multiply the value.
    """

    cohort: str
    signal: str
    start: int
    multiplier: float
    ramp_days: int = 0
    end: int | None = None

    def factor(self, days: int) -> np.ndarray:
        t = np.arange(days, dtype=np.float64)
        frac = np.clip((t - self.start + 1) / max(self.ramp_days, 1), 0.0, 1.0)
        grow = 1.0 + (self.multiplier - 1.0) * frac
        active = (t >= self.start) & ((t < self.end) if self.end is not None else True)
        return np.where(active, grow, 1.0)


@dataclass(frozen=True)
class TrafficSpec:
    cohorts: tuple[Cohort, ...]
    days: int
    wobble: float = 0.1
    weekday_amplitude: float = 0.05
    volume_sd: float = 0.1
    label_fraction: float = 0.2
    miscalibration: float = 0.2
    changes: tuple[Change, ...] = ()
    seed: int = 0
    base_rates: Mapping[str, float] = field(default_factory=lambda: dict(BASE_RATES))
    priced: bool = False  # also the cost per call (moments["cost"])

    @property
    def continuous(self) -> tuple[str, ...]:
        return PRICED_CONTINUOUS if self.priced else CONTINUOUS


@dataclass(frozen=True)
class Traffic:
    """Per day x cohort (index 0 = "all") aggregates.

    rate_num/rate_den: (days, cohorts, rate signals); calibration: (days, cohorts, 5, bins)
    in BIN_FIELDS order; calibration_fourth: (days, cohorts) sum of (p - y)^4;
    moments[metric]: (days, cohorts, 5) in MOMENT_FIELDS order; true_rate: the day's true
    rates (days, segment cohorts, rate signals) before binomial sampling.
    """

    cohorts: tuple[str, ...]
    high_risk: tuple[bool, ...]
    volume: np.ndarray
    rate_num: np.ndarray
    rate_den: np.ndarray
    calibration: np.ndarray
    calibration_fourth: np.ndarray
    moments: dict[str, np.ndarray]
    true_rate: np.ndarray


def simulate(spec: TrafficSpec) -> Traffic:
    """All days of all cohorts; a pure function of ``spec``."""
    names = [c.name for c in spec.cohorts]
    if "all" in names or len(set(names)) != len(names):
        raise ValueError("cohort names must be unique and not 'all'")
    for change in spec.changes:
        if change.cohort not in names or change.signal not in (*RATE_SIGNALS, *CONTINUOUS):
            raise ValueError(f"unknown cohort or signal in {change}")
    days, n_seg, n_sig = spec.days, len(spec.cohorts), len(RATE_SIGNALS)
    children = np.random.SeedSequence(spec.seed).spawn(n_seg)
    volume = np.zeros((days, n_seg + 1), dtype=np.int64)
    num = np.zeros((days, n_seg + 1, n_sig), dtype=np.int64)
    den = np.zeros((days, n_seg + 1, n_sig), dtype=np.int64)
    true_rate = np.zeros((days, n_seg, n_sig))
    rows_cal: list[list[tuple[np.ndarray, np.ndarray]]] = [[] for _ in range(days)]
    rows_cont: dict[str, list[list[np.ndarray]]] = {
        m: [[] for _ in range(days)] for m in spec.continuous
    }
    cost_children = np.random.SeedSequence([spec.seed, 1]).spawn(n_seg)
    for ci, cohort in enumerate(spec.cohorts):
        rng = np.random.default_rng(children[ci])
        cost_rng = np.random.default_rng(cost_children[ci])
        n = _volumes(rng, spec, cohort)
        volume[:, ci + 1] = n
        rates = _true_rates(rng, spec, cohort)
        true_rate[:, ci] = rates
        d = _denominators(rng, n)
        den[:, ci + 1] = d
        num[:, ci + 1] = rng.binomial(d, rates)
        cal_shift = rng.normal(0.0, cohort.wobble_in(spec) / 2.0, days) + spec.miscalibration
        cont_shift = {m: _continuous_location(rng, spec, cohort, m) for m in CONTINUOUS}
        for t in range(days):
            labelled = rng.binomial(n[t], spec.label_fraction)
            p = rng.beta(2.0, 3.0, labelled)
            q = 1.0 / (1.0 + np.exp(-(np.log(p / (1.0 - p)) + cal_shift[t])))
            rows_cal[t].append((p, (rng.random(labelled) < q).astype(np.float64)))
            for m in CONTINUOUS:
                rows_cont[m][t].append(_continuous_rows(rng, m, int(n[t]), cont_shift[m][t]))
            if spec.priced:
                tokens = np.expm1(rows_cont["tokens"][t][-1])
                mix = np.exp(cost_rng.normal(0.0, COST_MIX_SD, tokens.size))
                rows_cont["cost"][t].append(np.log1p(1000.0 * COST_PRICE * tokens * mix))
    volume[:, 0] = volume[:, 1:].sum(1)
    num[:, 0], den[:, 0] = num[:, 1:].sum(1), den[:, 1:].sum(1)
    calibration = np.zeros((days, n_seg + 1, len(BIN_FIELDS), DEFAULT_BINS))
    fourth = np.zeros((days, n_seg + 1))
    moments = {m: np.zeros((days, n_seg + 1, len(MOMENT_FIELDS))) for m in spec.continuous}
    for t in range(days):
        groups_cal = [_concat(rows_cal[t]), *rows_cal[t]]
        for ci, (p, y) in enumerate(groups_cal):
            if p.size:
                s = bin_statistics(p, y, equal_mass_bins(p), DEFAULT_BINS)
                calibration[t, ci] = [
                    s.count,
                    s.sum_prob,
                    s.sum_label,
                    s.sum_prob_sq,
                    s.sum_prob_label,
                ]
                fourth[t, ci] = float(np.sum((p - y) ** 4))
        for m in spec.continuous:
            parts = rows_cont[m][t]
            for ci, x in enumerate([np.concatenate(parts), *parts]):
                moments[m][t, ci] = _moments(x)
    return Traffic(
        cohorts=("all", *names),
        high_risk=(False, *(c.high_risk for c in spec.cohorts)),
        volume=volume,
        rate_num=num,
        rate_den=den,
        calibration=calibration,
        calibration_fourth=fourth,
        moments=moments,
        true_rate=true_rate,
    )


def change_factor(spec: TrafficSpec, cohort: str, signal: str) -> np.ndarray:
    """Product of every change's factor on one cohort x signal, per day."""
    factor = np.ones(spec.days)
    for change in spec.changes:
        if change.cohort == cohort and change.signal == signal:
            factor = factor * change.factor(spec.days)
    return factor


def _weekday(spec: TrafficSpec, phase: float) -> np.ndarray:
    return np.cos(2.0 * np.pi * (np.arange(spec.days) + phase) / 7.0)


def _volumes(rng: np.random.Generator, spec: TrafficSpec, cohort: Cohort) -> np.ndarray:
    cycle = 1.0 + 3.0 * spec.weekday_amplitude * _weekday(spec, 0.0)
    swing = np.exp(rng.normal(-(spec.volume_sd**2) / 2.0, spec.volume_sd, spec.days))
    n = rng.poisson(np.maximum(cohort.volume * cycle * swing, 0.0))
    zero = rng.random(spec.days) < cohort.zero_day_prob
    return np.where(zero, 0, n).astype(np.int64)


def _true_rates(rng: np.random.Generator, spec: TrafficSpec, cohort: Cohort) -> np.ndarray:
    out = np.zeros((spec.days, len(RATE_SIGNALS)))
    for si, signal in enumerate(RATE_SIGNALS):
        base = spec.base_rates[signal]
        cycle = 1.0 + spec.weekday_amplitude * _weekday(spec, rng.uniform(0.0, 7.0))
        mean = np.minimum(base * cycle * change_factor(spec, cohort.name, signal), 0.95)
        logit_sd = cohort.wobble_in(spec) / (1.0 - mean)
        logit = np.log(mean / (1.0 - mean)) + rng.normal(0.0, 1.0, spec.days) * logit_sd
        out[:, si] = 1.0 / (1.0 + np.exp(-logit))
    return out


def _denominators(rng: np.random.Generator, n: np.ndarray) -> np.ndarray:
    feedback = rng.binomial(n, FEEDBACK_SHARE)
    should = rng.binomial(n, SHOULD_REFUSE_SHARE)
    return np.stack([n, n, n, feedback, n - should, should], axis=1)


def _continuous_location(
    rng: np.random.Generator, spec: TrafficSpec, cohort: Cohort, metric: str
) -> np.ndarray:
    median, _ = CONTINUOUS_BASE[metric]
    wobble = rng.normal(0.0, cohort.wobble_in(spec), spec.days)
    cycle = spec.weekday_amplitude * _weekday(spec, rng.uniform(0.0, 7.0))
    return np.log(median) + wobble + cycle + np.log(change_factor(spec, cohort.name, metric))


def _continuous_rows(rng: np.random.Generator, metric: str, n: int, location: float) -> np.ndarray:
    _, sd = CONTINUOUS_BASE[metric]
    log_x = location + sd * rng.standard_normal(n) + np.where(rng.random(n) < 0.03, 1.0, 0.0)
    if metric == "tokens":
        return np.log1p(np.round(np.expm1(np.maximum(log_x, 0.0))))
    return log_x


def _moments(log_x: np.ndarray) -> list[float]:
    if log_x.size == 0:
        return [0.0, 0.0, 0.0, 0.0, 0.0]
    p50, p95 = np.quantile(log_x, [0.5, 0.95])
    # The SQL stores quantiles of x itself; tokens' x is 1 + tokens (see continuous.py).
    return [
        float(log_x.size),
        float(log_x.sum()),
        float((log_x**2).sum()),
        np.exp(p50),
        np.exp(p95),
    ]


def _concat(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([p for p, _ in parts]), np.concatenate([y for _, y in parts])
