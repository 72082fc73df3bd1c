"""Fetching what a gate compares: two checkpoints' pooled runs, paired by dataset row.

A gate compares checkpoints, not single runs. Each side is every succeeded run of its
checkpoint on its run's dataset version (the candidate's version for the candidate), so a
re-run adds evidence instead of redrawing it and no run can be picked for luck
(docs/statistics.md §7.3). The database groups each run x evaluator x row into (passes,
summed score, calls); numpy pools each side's runs into per-row means over all calls
(app.stats.retry.pool_runs) and pairs the sides by row key on the candidate's version, with
the rows' risk and cohorts. A result whose evaluator could not reach a verdict (`error`) is
left out like a row without a result, and the notes count those left out; a row one side
judged and the other only errored on is kept apart (`OneSided`): whether a verdict is
missing depends on the output, so a pass must hold with it at its worst (app.stats.gate.
UnjudgedRows). A call of the baseline's that has no output (its endpoint failed, or none
was produced) is left out in the same way, its fails being its endpoint's outage, not
verdicts: the baseline is the yardstick, and one run taken during an outage would otherwise
make every later candidate look better than it. The candidate's calls without an output
stay its fails: its endpoint failing on a prompt is its failure. A row of the candidate's
version that the baseline's version lacks, or asks differently, has no baseline verdict
either, and is kept apart the same way: the baseline never answered that question.
An evaluator set up differently (its stored spec) in any of the pooled runs is compared on
no rows, except for a threshold under `mean_score` (it decides `passed`, not the score) and
the params its evaluator declares unscored (a judge's timeout, retries and key variable
decide whether a verdict is reached, not which).
Reading happens outside any write transaction: on SQLite every transaction holds the single
writer lock."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import (
    ClauseElement,
    ColumnElement,
    Connection,
    Select,
    Text,
    and_,
    case,
    cast,
    func,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session, aliased

from app.datasets.parsing import RESERVED_DIMENSIONS
from app.gates.schemas import GateMetric
from app.models import DatasetRow, EvalResult, EvaluationRun, RunOutput
from app.models.runs import RunStatus
from app.stats._arrays import BoolArray, FloatArray, IntArray
from app.stats.retry import pool_runs
from plumbline.evals import Evaluator, available_evaluators


@dataclass(frozen=True)
class OneSided:
    """One evaluator's rows (indexing PairedResults.keys) that one side judged while every
    call of the other side's ended in an evaluator error (or, on the baseline's side, had
    no output, or the row is not in the baseline's dataset version as the candidate's asks
    it): per-row means over the judged side's calls, NaN on the side without a verdict."""

    rows: IntArray
    baseline_pass_rate: FloatArray
    candidate_pass_rate: FloatArray
    baseline_score: FloatArray
    candidate_score: FloatArray


@dataclass(frozen=True)
class EvaluatorPairs:
    """One evaluator's per-row means on the rows both sides scored; `rows` index
    PairedResults.keys. Pass rates and scores are means over each side's calls of a row."""

    name: str
    rows: IntArray
    baseline_pass_rate: FloatArray
    candidate_pass_rate: FloatArray
    baseline_score: FloatArray
    candidate_score: FloatArray
    baseline_calls: IntArray
    candidate_calls: IntArray
    baseline_missing: IntArray
    """Per row, the baseline's calls without a verdict (evaluator errors, calls without an
    output), left out of its mean: a pass must hold with them as passes."""
    candidate_missing: IntArray
    """Per row, the candidate's calls its evaluator reached no verdict on, left out of its
    mean: a pass must hold with them as fails."""
    one_sided: OneSided
    candidate_only: bool = False
    """Only the candidate's runs ran it (a floor applies): the baseline's values are NaN and
    its calls 0; `one_sided` holds the rows the candidate's evaluator never judged."""


