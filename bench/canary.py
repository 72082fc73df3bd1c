"""How often canary verdicts are right, on simulated traffic whose truth is known.

Traffic is as rough as production: every request has its own difficulty (shared by both
checkpoints' answers to it), rates swing with the time of day, each day has its own level
beyond binomial noise, volume follows a diurnal cycle with day-to-day wobble, and bursts (a
few hours with triple volume and a shifted mix of requests) hit both arms alike. The
candidate serves a random 10% of requests, or answers the champion's requests in shadow.

The decision engine is the real one: the simulated events are counted per look into the
`Counts` the SQL aggregation produces (app.canaries.plan), and app.canaries.evidence's
`judge` and `decide` (what `evaluate` runs) decide at every look; a canary stops at its first
decision. `--end-to-end` also sends one seed's traffic through the real ingest API into a
scratch PostgreSQL schema and checks that `evaluate` counts and decides exactly as the
simulation did, then times `evaluate` and the page's history on a full week of events.

Scenarios (defaults of a canary: six signals, margin 0.01, alpha 0.05, both comparisons):
- null_week: equal quality, 20,000 calls a day for a week, looked at after every 100 calls.
  Wrong rollbacks (target <= 5%), and how often the rollback boundary is ever crossed when the
  canary is not stopped by a promotion (the time-uniform guarantee itself).
- refusal_2x: twice the refusal rate on the candidate's 10% share: share decided rollback
  within one day (target >= 90%).
  Also: how soon the exact alternative for the harm side would have decided.
- refusal_1_5x: the same with a 1.5 times refusal rate (a smaller harm, for the same
  comparison of the two harm-side bounds).
- shadow_2x: the same candidate answering in shadow: share decided rollback within 2,000
  pairs, looked at after every 100 pairs (target >= 90%).
- shadow_null: equal quality in shadow, 20,000 pairs: wrong rollbacks.
- at_margin: a canary guarding the refusal rate only, the candidate worse by exactly the
  margin on it (the least favourable truth for both errors): wrong promotions (bounded by
  alpha / 2, the share of the served comparison) and wrong rollbacks over a week.
- null_refusal_only: equal quality, guarding the refusal rate only: how soon it promotes.

    nice .venv/bin/python bench/canary.py [--seeds 200] [--workers 2] [--end-to-end]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from fastapi.testclient import TestClient
from scratch import BENCH_DATABASE_URL, scratch_schema

from app.canaries import service as canaries
from app.canaries.evidence import decide, judge
from app.canaries.plan import Counts, Plan
from app.canaries.schemas import DEFAULT_ALPHA, DEFAULT_MARGIN, DEFAULT_MIN_HOURS
from app.core.links import Links
from app.core.settings import Settings
from app.drift.signals import RATE_SIGNALS
from app.keys import service as keys
from app.main import create_app
from app.models import Canary
from app.models.project import Role
from app.stats.sequential import rate_bounds

SIGNALS = tuple(RATE_SIGNALS)
# Base rates (fallback is rare, thumbs-down is among feedback only, refusal depends on
# whether the request should be refused).
BASE = {"eval_fail": 0.08, "fallback": 0.02, "refusal": 0.03, "refusal_should": 0.7, "down": 0.15}
SHOULD_REFUSE = 0.05  # share of requests that should be refused
FEEDBACK = 0.3  # share of served answers that get a thumbs up or down
DIFFICULTY = 0.8  # sd of the per-request logit shift (shared by both answers to a request)
DIURNAL_RATE = 0.3  # amplitude of the time-of-day logit swing
DAY_LEVEL = 0.2  # sd of each day's logit level, beyond binomial noise
BURST_HOURS = 0.03  # chance an hour is a burst: triple volume, logit +0.8
Effect = tuple[str, str, float]  # (outcome, "times" | "plus", amount) on the candidate


@dataclass(frozen=True)
class Scenario:
    name: str
    days: float
    effect: Effect | None = None
    shadow: bool = False
    calls_per_day: int = 20_000
    share: float = 0.10
    look_every: int = 100
    max_pairs: int | None = None
    signals: tuple[str, ...] = SIGNALS
    # Also time the alternative the design rejected for the harm side (docs/statistics.md
    # §12.3): an exact union of the two arms' bounds instead of the asymptotic one.
    compare_exact: bool = False


SCENARIOS = {
    "null_week": Scenario("null_week", 7.0),
    "refusal_2x": Scenario("refusal_2x", 1.0, ("refusal", "times", 2.0), compare_exact=True),
    "refusal_1_5x": Scenario("refusal_1_5x", 1.0, ("refusal", "times", 1.5), compare_exact=True),
    "shadow_2x": Scenario("shadow_2x", 1.0, ("refusal", "times", 2.0), True, max_pairs=2000),
    "shadow_null": Scenario("shadow_null", 2.0, None, True, max_pairs=20_000),
    "at_margin": Scenario(
        "at_margin", 7.0, ("refusal", "plus", DEFAULT_MARGIN), signals=("refusal_rate",)
    ),
    "null_refusal_only": Scenario("null_refusal_only", 7.0, signals=("refusal_rate",)),
}


def default_plan(signals: tuple[str, ...] = SIGNALS) -> Plan:
    """A canary's defaults (both comparisons, margin, alpha) on the whole population."""
    return Plan(
        signals,
        (("all", "all"),),
        ("served", "shadow"),
        tuple(DEFAULT_MARGIN for _ in signals),
        DEFAULT_ALPHA,
    )


