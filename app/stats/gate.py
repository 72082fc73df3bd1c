"""The gate's decision: per guarded cohort block / pass / inconclusive, and the verdict.

The service prepares arrays and metadata and serialises the result; everything
statistical happens in ``decide_gate``:

* per evaluator, per-row values in [0, 1] for both runs (a pass, a pass fraction over
  repeats, or a normalised score) and their repeat counts;
* a boolean (cohorts x rows) membership and one ``CohortSpec`` per cohort (guarded or
  not, declared risk, margin and floor overrides);
* a ``DecisionPolicy``.

For each guarded comparison (cohort x evaluator) with margin m:

* ``block`` when a drop beyond the margin is shown: H0 Delta >= -m rejected by the
  one-sided test of ``app.stats.margin``, adjusted with weighted Holm across every
  guarded comparison and floor test of the gate (one error budget, alpha, split in
  proportion to 1/rows), on at least ``min_discordant`` discordant rows; or the
  candidate is shown below a floor;
* ``pass`` when H0 Delta <= -m is rejected at alpha/2 (and any floor is shown met);
  requiring every guarded comparison to pass is an intersection-union test, so no
  adjustment is needed for the pass side;
* ``inconclusive`` otherwise, with the rows needed to decide.

Re-gating the same checkpoint on the same dataset version spends less alpha and keeps
a block unless the pooled runs pass (``app.stats.retry``).
A drop that is significant but inside the margin is a warning, never a block. Every
unguarded cohort is a separate family (Benjamini-Hochberg) that can only warn. The
gate blocks if any guarded comparison blocks, passes if all pass, and is
inconclusive otherwise. The choices are argued in docs/statistics.md.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from app.stats._arrays import BoolArray, FloatArray, IntArray, as_float_vector
from app.stats.cohorts import CohortSpec
from app.stats.margin import (
    DEFAULT_EXACT_MAX_N,
    binomial_floor_pvalues,
    exact_bound,
    exact_pvalue,
    mcnemar_one_sided,
    score_bound,
    score_test,
)
from app.stats.multiplicity import family_shares, weighted_bh, weighted_holm
from app.stats.planning import required_rows
from app.stats.retry import GateVerdict, attempt_alpha, sticky_verdict

Status = Literal["block", "pass", "inconclusive", "warn", "report"]
WEIGHT_POWERS = {"inverse_n": 1.0, "sqrt_n": 0.5, "equal": 0.0}
Method = Literal["exact", "score", "none"]


@dataclass(frozen=True)
class DecisionPolicy:
    """The knobs of a gate (defaults argued in docs/statistics.md).

    ``alpha`` is the gate's error budget: the chance of blocking when no guarded
    comparison has a drop beyond its margin is at most alpha (one-sided tests, Holm or
    BH across the guarded family), and each non-inferiority claim is a one-sided
    alpha/2 test (ICH E9), so a wrong pass has chance at most alpha/2.
    ``risk_margins`` gives a margin per declared risk level (``margin`` otherwise).
    ``power`` is what an unchanged candidate's chance to pass should be with the rows
    ``required_n`` asks for, ``block_power`` the chance to block a drop of
    margin + ``min_effect`` (twice the margin by default). A comparison needs
    ``min_discordant`` discordant rows before it can block (or warn) on its own.
    ``weighting`` splits the block budget across the guarded family in proportion to
    1/rows ("inverse_n"), 1/sqrt(rows) ("sqrt_n") or equally ("equal"); comparisons
    with identical rows and margin count once (``app.stats.multiplicity``).
    """

    margin: float = 0.02
    risk_margins: Mapping[str, float] = field(default_factory=dict)
    alpha: float = 0.05
    power: float = 0.8
    block_power: float = 0.9
    min_effect: float | None = None
    floor: float | None = None
    evaluator_floors: Mapping[str, float] = field(default_factory=dict)
    correction: Literal["holm", "bh"] = "holm"
    weighting: Literal["inverse_n", "sqrt_n", "equal"] = "inverse_n"
    min_discordant: int = 6
    exact_max_n: int = DEFAULT_EXACT_MAX_N

    def __post_init__(self) -> None:
        for margin in (self.margin, *self.risk_margins.values()):
            if not 0.0 < margin < 0.5:
                raise ValueError("margins must lie strictly between 0 and 0.5")
        if not 0.0 < self.alpha < 0.5:
            raise ValueError("alpha must lie strictly between 0 and 0.5")
        if not 0.0 < self.power < 1.0 or not 0.0 < self.block_power < 1.0:
            raise ValueError("power and block_power must lie strictly between 0 and 1")
        if self.min_effect is not None and not 0.0 < self.min_effect < 0.5:
            raise ValueError("min_effect must lie strictly between 0 and 0.5")
        for floor in (self.floor, *self.evaluator_floors.values()):
            if floor is not None and not 0.0 <= floor <= 1.0:
                raise ValueError("floors lie between 0 and 1")
        if self.correction not in ("holm", "bh"):
            raise ValueError(f"unknown correction {self.correction!r}")
        if self.weighting not in WEIGHT_POWERS:
            raise ValueError(f"unknown weighting {self.weighting!r}")
        if self.min_discordant < 1 or self.exact_max_n < 0:
            raise ValueError("min_discordant must be >= 1 and exact_max_n >= 0")

    def margin_for(self, cohort: CohortSpec) -> float:
        if cohort.margin is not None:
            return cohort.margin
        if cohort.risk is not None and cohort.risk in self.risk_margins:
            return self.risk_margins[cohort.risk]
        return self.margin

    def floor_for(self, cohort: CohortSpec, evaluator: EvaluatorOutcomes) -> float | None:
        """The cohort's floor, else the evaluator's, else the policy's for it, else the policy's."""
        for floor in (
            cohort.floor,
            evaluator.floor,
            self.evaluator_floors.get(evaluator.name),
            self.floor,
        ):
            if floor is not None:
                return floor
        return None


@dataclass(frozen=True)
class UnjudgedRows:
    """Rows one side's evaluator reached no verdict on (its calls were all errors) while the
    other side's did: ``baseline``/``candidate`` hold the judged side's value and NaN on the
    other. Whether a verdict is missing depends on the output judged (a judge provider that
    refuses a harmful answer, an evaluator crashing on a malformed one), so these rows are
    not missing at random and may be exactly where a regression lies. They stay out of every
    number shown and every block test; a pass (and a floor shown met) must hold with them at
    their worst: the candidate's missing verdicts as fails, the baseline's as passes. The
    baseline's calls its endpoint did not answer are such rows too (app.gates.pairs): the
    baseline is the yardstick, and its outage is no verdict on it."""

    rows: npt.ArrayLike
    baseline: npt.ArrayLike
    candidate: npt.ArrayLike


@dataclass(frozen=True)
class EvaluatorOutcomes:
    """One evaluator's paired per-row values: means over repeats, on a 0..1 scale.

    ``baseline``/``candidate`` are per-row mean pass (or normalised score) over
    ``baseline_repeats``/``candidate_repeats`` calls (an int for all rows, or one per
    row). ``rows`` are the membership columns these values belong to (default: all,
    in order). A pass/fail evaluator with one repeat per side gets the exact tests.
    ``unjudged``: rows judged on one side only, which a pass must survive at their worst.
    ``baseline_worst``/``candidate_worst``: the same rows' values with each row's calls
    without a verdict (left out of ``baseline``/``candidate``) at their worst for a pass,
    the candidate's as fails and the baseline's as passes; None where every call has one.
    A pass (and a floor shown met) must hold with them too, as with ``unjudged``.
    ``candidate_only``: no baseline ran the evaluator, so there is nothing to pair and no
    margin test; only floors are tested, on the candidate's rows by their bound
    (docs/statistics.md §6.2). ``baseline`` is then ignored (pass the candidate's values),
    and ``unjudged`` holds the rows the candidate's evaluator never judged (its baseline
    values are ignored too).
    """

    name: str
    baseline: npt.ArrayLike
    candidate: npt.ArrayLike
    baseline_repeats: npt.ArrayLike = 1
    candidate_repeats: npt.ArrayLike = 1
    rows: npt.ArrayLike | None = None
    floor: float | None = None
    unjudged: UnjudgedRows | None = None
    candidate_only: bool = False
    baseline_worst: npt.ArrayLike | None = None
    candidate_worst: npt.ArrayLike | None = None


@dataclass(frozen=True)
class ComparisonRecord:
    """One cohort x evaluator; JSON-safe (``dataclasses.asdict``): undefined numbers are None.

    Probabilities: ``p_block`` tests H0 Delta >= -margin (small: a drop beyond the
    margin), ``p_pass`` tests H0 Delta <= -margin (small: non-inferior), ``p_drop``
    tests H0 Delta >= 0 (small: some drop). Adjusted values are within the record's
    family (guarded: ``correction`` for blocks, BH for warnings; unguarded: BH).
    ``upper_bound`` is the one-sided (1 - alpha) upper bound of Delta and
    ``lower_bound`` the one-sided (1 - alpha/2) lower bound, inverting the score test
    (``bound_method`` says when they invert the exact test instead). ``unjudged`` counts
    the cohort's rows judged on one side only (``UnjudgedRows``), left out of ``n``;
    ``partly_judged`` the rows in ``n`` some of whose calls have no verdict that could
    change their value (``EvaluatorOutcomes.baseline_worst``); ``p_pass_worst_case`` and
    ``p_floor_met_worst_case`` are the pass side's p-values with both at their worst (None
    without such rows).
    """

    evaluator: str
    cohort: str
    cohort_index: int
    dimension: str | None
    value: str | None
    guarded: bool
    risk: str | None
    n: int
    baseline_repeats: float | None
    candidate_repeats: float | None
    method: Method
    baseline: float | None
    candidate: float | None
    delta: float | None
    discordant: int
    lost: int
    won: int
    margin: float
    upper_bound: float | None
    lower_bound: float | None
    bound_method: Method
    p_block: float
    p_block_adjusted: float | None
    p_pass: float
    p_drop: float
    p_drop_adjusted: float | None
    unjudged: int
    partly_judged: int
    p_pass_worst_case: float | None
    floor: float | None
    p_floor_broken: float | None
    p_floor_broken_adjusted: float | None
    p_floor_met: float | None
    p_floor_met_worst_case: float | None
    floor_status: Literal["broken", "met", "unclear"] | None
    status: Status
    reason: str
    warning: str | None
    required_n: int | None
    required_n_pass: int | None
    required_n_block: int | None


@dataclass(frozen=True)
class GateDecision:
    """The verdict, every comparison record, the reasons to show, and the error budget used."""

    verdict: GateVerdict
    records: list[ComparisonRecord]
    reasons: list[dict[str, Any]]
    notes: list[str]
    alpha: float
    attempt: int
    guarded_comparisons: int
    block_family: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class _Evaluated:
    """Per-cohort arrays of one evaluator (cohort order)."""

    name: str
    binary: bool
    paired: bool
    n: IntArray
    baseline: FloatArray
    candidate: FloatArray
    base_repeats: FloatArray
    cand_repeats: FloatArray
    lost: IntArray
    won: IntArray
    support: FloatArray
    counts: FloatArray
    margins: FloatArray
    p_block: FloatArray
    p_pass: FloatArray
    p_drop: FloatArray
    method: list[Method]
    upper: FloatArray
    lower: FloatArray
    bound_method: list[Method]
    floors: list[float | None]
    p_floor_broken: FloatArray
    p_floor_met: FloatArray
    unjudged: IntArray
    partly_judged: IntArray
    p_pass_worst: FloatArray
    p_floor_met_worst: FloatArray


def decide_gate(
    evaluators: Sequence[EvaluatorOutcomes],
    membership: npt.ArrayLike,
    cohorts: Sequence[CohortSpec],
    policy: DecisionPolicy,
    *,
    attempt: int = 1,
    previously_blocked: bool = False,
    with_bounds: bool = True,
    exact_bounds: bool = False,
) -> GateDecision:
    """Compare every evaluator in every cohort, decide each guarded comparison, reach the verdict.

    ``attempt`` numbers the gates of this candidate checkpoint on this dataset version
    (1 for the first); attempt L spends alpha / 2^(L-1) (``app.stats.retry``), and the
    evaluator values should then be per-row means over all the checkpoint's runs on
    the version. ``previously_blocked``: a block on this version stands unless this
    gate passes. ``with_bounds=False`` skips the displayed bounds (they never enter a
    verdict); ``exact_bounds`` inverts the exact test for the bounds where it decided.
    """
    matrix = np.asarray(membership)
    if matrix.ndim != 2 or matrix.dtype != np.bool_:
        raise ValueError("membership must be a boolean (cohorts x rows) matrix")
    if matrix.shape[0] != len(cohorts):
        raise ValueError("cohorts needs one CohortSpec per membership row")
    if not evaluators:
        raise ValueError("need at least one evaluator")
    alpha = attempt_alpha(policy.alpha, attempt)
    evaluated = [_evaluate(ev, matrix, cohorts, policy) for ev in evaluators]
    if with_bounds:
        _fill_bounds(evaluated, alpha, exact_bounds)
    keys = [(e, k) for e in range(len(evaluated)) for k in range(len(cohorts))]
    guarded = [(e, k) for e, k in keys if cohorts[k].guarded]
    unguarded = [(e, k) for e, k in keys if not cohorts[k].guarded]
    # Only paired comparisons have a change to test: one side alone enters no drop family.
    guarded_paired = [(e, k) for e, k in guarded if evaluated[e].paired]
    unguarded_paired = [(e, k) for e, k in unguarded if evaluated[e].paired]
    min_disc = policy.min_discordant

    def discordant(e: int, k: int) -> int:
        return int(evaluated[e].lost[k] + evaluated[e].won[k])

    margin_adj, floor_adj, share_of = _block_family(evaluated, matrix, guarded, policy)

    drop_adj = dict.fromkeys(keys, 1.0)
    drop_adj.update(_family_drop_adjusted(evaluated, guarded_paired, min_disc, discordant))
    drop_adj.update(_family_drop_adjusted(evaluated, unguarded_paired, min_disc, discordant))
    unguarded_block = dict.fromkeys(unguarded, 1.0)
    unguarded_block |= dict(
        zip(
            unguarded_paired,
            _adjust(
                [
                    float(evaluated[e].p_block[k]) if discordant(e, k) >= min_disc else 1.0
                    for e, k in unguarded_paired
                ],
                "bh",
            ),
            strict=True,
        )
    )

    n_guarded = len(guarded)
    n_block = len(margin_adj) + len(floor_adj)
    records: list[ComparisonRecord] = []
    for e, k in keys:
        ev, cohort = evaluated[e], cohorts[k]
        if cohort.guarded:
            records.append(
                _guarded_record(
                    ev,
                    cohort,
                    k,
                    policy,
                    alpha,
                    margin_adj.get((e, k), 1.0),
                    floor_adj.get((e, k)),
                    drop_adj[(e, k)],
                    n_guarded,
                    share_of.get((e, k), 0.0),
                )
            )
        else:
            records.append(
                _unguarded_record(ev, cohort, k, policy, drop_adj[(e, k)], unguarded_block[(e, k)])
            )

    notes: list[str] = []
    statuses = [r.status for r in records if r.guarded]
    verdict: GateVerdict
    if "block" in statuses:
        verdict = "block"
    elif statuses and all(s == "pass" for s in statuses):
        verdict = "pass"
    else:
        verdict = "inconclusive"
    if not statuses:
        notes.append("no guarded cohort on these rows: the gate cannot pass")
    if attempt > 1:
        notes.append(
            f"attempt {attempt} of this checkpoint on this dataset version: error budget "
            f"alpha = {policy.alpha:g} / 2^{attempt - 1} = {alpha:.4g}; compare per-row means "
            "pooled over all its runs"
        )
    final = sticky_verdict(verdict, previously_blocked)
    reasons = _reasons(final, records, policy, alpha, attempt)
    if final != verdict:
        # The standing block is the reason itself: without it a block whose comparisons are
        # all inconclusive would carry no block reason (and its webhook none at all).
        standing = (
            "blocked earlier on this dataset version: only a pass on the pooled runs lifts "
            f"the block (this gate alone would be '{verdict}')"
        )
        notes.append(standing)
        reasons.insert(0, {"severity": "block", "message": standing})
    return GateDecision(final, records, reasons, notes, alpha, attempt, n_guarded, n_block)


def _block_family(
    evaluated: list[_Evaluated],
    membership: BoolArray,
    guarded: list[tuple[int, int]],
    policy: DecisionPolicy,
) -> tuple[
    dict[tuple[int, int], float], dict[tuple[int, int], float], dict[tuple[int, int], float]
]:
    """Adjusted p-values of the guarded block family and each margin test's budget share.

    The family holds every guarded comparison's "drop beyond the margin" test and
    every floor test; they share alpha through weighted Holm (or BH) with design
    weights. Tests of one evaluator on identical rows against the same value (a
    ``risk=high`` cohort that coincides with a declared cohort, say) are one test.
    A comparison with fewer than ``min_discordant`` discordant rows enters with p = 1: it
    cannot block on its own. A comparison with fewer than ``min_discordant`` rows (none
    at all: an evaluator that scored none of the cohort's rows; or a declared cohort of
    a few rows) is left out, floor tests included: it can never reject, and its share
    (1/n weights) would starve every other test. How many rows a comparison has is
    design, not outcome, so leaving it out keeps the control (as Tarone's rule does).
    Left-out comparisons have no entry in the adjusted dictionaries; those with rows get
    the share they would take by joining the family, for their ``required_n``.
    """
    tests: list[tuple[str, int, int, float, float]] = []  # kind, evaluator, cohort, p, value
    too_few: list[tuple[int, int]] = []
    for e, k in guarded:
        ev = evaluated[e]
        if ev.n[k] < policy.min_discordant:
            if ev.n[k] and ev.paired:
                too_few.append((e, k))  # for its required_n only
            continue
        enough = ev.lost[k] + ev.won[k] >= policy.min_discordant
        if ev.paired:  # an evaluator only the candidate ran has no margin test, only floors
            tests.append(("margin", e, k, float(ev.p_block[k]) if enough else 1.0, ev.margins[k]))
        floor = ev.floors[k]
        if floor is not None:
            tests.append(("floor", e, k, float(ev.p_floor_broken[k]), floor))
    keys = [(kind, e, membership[k].tobytes(), value) for kind, e, k, _p, value in tests]
    first: dict[tuple[str, int, bytes, float], int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)
    distinct = list(first)
    raw = [tests[first[key]][3] for key in distinct]
    rows = [int(evaluated[tests[first[key]][1]].n[tests[first[key]][2]]) for key in distinct]
    rows += [int(evaluated[e].n[k]) for e, k in too_few]
    all_shares = family_shares(rows, WEIGHT_POWERS[policy.weighting], policy.min_discordant)
    shares = all_shares[: len(distinct)]
    if not raw:
        adjusted = np.zeros(0)
    elif policy.correction == "holm":
        adjusted = weighted_holm(raw, shares)
    else:
        adjusted = weighted_bh(raw, shares)
    index = {key: i for i, key in enumerate(distinct)}
    margin_adj: dict[tuple[int, int], float] = {}
    floor_adj: dict[tuple[int, int], float] = {}
    share_of: dict[tuple[int, int], float] = {}
    for (kind, e, k, _p, _value), key in zip(tests, keys, strict=True):
        j = index[key]
        if kind == "margin":
            margin_adj[(e, k)] = float(adjusted[j])
            share_of[(e, k)] = float(shares[j])
        else:
            floor_adj[(e, k)] = float(adjusted[j])
    for (e, k), share in zip(too_few, all_shares[len(distinct) :], strict=True):
        share_of[(e, k)] = float(share)
    return margin_adj, floor_adj, share_of


def _adjust(p: list[float], method: Literal["holm", "bh"]) -> list[float]:
    if not p:
        return []
    adjusted = weighted_holm(p) if method == "holm" else weighted_bh(p)
    return [float(x) for x in adjusted]


def _family_drop_adjusted(
    evaluated: list[_Evaluated],
    family: list[tuple[int, int]],
    min_disc: int,
    discordant: Any,
) -> dict[tuple[int, int], float]:
    raw = [
        float(evaluated[e].p_drop[k]) if discordant(e, k) >= min_disc else 1.0 for e, k in family
    ]
    return dict(zip(family, _adjust(raw, "bh"), strict=True))


def _fill_bounds(evaluated: list[_Evaluated], alpha: float, exact: bool) -> None:
    """Display bounds for every comparison: one vectorised score inversion per evaluator
    over its own observed differences (pass/fail evaluators keep the closed-form fit; a
    union with a graded evaluator's thousands of values would lose it and cost their
    product). ``exact`` inverts the exact test where it decided.
    """
    for ev in evaluated:
        size = ev.counts.shape[0]
        filled = (ev.n > 0) & ev.paired
        ev.upper, ev.lower = np.full(size, np.nan), np.full(size, np.nan)
        if filled.any():
            counts = ev.counts[filled]
            ev.upper[filled] = score_bound(ev.support, counts, 1.0 - alpha, "upper")
            ev.lower[filled] = score_bound(ev.support, counts, 1.0 - alpha / 2.0, "lower")
        ev.bound_method = ["score" if rows and ev.paired else "none" for rows in ev.n]
        if not exact:
            continue
        for k in range(size):
            if ev.method[k] == "exact":
                rows, b, c = int(ev.n[k]), int(ev.lost[k]), int(ev.won[k])
                ev.upper[k] = exact_bound(rows, b, c, 1.0 - alpha, "upper")
                ev.lower[k] = exact_bound(rows, b, c, 1.0 - alpha / 2.0, "lower")
                ev.bound_method[k] = "exact"


def _evaluate(
    ev: EvaluatorOutcomes,
    membership: BoolArray,
    cohorts: Sequence[CohortSpec],
    policy: DecisionPolicy,
) -> _Evaluated:
    paired = not ev.candidate_only
    cand = as_float_vector(ev.candidate, f"{ev.name}: candidate")
    # Without a baseline only the floors are tested: a copy of the candidate's values stands
    # in for it (no row differs), and every paired test is set aside below.
    base = as_float_vector(ev.baseline, f"{ev.name}: baseline", cand.size) if paired else cand
    cand = cand if paired else cand.copy()
    if np.any((base < 0) | (base > 1) | (cand < 0) | (cand > 1)):
        raise ValueError(f"{ev.name}: per-row values must lie in [0, 1]")
    k0 = _repeats(ev.baseline_repeats, base.size, f"{ev.name}: baseline_repeats")
    k1 = _repeats(ev.candidate_repeats, base.size, f"{ev.name}: candidate_repeats")
    columns = membership[:, _columns(ev.rows, base.size, membership, ev.name)]
    binary = bool(
        np.all(k0 == 1)
        and np.all(k1 == 1)
        and np.all((base == 0) | (base == 1))
        and np.all((cand == 0) | (cand == 1))
    )
    margins = np.array([policy.margin_for(c) for c in cohorts], dtype=np.float64)
    floors = [policy.floor_for(c, ev) if c.guarded else None for c in cohorts]
    judged = _tests(base, cand, columns, binary, margins, floors, cohorts, policy)
    weights = columns.astype(np.float64)
    n = judged.n
    safe_n = np.maximum(n, 1)
    sums = weights @ np.column_stack([base, cand, k0, k1])
    if binary:
        p_drop = mcnemar_one_sided(judged.lost, judged.won)
    else:
        _, p_drop = score_test(judged.support, judged.counts, np.zeros(len(cohorts)), "lower")
    unjudged = np.zeros(len(cohorts), np.int64)
    p_pass_worst = np.full(len(cohorts), np.nan)
    p_met_worst = np.full(len(cohorts), np.nan)
    at_worst_base, at_worst_cand = _partly_judged(ev, base, cand, paired)
    partly = np.rint(weights @ ((at_worst_base != base) | (at_worst_cand != cand))).astype(np.int64)
    one_sided = ev.unjudged is not None and np.asarray(ev.unjudged.rows).size > 0
    if one_sided or partly.any():
        worst_base, worst_cand = np.zeros(0), np.zeros(0)
        worst_columns = np.zeros((len(cohorts), 0), np.bool_)
        if ev.unjudged is not None and one_sided:
            worst_base, worst_cand, worst_columns = _worst_case(
                ev.unjudged, membership, ev.name, paired
            )
        all_base = np.concatenate([at_worst_base, worst_base])
        all_cand = np.concatenate([at_worst_cand, worst_cand])
        values = np.concatenate([all_base, all_cand])
        worst = _tests(
            all_base,
            all_cand,
            np.hstack([columns, worst_columns]),
            binary and bool(np.all((values == 0) | (values == 1))),
            margins,
            floors,
            cohorts,
            policy,
        )
        unjudged = worst_columns.sum(axis=1).astype(np.int64)
        some = (unjudged > 0) | (partly > 0)
        p_pass_worst = np.where(some, worst.p_pass, np.nan)
        p_met_worst = np.where(some, worst.p_floor_met, np.nan)
    if not paired:
        nothing = np.full(len(cohorts), np.nan)
        sums[:, 0], sums[:, 2] = nothing, nothing
        p_drop = np.ones(len(cohorts))
        p_pass_worst = np.full(len(cohorts), np.nan)
        judged = dataclasses.replace(
            judged,
            p_block=np.ones(len(cohorts)),
            p_pass=np.ones(len(cohorts)),
            method=["none"] * len(cohorts),
        )
    return _Evaluated(
        name=ev.name,
        binary=binary,
        paired=paired,
        n=n,
        baseline=np.where(n > 0, sums[:, 0] / safe_n, np.nan),
        candidate=np.where(n > 0, sums[:, 1] / safe_n, np.nan),
        base_repeats=np.where(n > 0, sums[:, 2] / safe_n, np.nan),
        cand_repeats=np.where(n > 0, sums[:, 3] / safe_n, np.nan),
        lost=judged.lost,
        won=judged.won,
        support=judged.support,
        counts=judged.counts,
        margins=margins,
        p_block=np.where(n > 0, judged.p_block, 1.0),
        p_pass=np.where(n > 0, judged.p_pass, 1.0),
        p_drop=np.where(n > 0, p_drop, 1.0),
        method=judged.method,
        upper=np.full(len(cohorts), np.nan),
        lower=np.full(len(cohorts), np.nan),
        bound_method=["none"] * len(cohorts),
        floors=floors,
        p_floor_broken=judged.p_floor_broken,
        p_floor_met=judged.p_floor_met,
        unjudged=unjudged,
        partly_judged=partly,
        p_pass_worst=p_pass_worst,
        p_floor_met_worst=p_met_worst,
    )


def _partly_judged(
    ev: EvaluatorOutcomes, base: FloatArray, cand: FloatArray, paired: bool
) -> tuple[FloatArray, FloatArray]:
    """The paired rows' values with their calls without a verdict at their worst
    (``EvaluatorOutcomes.baseline_worst``/``candidate_worst``), or the values themselves.
    Neither side's worst may be better for a pass than its value."""
    worst_cand = cand
    if ev.candidate_worst is not None:
        worst_cand = as_float_vector(ev.candidate_worst, f"{ev.name}: candidate_worst", cand.size)
    worst_base = base
    if ev.baseline_worst is not None and paired:
        worst_base = as_float_vector(ev.baseline_worst, f"{ev.name}: baseline_worst", base.size)
    if not paired:
        worst_base = worst_cand  # only the candidate's floor reads these
    if np.any(worst_cand > cand + 1e-12) or (np.any(worst_base < base - 1e-12) and paired):
        raise ValueError(f"{ev.name}: a value at its worst cannot be better for a pass")
    if np.any((worst_base < 0) | (worst_base > 1) | (worst_cand < 0) | (worst_cand > 1)):
        raise ValueError(f"{ev.name}: per-row values must lie in [0, 1]")
    return worst_base, worst_cand


def _columns(rows: npt.ArrayLike | None, size: int, membership: BoolArray, name: str) -> IntArray:
    """The membership columns of an evaluator's values: ``rows``, or every column in order."""
    if rows is None:
        if size != membership.shape[1]:
            raise ValueError(f"{name}: {size} values for {membership.shape[1]} rows")
        return np.arange(size, dtype=np.int64)
    index = np.asarray(rows, dtype=np.int64)
    if index.shape != (size,) or np.unique(index).size != index.size:
        raise ValueError(f"{name}: rows must be distinct, one per value")
    if index.size and (index.min() < 0 or index.max() >= membership.shape[1]):
        raise ValueError(f"{name}: rows out of range")
    return index


def _worst_case(
    unjudged: UnjudgedRows, membership: BoolArray, name: str, paired: bool = True
) -> tuple[FloatArray, FloatArray, BoolArray]:
    """The rows judged on one side only, at their worst for a pass: the candidate's missing
    verdicts as fails (0), the baseline's as passes (1); and their membership columns. For
    an evaluator only the candidate ran (not ``paired``) every row lacks the candidate's
    verdict, and the baseline's values are not read."""
    cand = np.asarray(unjudged.candidate, dtype=np.float64)
    if paired:
        base = np.asarray(unjudged.baseline, dtype=np.float64)
    else:
        cand = np.full(cand.shape, np.nan)
        base = np.ones(cand.shape)
    index = _columns(unjudged.rows, base.size, membership, f"{name}: unjudged")
    if cand.shape != base.shape:
        raise ValueError(f"{name}: unjudged rows need one baseline and one candidate value each")
    missing_base, missing_cand = np.isnan(base), np.isnan(cand)
    if np.any(missing_base == missing_cand):
        raise ValueError(f"{name}: an unjudged row lacks exactly one side's verdict")
    worst_base = np.where(missing_base, 1.0, base)
    worst_cand = np.where(missing_cand, 0.0, cand)
    if np.any((worst_base < 0) | (worst_base > 1) | (worst_cand < 0) | (worst_cand > 1)):
        raise ValueError(f"{name}: per-row values must lie in [0, 1]")
    return worst_base, worst_cand, membership[:, index]


@dataclass(frozen=True)
class _Tests:
    """The margin and floor tests of one evaluator's paired values, per cohort."""

    n: IntArray
    lost: IntArray
    won: IntArray
    support: FloatArray
    counts: FloatArray
    p_block: FloatArray
    p_pass: FloatArray
    method: list[Method]
    p_floor_broken: FloatArray
    p_floor_met: FloatArray


def _tests(
    base: FloatArray,
    cand: FloatArray,
    columns: BoolArray,
    binary: bool,
    margins: FloatArray,
    floors: Sequence[float | None],
    cohorts: Sequence[CohortSpec],
    policy: DecisionPolicy,
) -> _Tests:
    """Score tests of the margin (exact ones for small guarded pass/fail cohorts) and the
    floor tests, on rows ``columns`` (cohorts x values) says each cohort holds."""
    weights = columns.astype(np.float64)
    n = columns.sum(axis=1).astype(np.int64)
    d = cand - base
    lost = np.rint(weights @ (d < 0)).astype(np.int64)
    won = np.rint(weights @ (d > 0)).astype(np.int64)
    support, counts = _value_counts(d, weights)
    _, p_block = score_test(support, counts, -margins, "lower")
    _, p_pass = score_test(support, counts, -margins, "upper")
    method: list[Method] = ["score" if size else "none" for size in n]
    for k, cohort in enumerate(cohorts):
        if binary and cohort.guarded and 0 < n[k] <= policy.exact_max_n:
            size, b, c = int(n[k]), int(lost[k]), int(won[k])
            p_block[k] = exact_pvalue(size, b, c, -margins[k], "lower")
            p_pass[k] = exact_pvalue(size, b, c, -margins[k], "upper")
            method[k] = "exact"
    p_broken = np.full(len(cohorts), np.nan)
    p_met = np.full(len(cohorts), np.nan)
    floored = np.array([f is not None for f in floors])
    if floored.any():
        levels = np.array([f if f is not None else 0.5 for f in floors], dtype=np.float64)
        if binary:
            passes = np.rint(weights @ cand).astype(np.int64)
            broken, met = binomial_floor_pvalues(passes, n, levels)
        else:
            values, value_counts = _value_counts(cand, weights)
            inside = np.clip(levels, 1e-9, 1.0 - 1e-9)
            _, broken = score_test(values, value_counts, inside, "lower", lo=0.0, hi=1.0)
            _, met = score_test(values, value_counts, inside, "upper", lo=0.0, hi=1.0)
            broken = np.where(levels <= 0.0, 1.0, broken)
            met = np.where(levels <= 0.0, 0.0, np.where(levels >= 1.0, 1.0, met))
        p_broken = np.where(floored, broken, np.nan)
        p_met = np.where(floored, met, np.nan)
    return _Tests(n, lost, won, support, counts, p_block, p_pass, method, p_broken, p_met)


def _repeats(values: npt.ArrayLike, size: int, name: str) -> FloatArray:
    array = np.broadcast_to(np.asarray(values, dtype=np.float64), (size,))
    if np.any(array < 1) or np.any(array != np.floor(array)):
        raise ValueError(f"{name} must be whole numbers >= 1")
    return np.asarray(array, dtype=np.float64)


def _value_counts(values: FloatArray, weights: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Distinct values (rounded to 1e-12) and how often each occurs in each cohort."""
    support, index = np.unique(np.round(values, 12), return_inverse=True)
    if support.size == 0:
        return np.zeros(1), np.zeros((weights.shape[0], 1))
    # One bincount per cohort, not a (rows x support) indicator matrix: graded scores make
    # nearly every row's value distinct, and that matrix would be rows^2.
    counts = np.empty((weights.shape[0], support.size))
    for k, row_weights in enumerate(weights):
        counts[k] = np.bincount(index, weights=row_weights, minlength=support.size)
    return support, counts


def _num(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _common(ev: _Evaluated, cohort: CohortSpec, k: int) -> dict[str, Any]:
    empty = ev.n[k] == 0 or not ev.paired
    return {
        "evaluator": ev.name,
        "cohort": cohort.name,
        "cohort_index": k,
        "dimension": cohort.dimension,
        "value": cohort.value,
        "guarded": cohort.guarded,
        "risk": cohort.risk,
        "n": int(ev.n[k]),
        "baseline_repeats": _num(ev.base_repeats[k]),
        "candidate_repeats": _num(ev.cand_repeats[k]),
        "method": ev.method[k],
        "baseline": _num(ev.baseline[k]),
        "candidate": _num(ev.candidate[k]),
        "delta": None if empty else float(ev.candidate[k] - ev.baseline[k]),
        "discordant": int(ev.lost[k] + ev.won[k]),
        "lost": int(ev.lost[k]),
        "won": int(ev.won[k]),
        "margin": float(ev.margins[k]),
        "upper_bound": _num(ev.upper[k]),
        "lower_bound": _num(ev.lower[k]),
        "bound_method": ev.bound_method[k],
        "p_block": float(ev.p_block[k]),
        "p_pass": float(ev.p_pass[k]),
        "p_drop": float(ev.p_drop[k]),
        "unjudged": int(ev.unjudged[k]),
        "partly_judged": int(ev.partly_judged[k]),
        "p_pass_worst_case": _num(ev.p_pass_worst[k]),
    }


def _guarded_record(
    ev: _Evaluated,
    cohort: CohortSpec,
    k: int,
    policy: DecisionPolicy,
    alpha: float,
    block_adjusted: float,
    floor_adjusted: float | None,
    drop_adjusted: float,
    n_guarded: int,
    block_share: float,
) -> ComparisonRecord:
    common = _common(ev, cohort, k)
    n, m = int(ev.n[k]), float(ev.margins[k])
    delta = common["delta"]
    discordant = common["discordant"]
    unjudged = common["unjudged"]
    # A pass claim holds only if it also holds with the rows judged on one side only at their
    # worst (UnjudgedRows); NaN when the cohort has none, where nothing more is asked.
    non_inferior = ev.p_pass[k] <= alpha / 2.0
    non_inferior_at_worst = not ev.p_pass_worst[k] > alpha / 2.0
    floor = ev.floors[k]
    floor_met_at_worst = not ev.p_floor_met_worst[k] > alpha / 2.0
    floor_status: Literal["broken", "met", "unclear"] | None = None
    if floor is not None:
        if floor_adjusted is not None and floor_adjusted <= alpha:
            floor_status = "broken"
        elif ev.p_floor_met[k] <= alpha / 2.0 and floor_met_at_worst:
            floor_status = "met"
        else:
            floor_status = "unclear"
    partly = common["partly_judged"]
    missing = unjudged + partly
    at_worst = (
        " and ".join(
            ([f"{unjudged} row(s) judged on one side only"] if unjudged else [])
            + ([f"{partly} row(s) with calls without a verdict"] if partly else [])
        )
        + ", at their worst (the candidate's missing verdicts as fails, the baseline's as "
        "passes)"
    )
    needed: tuple[int | None, int | None, int | None] = (None, None, None)
    if n > 0 and ev.paired:
        req = required_rows(
            ev.support,
            ev.counts[k],
            m,
            alpha=alpha,
            power=policy.power,
            block_power=policy.block_power,
            effect=policy.min_effect,
            guarded_comparisons=n_guarded,
            block_share=block_share,
        )
        needed = (req.rows, req.pass_rows, req.block_rows)
    shown_drop = block_adjusted <= alpha
    status: Status
    if n == 0:
        status, reason = "inconclusive", "no rows of this cohort were scored by both runs"
        if unjudged:
            reason += f" ({unjudged} row(s) judged on one side only)"
    elif not ev.paired:
        status, reason = _floor_only(ev, k, floor, floor_status, floor_adjusted, alpha, at_worst)
    elif shown_drop or floor_status == "broken":
        status = "block"
        parts = []
        if shown_drop:
            parts.append(
                f"drop {delta:+.4f} shown beyond the margin {m:g} (p = {ev.p_block[k]:.3g}, "
                f"{policy.correction}-adjusted {block_adjusted:.3g} <= {alpha:.4g})"
            )
        if floor_status == "broken":
            parts.append(
                f"candidate {ev.candidate[k]:.4f} shown below the floor {floor:g} "
                f"(p = {ev.p_floor_broken[k]:.3g}, adjusted {floor_adjusted:.3g} <= {alpha:.4g})"
            )
        reason = "; ".join(parts)
    elif non_inferior and non_inferior_at_worst and floor_status in (None, "met"):
        status = "pass"
        reason = (
            f"non-inferior: a drop of {m:g} is ruled out (p = {ev.p_pass[k]:.3g} <= "
            f"{alpha / 2.0:.4g})"
        )
        if floor_status == "met":
            reason += f"; candidate shown at or above the floor {floor:g}"
        if missing:
            reason += f"; also with the {at_worst}"
    else:
        status = "inconclusive"
        if discordant < policy.min_discordant and ev.p_block[k] <= alpha:
            reason = (
                f"only {discordant} discordant rows: at least {policy.min_discordant} are needed "
                "before a cohort can block on its own"
            )
        elif non_inferior and not non_inferior_at_worst:
            reason = (
                f"non-inferior on the {n} rows both runs judged, but not with the {at_worst}: "
                f"p = {ev.p_pass_worst[k]:.3g}, so the missing verdicts may hide a drop of {m:g}"
            )
        elif non_inferior:
            reason = f"non-inferior, but not shown at or above the floor {floor:g}"
            if not floor_met_at_worst:
                reason += f" with the {at_worst}"
        else:
            reason = (
                f"neither a drop beyond the margin {m:g} (p = {ev.p_block[k]:.3g}, adjusted "
                f"{block_adjusted:.3g}) nor non-inferiority (p = {ev.p_pass[k]:.3g}) is shown"
            )
            if floor_status == "unclear":
                reason += f"; not shown at or above the floor {floor:g}"
        if needed[0] is not None and needed[0] > n:
            reason += f"; about {needed[0]} rows needed to decide ({n} scored)"
    warning = None
    if status != "block" and drop_adjusted <= policy.alpha and delta is not None:
        warning = (
            f"significant drop {delta:+.4f} inside the margin {m:g} (BH-adjusted p = "
            f"{drop_adjusted:.3g}): a warning, not a block"
        )
    return ComparisonRecord(
        **common,
        p_block_adjusted=block_adjusted,
        p_drop_adjusted=drop_adjusted,
        floor=floor,
        p_floor_broken=_num(ev.p_floor_broken[k]) if floor is not None else None,
        p_floor_broken_adjusted=floor_adjusted,
        p_floor_met=_num(ev.p_floor_met[k]) if floor is not None else None,
        p_floor_met_worst_case=_num(ev.p_floor_met_worst[k]) if floor is not None else None,
        floor_status=floor_status,
        status=status,
        reason=reason,
        warning=warning,
        required_n=needed[0],
        required_n_pass=needed[1],
        required_n_block=needed[2],
    )


def _floor_only(
    ev: _Evaluated,
    k: int,
    floor: float | None,
    floor_status: Literal["broken", "met", "unclear"] | None,
    floor_adjusted: float | None,
    alpha: float,
    at_worst: str,
) -> tuple[Status, str]:
    """The status of a guarded comparison of an evaluator only the candidate ran: its floor
    alone, by the candidate's bound (there are no pairs for a margin test)."""
    only = "only the candidate's runs ran this evaluator: no margin test"
    if floor is None:
        return "inconclusive", f"{only}, and no floor applies to the cohort"
    if floor_status == "broken":
        return "block", (
            f"candidate {ev.candidate[k]:.4f} shown below the floor {floor:g} "
            f"(p = {ev.p_floor_broken[k]:.3g}, adjusted {floor_adjusted:.3g} <= {alpha:.4g}); "
            f"{only}"
        )
    if floor_status == "met":
        reason = f"candidate shown at or above the floor {floor:g}; {only}"
        if ev.unjudged[k] or ev.partly_judged[k]:
            reason += f"; also with the {at_worst}"
        return "pass", reason
    reason = (
        f"not shown at or above the floor {floor:g} (p = {ev.p_floor_met[k]:.3g}"
        + (
            f"; {ev.p_floor_met_worst[k]:.3g} with the {at_worst}"
            if np.isfinite(ev.p_floor_met_worst[k])
            else ""
        )
        + f"); {only}"
    )
    return "inconclusive", reason


def _unguarded_record(
    ev: _Evaluated,
    cohort: CohortSpec,
    k: int,
    policy: DecisionPolicy,
    drop_adjusted: float,
    block_adjusted: float,
) -> ComparisonRecord:
    common = _common(ev, cohort, k)
    delta = common["delta"]
    status: Status = "report"
    reason = "not guarded: reported only"
    warning = None
    if delta is not None and drop_adjusted <= policy.alpha:
        status = "warn"
        beyond = (
            f", shown beyond the margin {ev.margins[k]:g} (BH-adjusted p = {block_adjusted:.3g})"
            if block_adjusted <= policy.alpha
            else ""
        )
        warning = (
            f"drop {delta:+.4f} (BH-adjusted p = {drop_adjusted:.3g}){beyond}; the cohort is "
            "not guarded, so it cannot block: declare its risk to guard it"
        )
        reason = "not guarded: " + warning
    return ComparisonRecord(
        **common,
        p_block_adjusted=block_adjusted,
        p_drop_adjusted=drop_adjusted,
        floor=None,
        p_floor_broken=None,
        p_floor_broken_adjusted=None,
        p_floor_met=None,
        p_floor_met_worst_case=None,
        floor_status=None,
        status=status,
        reason=reason,
        warning=warning,
        required_n=None,
        required_n_pass=None,
        required_n_block=None,
    )


def _describe(r: ComparisonRecord) -> str:
    risk = f"{r.risk} risk" if r.risk else "no declared risk"
    values = (
        f"{r.baseline:.3f} -> {r.candidate:.3f}, delta {r.delta:+.3f}"
        if r.baseline is not None and r.candidate is not None and r.delta is not None
        else "no rows"
    )
    return f"{r.evaluator} on {r.cohort} ({risk}, {r.n} rows): {values}"


def _reason(severity: str, r: ComparisonRecord, message: str) -> dict[str, Any]:
    return {
        "severity": severity,
        "message": message,
        "evaluator": r.evaluator,
        "cohort": r.cohort,
        "cohort_index": r.cohort_index,
        "dimension": r.dimension,
        "value": r.value,
        "n": r.n,
        "required_n": r.required_n,
    }


def _reasons(
    verdict: GateVerdict,
    records: list[ComparisonRecord],
    policy: DecisionPolicy,
    alpha: float,
    attempt: int,
) -> list[dict[str, Any]]:
    reasons: list[dict[str, Any]] = []
    guarded = [r for r in records if r.guarded]
    if verdict == "pass":
        reasons.append(
            {
                "severity": "info",
                "message": f"all {len(guarded)} guarded cohort x evaluator comparisons rule out "
                f"a drop of their margin (one-sided level {alpha / 2.0:.4g} each)",
            }
        )
    for r in guarded:
        if r.status == "block":
            reasons.append(_reason("block", r, f"{_describe(r)}: {r.reason}"))
    if verdict != "pass":
        for r in guarded:
            if r.status == "inconclusive":
                reasons.append(_reason("inconclusive", r, f"{_describe(r)}: {r.reason}"))
    for r in records:
        if r.warning is not None:
            reasons.append(_reason("warn", r, f"{_describe(r)}: {r.warning}"))
    if not math.isclose(alpha, policy.alpha):
        reasons.append(
            {
                "severity": "info",
                # Not "spent": an exploratory gate is decided at this budget and spends none.
                "message": f"error budget of attempt {attempt}: alpha = {alpha:.4g} "
                f"(policy alpha / 2^{attempt - 1})",
            }
        )
    return reasons