@dataclass(frozen=True)
class PairedResults:
    keys: list[str]
    risks: list[str]
    dimensions: dict[str, list[str | None]]
    evaluators: list[EvaluatorPairs]
    candidate_run_ids: list[int]
    baseline_run_ids: list[int]
    notes: list[str] = field(default_factory=list)
    unpaired_risks: set[str] = field(default_factory=set)
    """Risk levels the candidate's version has rows of, none of them scored by both sides."""
    unpaired_cohorts: dict[str, set[str]] = field(default_factory=dict)
    """Per dimension, the cohorts the candidate's version has rows of, none of them scored
    by both sides (a baseline run on an older version never saw them)."""
    candidate_only: list[str] = field(default_factory=list)
    """Evaluators only the candidate's runs ran: nothing to pair them with. Those a floor
    applies to are also in `evaluators` (`candidate_only=True`), for their floor test."""


@dataclass(frozen=True)
class _Totals:
    """One run x evaluator: per row (dataset row ids, ascending) passes, summed score, calls."""

    row_ids: IntArray
    passes: FloatArray
    scores: FloatArray
    calls: IntArray


@dataclass(frozen=True)
class _Side:
    """One side's pooled per-row means over the version's rows (NaN where never scored);
    `unjudged` marks the rows whose every call was an evaluator error (or, on the baseline's
    side, a call without an output); `missing` counts each row's calls without a verdict
    (errors, and the baseline's calls without an output), which `calls` leaves out."""

    pass_rate: FloatArray
    score: FloatArray
    calls: IntArray
    unjudged: BoolArray
    missing: IntArray


def pooled_run_ids(session: Session, run: EvaluationRun) -> list[int]:
    """Every succeeded run of `run`'s checkpoint on `run`'s dataset version, ascending."""
    return list(
        session.scalars(
            select(EvaluationRun.id)
            .where(
                EvaluationRun.project_id == run.project_id,
                EvaluationRun.checkpoint_id == run.checkpoint_id,
                EvaluationRun.dataset_version_id == run.dataset_version_id,
                EvaluationRun.status == RunStatus.succeeded,
            )
            .order_by(EvaluationRun.id)
        )
    )


def _no_floor(name: str) -> bool:
    return False