# --- Traffic ----------------------------------------------------------------------------------


@dataclass
class Traffic:
    """One simulated stream, in time order: per request its hour, whether the candidate
    served it, and each answer's outcomes (the champion's, and the candidate's in shadow)."""

    hours: npt.NDArray[np.float64]
    candidate: npt.NDArray[np.bool_]
    outcomes: dict[str, npt.NDArray[Any]]  # champion's (or the serving arm's) answer
    shadow: dict[str, npt.NDArray[Any]] = field(default_factory=dict)  # candidate's answer
    true_ratio: float = 1.0


def _sigmoid(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-x))


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def simulate(scenario: Scenario, seed: int) -> Traffic:
    rng = np.random.default_rng(seed)
    hours_total = math.ceil(scenario.days * 24)
    hour = np.arange(hours_total)
    day = hour // 24
    day_volume = rng.lognormal(0.0, 0.15, size=day.max() + 1)[day]
    diurnal = 1.0 + 0.6 * np.sin(2 * math.pi * (hour % 24 - 9) / 24)
    burst = rng.random(hours_total) < BURST_HOURS
    volume = scenario.calls_per_day / 24 * diurnal * day_volume * np.where(burst, 3.0, 1.0)
    per_hour = rng.poisson(volume)
    n = int(per_hour.sum())
    at = np.repeat(hour, per_hour) + rng.random(n)
    order = np.argsort(at, kind="stable")
    at = at[order]
    h = at.astype(np.int64)
    day_level = rng.normal(0.0, DAY_LEVEL, size=day.max() + 1)
    shift = (
        DIURNAL_RATE * np.sin(2 * math.pi * (h % 24 - 3) / 24)
        + day_level[h // 24]
        + np.where(burst[h], 0.8, 0.0)
        + rng.normal(0.0, DIFFICULTY, size=n)  # the request's own difficulty
    )
    should = rng.random(n) < SHOULD_REFUSE
    feedback = rng.random(n) < FEEDBACK
    candidate = np.zeros(n, dtype=np.bool_) if scenario.shadow else rng.random(n) < scenario.share
    probability = {
        "eval_fail": _sigmoid(_logit(BASE["eval_fail"]) + shift),
        "fallback": _sigmoid(_logit(BASE["fallback"]) + shift),
        "refusal": _sigmoid(
            np.where(should, _logit(BASE["refusal_should"]), _logit(BASE["refusal"])) + shift
        ),
        "down": _sigmoid(_logit(BASE["down"]) + shift),
    }
    treated = _treated(probability, scenario.effect)
    ratio = float(treated["refusal"].mean() / probability["refusal"].mean())

    def answers(p: dict[str, npt.NDArray[np.float64]], gets_feedback: bool) -> dict[str, Any]:
        draw = {name: rng.random(n) < values for name, values in p.items()}
        return {
            "eval_passed": ~draw["eval_fail"],
            "fallback": draw["fallback"],
            "refusal": draw["refusal"],
            "should_refuse": should,
            "feedback": np.where(feedback & gets_feedback, np.where(draw["down"], -1, 1), 0),
        }

    if scenario.shadow:
        return Traffic(at, candidate, answers(probability, True), answers(treated, False), ratio)
    served = {name: np.where(candidate, treated[name], probability[name]) for name in probability}
    return Traffic(at, candidate, answers(served, True), true_ratio=ratio)


def _treated(
    probability: dict[str, npt.NDArray[np.float64]], effect: Effect | None
) -> dict[str, npt.NDArray[np.float64]]:
    """The candidate's per-request probabilities. "times" scales every request's probability
    by one factor, found so that the overall rate is exactly `amount` times the champion's
    (plain scaling would fall short where a hard request's probability hits 1); "plus"
    adds `amount` to every request's probability."""
    if effect is None:
        return probability
    outcome, kind, amount = effect
    base = probability[outcome]
    if kind == "plus":
        return {**probability, outcome: np.clip(base + amount, 0.0, 1.0)}
    target = amount * base.mean()
    low, high = amount, amount / max(float(base.min()), 1e-9)
    for _ in range(60):
        factor = (low + high) / 2.0
        low, high = (
            (factor, high) if np.minimum(factor * base, 1.0).mean() < target else (low, factor)
        )
    return {**probability, outcome: np.minimum(high * base, 1.0)}


# --- Counting, as the SQL does ----------------------------------------------------------------


def _signal_columns(o: dict[str, Any]) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """(counts against, judged on) per event for every rate signal, as RATE_SIGNALS reads."""
    refused, should = o["refusal"], o["should_refuse"]
    numerators = [
        ~o["eval_passed"],
        o["fallback"],
        refused,
        o["feedback"] == -1,
        refused & ~should,
        ~refused & should,
    ]
    denominators = [
        np.ones_like(refused),
        np.ones_like(refused),
        np.ones_like(refused),
        o["feedback"] != 0,
        ~should,
        should,
    ]
    return np.stack(numerators, axis=-1), np.stack(denominators, axis=-1)


def count_looks(
    plan: Plan, traffic: Traffic, look_every: int, limit: int | None
) -> tuple[Counts, npt.NDArray[np.float64]]:
    """Counts per look (every `look_every` events, or pairs in shadow) and the hours of
    traffic at each look: what an evaluation after each batch would see."""
    n = len(traffic.hours) if limit is None else min(limit, len(traffic.hours))
    looks = max(1, n // look_every)
    bucket = np.minimum(np.arange(n) // look_every, looks - 1)
    hours = traffic.hours[np.minimum((np.arange(looks) + 1) * look_every, n) - 1]
    numerator, denominator = _signal_columns({k: v[:n] for k, v in traffic.outcomes.items()})
    columns = [SIGNALS.index(s) for s in plan.signals]
    events = np.zeros((2, looks, 1, len(columns)), dtype=np.int64)
    with_signal = np.zeros_like(events)
    pairs = np.zeros((looks, 1, len(plan.paired_signals)), dtype=np.int64)
    worse, better = np.zeros_like(pairs), np.zeros_like(pairs)
    if traffic.shadow:
        shadow_num, shadow_den = _signal_columns({k: v[:n] for k, v in traffic.shadow.items()})
        served_in_pairs = [SIGNALS.index(s) for s in plan.paired_signals]
        for p, s in enumerate(served_in_pairs):
            both = denominator[:, s] & shadow_den[:, s]
            pairs[:, 0, p] = np.bincount(bucket, both, looks)
            worse[:, 0, p] = np.bincount(bucket, both & shadow_num[:, s] & ~numerator[:, s], looks)
            better[:, 0, p] = np.bincount(bucket, both & ~shadow_num[:, s] & numerator[:, s], looks)
    arm = np.where(traffic.candidate[:n], 0, 1)
    for i, s in enumerate(columns):
        for a in (0, 1):
            mine = arm == a
            events[a, :, 0, i] = np.bincount(bucket, mine & denominator[:, s], looks)
            with_signal[a, :, 0, i] = np.bincount(bucket, mine & numerator[:, s], looks)
    # Every simulated request is a trace of one call: no shadow answer is left unpaired.
    left_out = np.zeros(looks, dtype=np.int64)
    counts = Counts(events, with_signal, pairs, worse, better, np.zeros_like(pairs), left_out, 0.0)
    return counts, hours


# --- One seed ---------------------------------------------------------------------------------


def run_seed(args: tuple[Scenario, int]) -> dict[str, Any]:
    scenario, seed = args
    plan = default_plan(scenario.signals)
    traffic = simulate(scenario, seed)
    counts, hours = count_looks(plan, traffic, scenario.look_every, scenario.max_pairs)
    decided = decide(plan, judge(plan, counts.cumulative()), hours, DEFAULT_MIN_HOURS)
    first_rollback = _first(decided.rollback)
    first_promote = _first(decided.promote)
    outcome, at = None, None
    if first_rollback is not None and (first_promote is None or first_rollback <= first_promote):
        outcome, at = "rollback", first_rollback
    elif first_promote is not None:
        outcome, at = "promote", first_promote
    exact_hours = None
    if scenario.compare_exact:
        cumulative = counts.cumulative()
        half = plan.alpha_lower / 2.0
        candidate_low = rate_bounds(cumulative.with_signal[0], cumulative.events[0], half, half)[0]
        champion_high = rate_bounds(cumulative.with_signal[1], cumulative.events[1], half, half)[1]
        margins = np.array(plan.margins)
        exact_at = _first((candidate_low - champion_high > margins).any(axis=(1, 2)))
        exact_hours = None if exact_at is None else float(hours[exact_at])
    return {
        "seed": seed,
        "outcome": outcome,
        "exact_harm_bound_hours": exact_hours,
        "events": None if at is None else (at + 1) * scenario.look_every,
        "hours": None if at is None else float(hours[at]),
        "rollback_crossed": first_rollback is not None,
        "true_refusal_ratio": traffic.true_ratio,
        "calls": len(traffic.hours),
    }


def _first(flags: npt.NDArray[np.bool_]) -> int | None:
    hits = np.flatnonzero(flags)
    return int(hits[0]) if hits.size else None


def summarize(scenario: Scenario, runs: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(runs)
    rollbacks = [r for r in runs if r["outcome"] == "rollback"]
    promotes = [r for r in runs if r["outcome"] == "promote"]

    def share(items: list[Any]) -> float:
        return round(len(items) / n, 4)

    def quantiles(values: list[float]) -> dict[str, float] | None:
        if not values:
            return None
        ordered = sorted(values)
        return {
            "median": round(statistics.median(ordered), 2),
            "p90": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 2),
        }

    summary: dict[str, Any] = {
        "scenario": scenario.name,
        "seeds": n,
        "calls_per_seed": round(statistics.mean(r["calls"] for r in runs)),
        "true_refusal_ratio": round(statistics.mean(r["true_refusal_ratio"] for r in runs), 3),
        "rollback": share(rollbacks),
        "promote": share(promotes),
        "undecided": share([r for r in runs if r["outcome"] is None]),
        "rollback_boundary_ever_crossed": share([r for r in runs if r["rollback_crossed"]]),
        "hours_to_rollback": quantiles([r["hours"] for r in rollbacks]),
        "calls_to_rollback": quantiles([r["events"] for r in rollbacks]),
        "hours_to_promote": quantiles([r["hours"] for r in promotes]),
    }
    if scenario.compare_exact:
        exact = [
            r["exact_harm_bound_hours"] for r in runs if r["exact_harm_bound_hours"] is not None
        ]
        summary["with_exact_harm_bound_instead"] = {
            "rollback": share(exact),
            "hours_to_rollback": quantiles(exact),
        }
    return summary


# --- Through the database --------------------------------------------------------------------


def end_to_end(url: str) -> dict[str, Any]:
    """Real ingest and `evaluate` in a scratch PostgreSQL schema. Model "a" gets seed 0 of
    refusal_2x (a day): the database's counts and decision must equal the simulation's. Model
    "b" gets seed 0 of null_week (a week, 140,000 calls): `evaluate` and the page's `history`
    are timed over it (medians of 5)."""
    plan = default_plan()
    with scratch_schema(url, "bench_canary") as scratch:
        settings = Settings(
            database_url=scratch,
            run_workers=False,
            run_scheduler=False,
            secret_key="bench",
            log_json=False,
            log_level="WARNING",
        )
        app = create_app(settings)
        links = Links.of(settings)
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=7)
        with TestClient(app) as client, app.state.sessionmaker() as session:
            project = keys.get_or_create_project(session, "bench")
            _row, key = keys.create_key(session, project.id, Role.admin, "bench")
            session.commit()
            auth = {"Authorization": f"Bearer {key}"}
            day = simulate(SCENARIOS["refusal_2x"], 0)
            week = simulate(SCENARIOS["null_week"], 0)
            started = time.perf_counter()
            canary_a = _canary_with_traffic(client, auth, "a", start, day)
            canary_b = _canary_with_traffic(client, auth, "b", start, week)
            ingest_s = time.perf_counter() - started

            counts, hours = count_looks(plan, day, len(day.hours), None)
            expected = decide(plan, judge(plan, counts.cumulative()), hours, DEFAULT_MIN_HOURS)
            row = session.get_one(Canary, (project.id, canary_a))
            evaluated = canaries.evaluate(session, links, row, "bench", start + timedelta(days=1))
            served = [
                c for c in (evaluated.evidence or {})["comparisons"] if c["comparison"] == "served"
            ]
            stored = [
                (
                    c["candidate"]["events"],
                    c["candidate"]["with_signal"],
                    c["champion"]["events"],
                    c["champion"]["with_signal"],
                )
                for c in served
            ]
            simulated = [
                tuple(
                    int(array[arm, 0, 0, s])
                    for arm in (0, 1)
                    for array in (counts.events, counts.with_signal)
                )
                for s in range(len(SIGNALS))
            ]
            decision = evaluated.decision.value if evaluated.decision else None
            expected_decision = (
                "rollback" if expected.rollback[-1] else "promote" if expected.promote[-1] else None
            )
            timings: dict[str, list[float]] = {"evaluate": [], "history": []}
            for _ in range(5):
                row = session.get_one(Canary, (project.id, canary_b))
                begin = time.perf_counter()
                canaries.evaluate(session, links, row, "bench")
                timings["evaluate"].append(time.perf_counter() - begin)
                begin = time.perf_counter()
                canaries.history(session, row)
                timings["history"].append(time.perf_counter() - begin)
            week_status = session.get_one(Canary, (project.id, canary_b)).status.value
        app.state.engine.dispose()
    return {
        "scenario": "end_to_end",
        "events_ingested": len(day.hours) + len(week.hours),
        "ingest_s": round(ingest_s, 1),
        "counts_match": stored == simulated,
        "decision": decision,
        "decision_match": decision == expected_decision,
        "week_canary_status": week_status,
        "evaluate_week_s_median": round(statistics.median(timings["evaluate"]), 3),
        "history_week_s_median": round(statistics.median(timings["history"]), 3),
    }


def _canary_with_traffic(
    client: TestClient, auth: dict[str, str], model: str, start: datetime, traffic: Traffic
) -> int:
    """Registers `model` (champion and candidate), starts a canary at `start` and sends the
    traffic through POST /api/v1/events; returns the canary's id."""
    ids = {}
    for version in ("champion", "candidate"):
        created = client.post(
            "/api/v1/checkpoints", json={"model": model, "version": version}, headers=auth
        )
        ids[version] = created.json()["id"]
    client.post(
        f"/api/v1/models/{model}/promote",
        json={"checkpoint_id": ids["champion"], "reason": "bench"},
        headers=auth,
    ).raise_for_status()
    canary = client.post(
        f"/api/v1/models/{model}/canaries",
        json={"checkpoint_id": ids["candidate"], "start": start.isoformat()},
        headers=auth,
    )
    canary.raise_for_status()
    outcomes = traffic.outcomes
    batch: list[dict[str, Any]] = []
    for i in range(len(traffic.hours)):
        event: dict[str, Any] = {
            "trace_id": f"{model}-{i}",
            "timestamp": (start + timedelta(hours=float(traffic.hours[i]))).isoformat(),
            "model": model,
            "checkpoint_version": "candidate" if traffic.candidate[i] else "champion",
            "eval_passed": bool(outcomes["eval_passed"][i]),
            "fallback": bool(outcomes["fallback"][i]),
            "refusal": bool(outcomes["refusal"][i]),
            "should_refuse": bool(outcomes["should_refuse"][i]),
        }
        if outcomes["feedback"][i]:
            event["feedback"] = "down" if outcomes["feedback"][i] == -1 else "up"
        batch.append(event)
        if len(batch) == 10_000 or i == len(traffic.hours) - 1:
            client.post("/api/v1/events", json={"events": batch}, headers=auth).raise_for_status()
            batch = []
    canary_id: int = canary.json()["id"]
    return canary_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--end-to-end", action="store_true")
    parser.add_argument("--url", default=None, help="PostgreSQL for --end-to-end")
    options = parser.parse_args()
    with ProcessPoolExecutor(options.workers) as pool:
        for name in options.scenarios.split(","):
            scenario = SCENARIOS[name]
            started = time.perf_counter()
            runs = list(pool.map(run_seed, [(scenario, seed) for seed in range(options.seeds)]))
            summary = summarize(scenario, runs)
            summary["wall_s"] = round(time.perf_counter() - started, 1)
            print(json.dumps(summary), flush=True)
    if options.end_to_end:
        print(json.dumps(end_to_end(options.url or BENCH_DATABASE_URL)), flush=True)


if __name__ == "__main__":
    main()
