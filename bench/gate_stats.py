"""Time the decision of one gate: 20,000 paired rows x 8 evaluators x 50 cohorts.

Times app.stats.gate.decide_gate (every test, the weighted Holm budget, the BH warning
families, required rows and the display bounds); data generation is excluded. "realistic"
cohorts are one all-rows cohort plus 49 overlapping random subsets with log-uniform sizes
from 5 to 5,000 rows, five of them guarded, and all 8 evaluators pass/fail (metric
"pass_rate", the default) or half of them graded (metric "mean_score" with continuous scores:
nearly every row's difference is distinct, the costliest input of the score test);
"worst_case" guards all 49 at exactly the exact test's largest size (400 rows), the most exact
p-values a gate of this shape can cost. Exact p-values are cached per process, so each case
reports its first ("cold", cache emptied) decision and the median of the next ones ("warm",
what a re-gate of the same tables costs). CPU seconds are reported too: a busy machine
distorts them less than wall-clock time.

    .venv/bin/python bench/gate_stats.py
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from app.stats import margin
from app.stats.cohorts import CohortSpec
from app.stats.gate import DecisionPolicy, EvaluatorOutcomes, decide_gate

ROWS, EVALUATORS, COHORTS, REPEATS = 20_000, 8, 50, 5


def cohort_membership(rng: np.random.Generator, sizes: np.ndarray) -> np.ndarray:
    """Row 0 is every row; the others are random (overlapping) subsets of the given sizes."""
    membership = np.zeros((COHORTS, ROWS), dtype=np.bool_)
    membership[0] = True
    for k, size in enumerate(sizes, start=1):
        membership[k, rng.choice(ROWS, size=int(size), replace=False)] = True
    return membership


def evaluator_runs(rng: np.random.Generator, binary: bool) -> tuple[np.ndarray, np.ndarray]:
    """Champion and candidate per-row values on the same rows: pass/fail or graded."""
    if binary:
        baseline = (rng.random(ROWS) < 0.85).astype(np.float64)
        flipped = rng.random(ROWS) < 0.05
        return baseline, np.where(flipped, 1.0 - baseline, baseline)
    baseline = rng.beta(5.0, 2.0, ROWS)
    return baseline, np.clip(baseline + rng.normal(-0.002, 0.05, ROWS), 0.0, 1.0)


def timed(action: Callable[[], Any]) -> dict[str, float]:
    """The cold first call, then the median wall and CPU seconds of REPEATS warm calls."""
    margin._exact_pvalue.cache_clear()  # a fresh process: no exact p-value cached
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    action()
    cold = (time.perf_counter() - start_wall, time.process_time() - start_cpu)
    wall, cpu = [], []
    for _ in range(REPEATS):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        action()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return {
        "cold_seconds": round(cold[0], 4),
        "cold_cpu_seconds": round(cold[1], 4),
        "warm_seconds": round(statistics.median(wall), 4),
        "warm_cpu_seconds": round(statistics.median(cpu), 4),
    }


def main() -> None:
    rng = np.random.default_rng(20240601)
    binary = [
        EvaluatorOutcomes(f"evaluator-{e}", *evaluator_runs(rng, binary=True))
        for e in range(EVALUATORS)
    ]
    mixed = [
        EvaluatorOutcomes(f"evaluator-{e}", *evaluator_runs(rng, binary=e % 2 == 0))
        for e in range(EVALUATORS)
    ]
    sizes = np.exp(rng.uniform(np.log(5), np.log(5000), COHORTS - 1))
    realistic = cohort_membership(rng, sizes)
    worst_case = cohort_membership(rng, np.full(COHORTS - 1, margin.DEFAULT_EXACT_MAX_N))
    policy = DecisionPolicy()

    def specs(guarded: Callable[[int], bool]) -> list[CohortSpec]:
        return [CohortSpec(f"cohort-{k}", guarded=k == 0 or guarded(k)) for k in range(COHORTS)]

    def gate(
        evaluators: list[EvaluatorOutcomes], membership: np.ndarray, cohorts: list[CohortSpec]
    ) -> Callable[[], Any]:
        return lambda: decide_gate(evaluators, membership, cohorts, policy)

    some = specs(lambda k: k % 10 == 1)
    result = {
        "rows": ROWS,
        "evaluators": EVALUATORS,
        "cohorts": COHORTS,
        "realistic_pass_fail": timed(gate(binary, realistic, some)),
        "realistic_half_graded": timed(gate(mixed, realistic, some)),
        "worst_case_pass_fail_all_guarded_at_400_rows": timed(
            gate(binary, worst_case, specs(lambda k: True))
        ),
        "repeats": REPEATS,
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