def load_pairs(
    session: Session,
    candidate: EvaluationRun,
    baseline: EvaluationRun,
    metric: GateMetric,
    floored: Callable[[str], bool] = _no_floor,
) -> PairedResults:
    """Both sides' pooled runs as per-row means per evaluator on the candidate version's rows
    (one grouped query), the shared rows' risk and cohorts (a second query), and the calls
    without a verdict: evaluator errors on either side and the baseline's calls without an
    output (two small queries over those results only). An evaluator whose runs were set up
    differently in what `metric` reads is compared on no rows (`_differing_specs`). An
    evaluator only the candidate ran that `floored` names keeps the candidate's rows: a floor
    needs no baseline (docs/statistics.md §6.2)."""
    connection = session.connection()
    sides = {
        "candidate": pooled_run_ids(session, candidate),
        "baseline": pooled_run_ids(session, baseline),
    }
    project_id, version_id = candidate.project_id, candidate.dataset_version_id
    all_ids, keys, risks, cohorts = _version_rows(connection, project_id, version_id)
    run_ids = sides["candidate"] + sides["baseline"]
    repeats = session.scalar(
        select(func.max(EvaluationRun.repeats)).where(
            EvaluationRun.project_id == project_id, EvaluationRun.id.in_(run_ids)
        )
    )
    totals = _fetch_totals(connection, project_id, version_id, run_ids, one_call=repeats == 1)
    no_output = _calls_without_output(connection, project_id, version_id, sides["baseline"])
    for run_and_name, left_out in no_output.items():
        totals[run_and_name] = _less(totals[run_and_name], left_out)
    pooled = {side: _pool(totals, run_ids, all_ids) for side, run_ids in sides.items()}
    notes = []
    errored, error_notes = _errors(connection, project_id, version_id, sides)
    # The baseline's calls without an output reached no verdict on it, like its errors.
    for (_, name), left_out in no_output.items():
        errored["baseline"].setdefault(name, []).append((left_out.row_ids, left_out.calls))
    for side, by_name in errored.items():
        for name, parts in by_name.items():
            # An evaluator a side ran without one verdict is still on that side: missing.
            pooled_side = pooled[side].setdefault(name, _never_judged(all_ids.size))
            for row_ids, count in parts:
                np.add.at(pooled_side.missing, np.searchsorted(all_ids, row_ids), count)
            pooled_side.unjudged[:] = (pooled_side.missing > 0) & (pooled_side.calls == 0)
    # Rows the baseline's version lacks, or asks differently, have no baseline verdict: like
    # its judge's errors, they stay out of the numbers and the block tests, and a pass must
    # hold with the baseline passing them (docs/statistics.md §6.1).
    baseline_version_id = baseline.dataset_version_id
    changed = _rows_asked_differently(session, project_id, version_id, baseline_version_id)
    added = _rows_not_in(session, project_id, version_id, baseline_version_id)
    if changed.size or added.size:
        unasked = np.isin(all_ids, np.union1d(changed, added))
        for pooled_side in pooled["baseline"].values():
            pooled_side.calls[unasked] = 0
            pooled_side.pass_rate[unasked] = np.nan
            pooled_side.score[unasked] = np.nan
            pooled_side.unjudged[unasked] = True
            pooled_side.missing[unasked] = 0
    at_worst = "a pass must hold with the baseline passing them"
    if changed.size:
        notes.append(
            f"{changed.size} row(s) changed what they ask or expect since the baseline's "
            f"dataset version (same key, other content): not paired, no baseline verdict; "
            f"{at_worst}"
        )
    if added.size:
        notes.append(
            f"{added.size} row(s) of the candidate's dataset version are not in the "
            f"baseline's: no baseline verdict; {at_worst}"
        )
    candidate_only = set(pooled["candidate"]) - set(pooled["baseline"])
    differing = _differing_specs(session, project_id, run_ids, _NOT_READ_BY[metric])
    alone = {name: pooled["candidate"][name] for name in sorted(candidate_only) if floored(name)}
    if candidate_only - set(alone):
        listed = ", ".join(sorted(candidate_only - set(alone)))
        notes.append(f"evaluators only in the candidate runs, not compared: {listed}")
    # What the baseline was judged on and the candidate was not (or not the same way) cannot
    # be passed over: each is compared on no rows, which leaves its guarded cohorts
    # inconclusive (docs/statistics.md §6.1), never a better verdict than a bad score.
    uncompared = sorted(set(pooled["baseline"]) - set(pooled["candidate"]))
    if uncompared:
        notes.append(
            f"evaluators only in the baseline runs, compared on no rows: {', '.join(uncompared)}"
        )
    notes += error_notes
    if no_output:
        notes.append(_no_output_note(no_output))
    both: dict[str, tuple[_Side, _Side, IntArray, IntArray]] = {}
    # A floored evaluator only the candidate ran pools the candidate's runs alone: they too
    # must have measured one thing.
    for name in sorted((set(pooled["candidate"]) & set(pooled["baseline"])) | set(alone)):
        if name in differing:
            alone.pop(name, None)
            notes.append(
                f"evaluator '{name}' was not set up the same way in every compared run "
                f"({differing[name]}): its results do not measure one thing, compared on no rows"
            )
            uncompared.append(name)
            continue
        if name in alone:
            continue
        base, cand = pooled["baseline"][name], pooled["candidate"][name]
        scored = np.flatnonzero((base.calls > 0) & (cand.calls > 0))
        one_sided = np.flatnonzero(
            ((base.calls > 0) & cand.unjudged) | ((cand.calls > 0) & base.unjudged)
        )
        if scored.size or one_sided.size:
            both[name] = (base, cand, scored, one_sided)
    no_rows = np.empty(0, np.int64)
    shared = np.unique(
        np.concatenate(
            [
                no_rows,
                *(np.union1d(s, o) for _, _, s, o in both.values()),
                *(np.flatnonzero((side.calls > 0) | side.unjudged) for side in alone.values()),
            ]
        )
    )
    dimensions = _dimensions([cohorts[i] for i in shared])
    for dimension in sorted(d for d in dimensions if d in RESERVED_DIMENSIONS):
        del dimensions[dimension]
        notes.append(f"cohort dimension '{dimension}' clashes with a built-in cohort; ignored")
    unpaired_cohorts = {
        dimension: unpaired
        for dimension, labels in _dimensions(cohorts).items()
        if dimension not in RESERVED_DIMENSIONS
        and (
            unpaired := {label for label in labels if label is not None}
            - set(dimensions.get(dimension, ()))
        )
    }
    pairs = [
        EvaluatorPairs(
            name,
            np.searchsorted(shared, scored),
            base.pass_rate[scored],
            cand.pass_rate[scored],
            base.score[scored],
            cand.score[scored],
            base.calls[scored],
            cand.calls[scored],
            base.missing[scored],
            cand.missing[scored],
            OneSided(
                np.searchsorted(shared, one_sided),
                base.pass_rate[one_sided],
                cand.pass_rate[one_sided],
                base.score[one_sided],
                cand.score[one_sided],
            ),
        )
        for name, (base, cand, scored, one_sided) in both.items()
    ]
    pairs += [_candidate_alone(name, side, shared) for name, side in alone.items()]
    pairs += [_no_rows(name) for name in sorted(uncompared)]
    return PairedResults(
        [keys[i] for i in shared],
        [risks[i] for i in shared],
        dimensions,
        pairs,
        sides["candidate"],
        sides["baseline"],
        notes,
        set(risks) - {risks[i] for i in shared},
        unpaired_cohorts,
        sorted(candidate_only),
    )


