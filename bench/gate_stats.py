"""Time the statistics of one gate: 20,000 paired rows x 8 evaluators x 50 cohorts.

Times compare_cohorts for every evaluator, the Holm adjustment across all guarded
cohorts x evaluators, and the per-cohort decisions; data generation is excluded.
"realistic" cohorts are one all-rows cohort plus 49 overlapping random subsets
with log-uniform sizes from 5 to 5,000 rows; "worst_case" makes all 49 exactly
DEFAULT_MAX_BOOTSTRAP_N rows, the most bootstrap work a gate of this shape can
cost. Prints the median of several runs as JSON: wall-clock seconds, plus the CPU
seconds of the realistic case, which a busy machine distorts less.

    .venv/bin/python bench/gate_stats.py
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np

from app.stats.noninferiority import apply_gate, gate_verdict
from app.stats.paired import DEFAULT_MAX_BOOTSTRAP_N, CohortMeta, compare_cohorts
from app.stats.policy import GatePolicy

ROWS, EVALUATORS, COHORTS, REPEATS = 20_000, 8, 50, 5


def cohort_membership(rng: np.random.Generator, sizes: np.ndarray) -> np.ndarray:
    """Row 0 is every row; the others are random (overlapping) subsets of the given sizes."""
    membership = np.zeros((COHORTS, ROWS), dtype=np.bool_)
    membership[0] = True
    for k, size in enumerate(sizes, start=1):
        membership[k, rng.choice(ROWS, size=int(size), replace=False)] = True
    return membership


def evaluator_runs(rng: np.random.Generator, binary: bool) -> tuple[np.ndarray, np.ndarray]:
    """Champion and candidate scores on the same rows: graded in [0, 1] or pass/fail."""
    if binary:
        baseline = (rng.random(ROWS) < 0.85).astype(np.float64)
        flipped = rng.random(ROWS) < 0.05
        return baseline, np.where(flipped, 1.0 - baseline, baseline)
    baseline = rng.beta(5.0, 2.0, ROWS)
    return baseline, np.clip(baseline + rng.normal(-0.002, 0.05, ROWS), 0.0, 1.0)


def run_gate(
    runs: list[tuple[np.ndarray, np.ndarray]], membership: np.ndarray, policy: GatePolicy
) -> str:
    meta = [CohortMeta(f"cohort-{k}", high_risk=k % 10 == 1) for k in range(COHORTS)]
    comparisons = []
    for baseline, candidate in runs:
        comparisons += compare_cohorts(
            baseline, candidate, baseline >= 0.5, candidate >= 0.5, membership, meta, policy
        )
    return gate_verdict(apply_gate(comparisons, policy))


def median_seconds(
    runs: list[tuple[np.ndarray, np.ndarray]], membership: np.ndarray, policy: GatePolicy
) -> tuple[float, float]:
    """Median wall-clock and CPU seconds of one whole gate."""
    run_gate(runs, membership, policy)  # warm-up: first scipy calls build their caches
    wall, cpu = [], []
    for _ in range(REPEATS):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        run_gate(runs, membership, policy)
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    rng = np.random.default_rng(20240601)
    policy = GatePolicy()
    runs = [evaluator_runs(rng, binary=e % 2 == 0) for e in range(EVALUATORS)]
    realistic = cohort_membership(rng, np.exp(rng.uniform(np.log(5), np.log(5000), COHORTS - 1)))
    worst_case = cohort_membership(rng, np.full(COHORTS - 1, DEFAULT_MAX_BOOTSTRAP_N))
    seconds, cpu_seconds = median_seconds(runs, realistic, policy)
    result = {
        "rows": ROWS,
        "evaluators": EVALUATORS,
        "cohorts": COHORTS,
        "seconds": round(seconds, 4),
        "cpu_seconds": round(cpu_seconds, 4),
        "worst_case_seconds": round(median_seconds(runs, worst_case, policy)[0], 4),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