_SCORED_CONTENT = ("input", "expected", "context", "expected_behavior", "label", "meta")
"""What evaluators read of a row (Sample); a row's cohort and risk are not scored."""


def _rows_asked_differently(
    session: Session, project_id: int, version_id: int, baseline_version_id: int
) -> IntArray:
    """Rows of the candidate's version whose scored content differs from the row of the same
    key in the baseline's version: answers to different questions are not a pair. Only rows
    whose hash differs (any field, cohort and risk included) are read and compared."""
    if baseline_version_id == version_id:
        return np.empty(0, np.int64)
    ours, theirs = aliased(DatasetRow), aliased(DatasetRow)
    rows = session.execute(
        select(
            ours.id,
            *(getattr(ours, name) for name in _SCORED_CONTENT),
            *(getattr(theirs, name) for name in _SCORED_CONTENT),
        )
        .join(
            theirs,
            and_(
                theirs.project_id == ours.project_id,
                theirs.version_id == baseline_version_id,
                theirs.key == ours.key,
            ),
        )
        .where(
            ours.project_id == project_id,
            ours.version_id == version_id,
            ours.row_hash != theirs.row_hash,
        )
    ).all()
    width = len(_SCORED_CONTENT)
    changed = [row[0] for row in rows if _as_json(row[1 : 1 + width]) != _as_json(row[1 + width :])]
    return np.asarray(changed, np.int64)


def _rows_not_in(
    session: Session, project_id: int, version_id: int, baseline_version_id: int
) -> IntArray:
    """Rows of the candidate's version whose key the baseline's version does not have: the
    baseline's runs never saw them."""
    if baseline_version_id == version_id:
        return np.empty(0, np.int64)
    theirs = aliased(DatasetRow)
    in_theirs = (
        select(theirs.id)
        .where(
            theirs.project_id == DatasetRow.project_id,
            theirs.version_id == baseline_version_id,
            theirs.key == DatasetRow.key,
        )
        .exists()
    )
    rows = session.scalars(
        select(DatasetRow.id).where(
            DatasetRow.project_id == project_id,
            DatasetRow.version_id == version_id,
            ~in_theirs,
        )
    ).all()
    return np.asarray(rows, np.int64)


def _as_json(content: Sequence[Any]) -> str:
    """Row content as JSON text. Python's == takes 1, 1.0 and true for one value; an
    evaluator reading the row (a plugin comparing types, a check of its text) may not."""
    return json.dumps(list(content), sort_keys=True, default=str)


def _candidate_alone(name: str, side: _Side, shared: IntArray) -> EvaluatorPairs:
    """An evaluator only the candidate ran, for its floor test: the candidate's per-row
    means where it judged, and the rows it only errored on (at their worst, fails)."""
    scored, unjudged = np.flatnonzero(side.calls > 0), np.flatnonzero(side.unjudged)
    nothing, never = np.full(scored.size, np.nan), np.full(unjudged.size, np.nan)
    return EvaluatorPairs(
        name,
        np.searchsorted(shared, scored),
        nothing,
        side.pass_rate[scored],
        nothing,
        side.score[scored],
        np.zeros(scored.size, np.int64),
        side.calls[scored],
        np.zeros(scored.size, np.int64),
        side.missing[scored],
        OneSided(np.searchsorted(shared, unjudged), never, never, never, never),
        candidate_only=True,
    )


def _no_rows(name: str) -> EvaluatorPairs:
    empty, counts = np.empty(0), np.empty(0, np.int64)
    one_sided = OneSided(counts, empty, empty, empty, empty)
    return EvaluatorPairs(
        name, counts, empty, empty, empty, empty, counts, counts, counts, counts, one_sided
    )


_NOT_READ_BY: dict[GateMetric, frozenset[str]] = {
    "pass_rate": frozenset(),
    "mean_score": frozenset({"threshold"}),
}
"""Per metric, the settings of an evaluator's spec that cannot change it: a threshold only
decides `passed` (plumbline.evals.base: passed is score >= threshold), never the score, so
two runs scored alike at two thresholds have one mean score. Anything else (params, and any
setting a later spec adds) may change what a score means, and must match, except the params
an evaluator declares unscored (Evaluator.unscored_params: how a verdict is reached, never
which one)."""


def _differing_specs(
    session: Session, project_id: int, run_ids: Sequence[int], ignored: frozenset[str]
) -> dict[str, str]:
    """Evaluators whose stored spec (threshold, params, every default filled in at creation),
    less its `ignored` settings, differs between the runs: per name, the differing settings
    as "key: a | b"."""
    specs: dict[str, list[dict[str, Any]]] = {}
    classes = available_evaluators()
    for evaluators in session.scalars(
        select(EvaluationRun.evaluators).where(
            EvaluationRun.project_id == project_id, EvaluationRun.id.in_(run_ids)
        )
    ):
        for spec in evaluators:
            name = str(spec.get("name"))
            forms = specs.setdefault(name, [])
            compared = _measured(spec, ignored, classes.get(name))
            if compared not in forms:
                forms.append(compared)
    differing = {}
    for name, forms in specs.items():
        if len(forms) < 2:
            continue
        settings = []
        for key in sorted({key for form in forms for key in form}):
            values = sorted({_canonical(form.get(key)) for form in forms})
            if len(values) > 1:
                settings.append(f"{key}: {' | '.join(values)}")
        differing[name] = "; ".join(settings)
    return differing


def _measured(
    spec: dict[str, Any], ignored: frozenset[str], evaluator: type[Evaluator[Any]] | None
) -> dict[str, Any]:
    """The settings of a stored spec that may change what the metric reads: less `ignored`,
    its params one by one ("params.<name>", so a note names the one that differs) less those
    its evaluator declares unscored (a judge's timeout, retries and key variable decide only
    whether a verdict is reached; a call without one is an error, left out). An evaluator no
    longer installed declares nothing."""
    unscored = evaluator.unscored_params if evaluator is not None else frozenset()
    measured = {key: value for key, value in spec.items() if key not in ignored}
    params = measured.pop("params", None)
    if not isinstance(params, dict):
        return {**measured, "params": params} if "params" in spec else measured
    return measured | {
        f"params.{key}": value for key, value in params.items() if key not in unscored
    }


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _pool(
    totals: dict[tuple[int, str], _Totals], run_ids: Sequence[int], all_ids: IntArray
) -> dict[str, _Side]:
    """Per evaluator, the runs' per-row totals stacked over the version's rows and pooled."""
    names = sorted({name for run_id, name in totals if run_id in run_ids})
    out = {}
    for name in names:
        runs = [totals[(run_id, name)] for run_id in run_ids if (run_id, name) in totals]
        shape = (len(runs), all_ids.size)
        passes, scores, calls = np.zeros(shape), np.zeros(shape), np.zeros(shape, np.int64)
        for i, run in enumerate(runs):
            at = np.searchsorted(all_ids, run.row_ids)
            passes[i, at], scores[i, at], calls[i, at] = run.passes, run.scores, run.calls
        pass_rate, pooled_calls = pool_runs(passes, calls)
        # Scores lie in [0, 1]; the clip only absorbs rounding in the database's sums.
        score, _ = pool_runs(np.clip(scores, 0.0, calls), calls)
        nothing = np.zeros(all_ids.size, np.int64)
        out[name] = _Side(pass_rate, score, pooled_calls, nothing.astype(np.bool_), nothing)
    return out


def _never_judged(size: int) -> _Side:
    """A side's evaluator whose every result on the version is an error."""
    return _Side(
        np.full(size, np.nan),
        np.full(size, np.nan),
        np.zeros(size, np.int64),
        np.zeros(size, np.bool_),
        np.zeros(size, np.int64),
    )


def _cohort_label(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def _version_rows(
    connection: Connection, project_id: int, version_id: int
) -> tuple[IntArray, list[str], list[str], list[dict[str, Any] | None]]:
    """Ids (ascending), keys, risk levels and cohorts of every row of the version. The
    cohorts come as JSON text and are decoded in one call, not one per row."""
    rows = _driver_rows(
        connection,
        select(DatasetRow.id, DatasetRow.key, DatasetRow.risk, cast(DatasetRow.cohort, Text))
        .where(DatasetRow.project_id == project_id, DatasetRow.version_id == version_id)
        .order_by(DatasetRow.id),
    )
    ids = np.fromiter((row[0] for row in rows), np.int64, len(rows))
    cohorts = json.loads(f"[{','.join(row[3] or 'null' for row in rows)}]")
    return ids, [row[1] for row in rows], [str(row[2]) for row in rows], cohorts


def _dimensions(cohorts: Sequence[dict[str, Any] | None]) -> dict[str, list[str | None]]:
    """Each dimension's label per row (None where a row has no value for it)."""
    dimensions: dict[str, list[str | None]] = {}
    for i, cohort in enumerate(cohorts):
        for dimension, value in (cohort or {}).items():
            column = dimensions.get(dimension)
            if column is None:
                column = dimensions[dimension] = [None] * len(cohorts)
            column[i] = _cohort_label(value)
    return dimensions


def _fetch_totals(
    connection: Connection,
    project_id: int,
    version_id: int,
    run_ids: Sequence[int],
    one_call: bool,
) -> dict[tuple[int, str], _Totals]:
    """Per (run id, evaluator), each scored row of the version: its passes, summed score and
    calls, grouped by the database. With `one_call` (every run made one call per row: the
    unique key then holds one result per run, key and evaluator) there is nothing to group,
    and the plain results come (grouping 10^5 rows would be the query's costliest step). The
    cost of 10^5 rows is in building Python objects per row, so neither dialect does:
    PostgreSQL aggregates each (run, evaluator) into arrays, SQLite's rows come as the
    driver's tuples. Both tables are read in the one project and joined on it (the
    distribution column: one shard). Errors (`error`: no verdict) are left out."""
    per_row: Select[*tuple[Any, ...]]
    if one_call:
        per_row = select(
            EvalResult.run_id,
            EvalResult.evaluator,
            DatasetRow.id.label("row_id"),
            EvalResult.passed.label("passes"),
            EvalResult.score.label("score"),
        )
    else:
        per_row = select(
            EvalResult.run_id,
            EvalResult.evaluator,
            DatasetRow.id.label("row_id"),
            func.sum(case((EvalResult.passed, 1), else_=0)).label("passes"),
            func.sum(EvalResult.score).label("score"),
            func.count().label("calls"),
        ).group_by(EvalResult.run_id, EvalResult.evaluator, DatasetRow.id)
    grouped = per_row.join(DatasetRow, _on_version(version_id)).where(
        EvalResult.project_id == project_id,
        EvalResult.run_id.in_(run_ids),
        EvalResult.error.is_(False),
    )
    if connection.dialect.name == "postgresql":
        g = grouped.subquery()
        aggregated = connection.execute(
            select(
                g.c.run_id,
                g.c.evaluator,
                *(
                    func.array_agg(aggregate_order_by(column, g.c.row_id))
                    for column in list(g.c)[2:]
                ),
            ).group_by(g.c.run_id, g.c.evaluator)
        )
        return {(row[0], row[1]): _totals(*row[2:]) for row in aggregated}
    rows = _driver_rows(
        connection,
        grouped.order_by(EvalResult.run_id, EvalResult.evaluator, DatasetRow.id),
    )
    if not rows:
        return {}
    run_column, name_column, *columns = zip(*rows, strict=True)
    everything = _totals(*columns)
    out = {}
    start = 0
    for group, members in itertools.groupby(zip(run_column, name_column, strict=True)):
        end = start + sum(1 for _ in members)
        part = slice(start, end)
        out[group] = _Totals(
            everything.row_ids[part],
            everything.passes[part],
            everything.scores[part],
            everything.calls[part],
        )
        start = end
    return out


def _on_version(version_id: int) -> ColumnElement[bool]:
    """A result joined to its row of the version by key, in the result's project (one shard)."""
    return and_(
        DatasetRow.project_id == EvalResult.project_id,
        DatasetRow.version_id == version_id,
        DatasetRow.key == EvalResult.key,
    )


def _errors(
    connection: Connection, project_id: int, version_id: int, sides: dict[str, list[int]]
) -> tuple[dict[str, dict[str, list[tuple[IntArray, IntArray]]]], list[str]]:
    """Per side and evaluator, the version's row ids on which the side's runs hold evaluator
    errors (no verdict) with how many (one pair of arrays; a row may repeat, once per run),
    and per evaluator a note counting those results, left out of the comparison's means."""
    errored = _driver_rows(
        connection,
        select(EvalResult.run_id, EvalResult.evaluator, DatasetRow.id, func.count())
        .join(DatasetRow, _on_version(version_id))
        .where(
            EvalResult.project_id == project_id,
            EvalResult.run_id.in_([*sides["candidate"], *sides["baseline"]]),
            EvalResult.error.is_(True),
        )
        .group_by(EvalResult.run_id, EvalResult.evaluator, DatasetRow.id),
    )
    side_of = {run_id: side for side, run_ids in sides.items() for run_id in run_ids}
    counts: dict[str, dict[str, int]] = {}
    rows: dict[str, dict[str, tuple[list[int], list[int]]]] = {side: {} for side in sides}
    for run_id, name, row_id, count in errored:
        side = side_of[run_id]
        counts.setdefault(name, dict.fromkeys(sides, 0))[side] += count
        ids, calls = rows[side].setdefault(name, ([], []))
        ids.append(row_id)
        calls.append(count)
    notes = [
        f"{name}: {by_side['candidate'] + by_side['baseline']} result(s) left out as evaluator "
        f"errors, not verdicts ({by_side['candidate']} in the candidate's runs, "
        f"{by_side['baseline']} in the baseline's)"
        for name, by_side in sorted(counts.items())
    ]
    arrays = {
        side: {
            name: [(np.asarray(ids, np.int64), np.asarray(calls, np.int64))]
            for name, (ids, calls) in by_name.items()
        }
        for side, by_name in rows.items()
    }
    return arrays, notes


def _calls_without_output(
    connection: Connection, project_id: int, version_id: int, run_ids: Sequence[int]
) -> dict[tuple[int, str], _Totals]:
    """Per (run, evaluator) of `run_ids` (the baseline's), the version's rows whose results
    stand for calls without an output: the call's run_outputs row holds an `error` (the
    endpoint failed) or there is none. The worker stores such a result as a fail (score 0,
    not passed, not an evaluator error), so only the runs' failed results are joined to
    their outputs, on the outputs' unique key in the one project (one shard): the extra
    work is the baseline's, and its fails', alone."""
    output = and_(
        RunOutput.project_id == EvalResult.project_id,
        RunOutput.run_id == EvalResult.run_id,
        RunOutput.key == EvalResult.key,
        RunOutput.repeat == EvalResult.repeat,
    )
    rows = _driver_rows(
        connection,
        select(
            EvalResult.run_id,
            EvalResult.evaluator,
            DatasetRow.id,
            func.sum(EvalResult.score),
            func.count(),
        )
        .join(DatasetRow, _on_version(version_id))
        .outerjoin(RunOutput, output)
        .where(
            EvalResult.project_id == project_id,
            EvalResult.run_id.in_(run_ids),
            EvalResult.error.is_(False),
            EvalResult.passed.is_(False),
            or_(RunOutput.id.is_(None), RunOutput.error.is_not(None)),
        )
        .group_by(EvalResult.run_id, EvalResult.evaluator, DatasetRow.id)
        .order_by(EvalResult.run_id, EvalResult.evaluator, DatasetRow.id),
    )
    out = {}
    for run_and_name, members in itertools.groupby(rows, key=lambda row: (row[0], row[1])):
        _, _, row_ids, scores, calls = zip(*members, strict=True)
        out[run_and_name] = _totals(row_ids, [0] * len(row_ids), scores, calls)
    return out


def _less(run: _Totals, left_out: _Totals) -> _Totals:
    """A run x evaluator's totals without the results `left_out` (a subset of its failed
    ones, so its passes stay as they are)."""
    at = np.searchsorted(run.row_ids, left_out.row_ids)
    scores, calls = run.scores.copy(), run.calls.copy()
    scores[at] -= left_out.scores
    calls[at] -= left_out.calls
    return _Totals(run.row_ids, run.passes, np.maximum(scores, 0.0), calls)


def _no_output_note(no_output: dict[tuple[int, str], _Totals]) -> str:
    """How many of the baseline's calls had no output: each such call is one result of
    every evaluator of its run, so per run the count of any one of its evaluators."""
    per_run: dict[int, int] = {}
    for (run_id, _), left_out in no_output.items():
        per_run[run_id] = max(per_run.get(run_id, 0), int(left_out.calls.sum()))
    return (
        f"the baseline's runs hold {sum(per_run.values())} call(s) without an output (the "
        "endpoint failed or none was produced): left out like evaluator errors, not counted "
        "as the baseline's fails; a pass must hold with them as its passes"
    )


def _totals(
    ids: Sequence[int],
    passes: Sequence[Any],
    scores: Sequence[float],
    calls: Sequence[int] | None = None,
) -> _Totals:
    """Arrays of one (run, evaluator); without `calls`, one call per row."""
    row_ids = np.asarray(ids, np.int64)
    return _Totals(
        row_ids,
        np.asarray(passes, np.float64),
        np.asarray(scores, np.float64),
        np.ones(row_ids.size, np.int64) if calls is None else np.asarray(calls, np.int64),
    )


def _driver_rows(connection: Connection, statement: ClauseElement) -> Sequence[Any]:
    """The statement's rows as the driver's plain tuples, without a SQLAlchemy Row and type
    processing each. Its parameters are inlined: they are integer ids of our own rows."""
    sql = statement.compile(dialect=connection.dialect, compile_kwargs={"literal_binds": True})
    cursor = connection.connection.cursor()
    try:
        cursor.execute(str(sql))
        return cursor.fetchall()
    finally:
        cursor.close()
