"""The run worker: `work_runs`, a background loop, claims one queued run at a time and
executes it in short transactions: produce outputs from the checkpoint's endpoint if needed,
evaluate rows in chunks, bulk-insert results, keep a heartbeat, then store the summary.

The heartbeat is renewed by a thread of its own every HEARTBEAT_EVERY seconds for as long as
the run executes, whatever the worker's thread is waiting for: a chunk of slow rows (an LLM
judge) or one endpoint call with its retries can outlast the lease many times over. The
worker's thread looks at the heartbeat between rows and between calls and stops as soon as
a renewal found the run taken, so the rest is not evaluated (and paid for) twice.

Recovery: a `running` run whose heartbeat is older than LEASE is re-queued and resumes where
it stopped (rows that have results are skipped), at most MAX_ATTEMPTS times; then it is
failed with the reason. Each claim carries a token, so a worker that lost its lease cannot
write over the worker that took over.

With `repeats` k a row is k calls: its k outputs are produced (or uploaded) first, and a chunk
commits all k x evaluators results of each of its rows together, so the finished rows stay a
prefix and the resume rule is unchanged."""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import httpx
from sqlalchemy import Table, and_, exists, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.db import insert_ignoring_conflicts, is_postgres, utcnow
from app.core.errors import database_unavailable
from app.core.settings import Settings, key_variable_problem
from app.evaluations.endpoint_client import (
    REFUSED_STATUSES,
    call_endpoint,
    refusal_problem,
    refused_status,
)
from app.evaluations.service import OUTPUTS_TABLE
from app.evaluations.suites import key_variables
from app.evaluations.summary import compute_summary
from app.models import (
    Checkpoint,
    DatasetRow,
    EvalResult,
    EvaluationRun,
    RunOutput,
)
from app.models.registry import CheckpointStatus
from app.models.runs import RunStatus
from app.webhooks.delivery import GuardedTransport
from plumbline.evals import EvalResult as Verdict
from plumbline.evals import EvaluationError, Evaluator, build_suite, evaluate_row
from plumbline.evals.llm_judge import LLMJudge

log = logging.getLogger("plumbline.runs")

LEASE = timedelta(seconds=60)


HEARTBEAT_EVERY = LEASE.total_seconds() / 4
"""Seconds between two renewals of a running run's heartbeat: a quarter of the lease leaves
room for a renewal that waits on a busy database."""


MAX_ATTEMPTS = 3


EVAL_CHUNK = 2_000


ENDPOINT_CHUNK = 64


ENDPOINT_CONCURRENCY = 8


RESULTS_TABLE = cast(Table, EvalResult.__table__)


class LostLease(Exception):
    """Another worker re-queued or finished this run: stop without writing."""


class Misconfigured(Exception):
    """The run's checkpoint endpoint or judge is not set up to answer it (its key refused, its
    model or URL unknown, its key variable missing): the run fails with the reason, never
    pooled by a gate, rather than succeed with every row an error."""


@dataclass(frozen=True)
class _Plan:
    project_id: int
    run_id: int
    token: str
    version_id: int
    checkpoint_id: int
    evaluators: list[dict[str, Any]]
    endpoint: dict[str, Any] | None
    repeats: int


_interrupted: deque[_Plan] = deque()
"""Runs this process was executing when the database went away. It still holds their claim,
so it carries on with them (after the last committed chunk) once the database answers again;
if the process dies instead, the lease recovery re-queues them for another worker."""


def work_runs(sessions: sessionmaker[Session], settings: Settings) -> bool:
    """One unit of background work: resume a run a database outage interrupted, or recover
    stale runs and claim one queued run, and execute it. Returns whether there was anything
    to do."""
    recovered = 0
    plan = _take_interrupted()
    if plan is None:
        recovered = _recover_stale(sessions)
        plan = _claim(sessions)
    if plan is None:
        return recovered > 0
    try:
        _execute(sessions, plan, settings.key_variables)
    except LostLease:
        log.warning("run %s: lease lost to another worker; stopped", plan.run_id)
    except Exception as exc:
        if database_unavailable(exc):
            # Not the run's fault: failing it would throw away a good run over an outage.
            log.warning("run %s: database unavailable; resuming when it is back", plan.run_id)
            _interrupted.append(plan)
            return False
        log.exception("run %s failed", plan.run_id)
        _fail(sessions, plan, f"{type(exc).__name__}: {exc}")
    return True


def _take_interrupted() -> _Plan | None:
    try:
        return _interrupted.popleft()
    except IndexError:
        return None


def _recover_stale(sessions: sessionmaker[Session]) -> int:
    stale = and_(
        EvaluationRun.status == RunStatus.running,
        or_(EvaluationRun.heartbeat_at.is_(None), EvaluationRun.heartbeat_at < utcnow() - LEASE),
    )
    with sessions() as session:
        failed = session.execute(
            update(EvaluationRun)
            .where(stale, EvaluationRun.attempts >= MAX_ATTEMPTS)
            .values(
                status=RunStatus.failed,
                finished_at=utcnow(),
                claimed_by=None,
                error=f"worker stopped responding (no heartbeat for {LEASE.seconds} s) "
                f"on each of {MAX_ATTEMPTS} attempts",
            )
        )
        requeued = session.execute(
            update(EvaluationRun)
            .where(stale, EvaluationRun.attempts < MAX_ATTEMPTS)
            .values(status=RunStatus.queued, claimed_by=None)
        )
        session.commit()
    count = int(failed.rowcount or 0) + int(requeued.rowcount or 0)  # type: ignore[attr-defined]
    if count:
        log.warning("recovered %d stale run(s)", count)
    return count


def _claim(sessions: sessionmaker[Session]) -> _Plan | None:
    """SKIP LOCKED on PostgreSQL; on SQLite the conditional UPDATE inside BEGIN IMMEDIATE is
    enough, since only one writer runs at a time."""
    token = f"{os.getpid()}:{uuid.uuid4().hex[:12]}"
    with sessions() as session:
        candidate = (
            select(EvaluationRun.id)
            .where(EvaluationRun.status == RunStatus.queued)
            .order_by(EvaluationRun.id)
            .limit(1)
        )
        if is_postgres(session):
            candidate = candidate.with_for_update(skip_locked=True)
        run_id = session.scalar(candidate)
        if run_id is None:
            return None
        now = utcnow()
        claimed = session.execute(
            update(EvaluationRun)
            .where(EvaluationRun.id == run_id, EvaluationRun.status == RunStatus.queued)
            .values(
                status=RunStatus.running,
                attempts=EvaluationRun.attempts + 1,
                claimed_by=token,
                heartbeat_at=now,
                started_at=func.coalesce(EvaluationRun.started_at, now),
            )
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            session.rollback()
            return None
        run = session.get_one(EvaluationRun, run_id)
        checkpoint = session.get_one(Checkpoint, run.checkpoint_id)
        plan = _Plan(
            project_id=run.project_id,
            run_id=run.id,
            token=token,
            version_id=run.dataset_version_id,
            checkpoint_id=checkpoint.id,
            evaluators=run.evaluators,
            endpoint=checkpoint.endpoint if run.output_source == "endpoint" else None,
            repeats=run.repeats,
        )
        session.commit()
    return plan


class _Heartbeat:
    """The run's lease, renewed by a daemon thread every HEARTBEAT_EVERY seconds while the
    run executes (a context manager: the thread lives inside the `with`). The thread only
    writes heartbeat_at through `_owned_update`; once that finds the run taken it stops, and
    `check()`, called by the worker's thread between rows and calls, raises LostLease. A
    renewal that fails for another reason (the database away) is retried at the next beat;
    the worker's thread meets the same outage and handles it."""

    def __init__(self, sessions: sessionmaker[Session], plan: _Plan) -> None:
        self._sessions = sessions
        self._plan = plan
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._thread = threading.Thread(
            target=self._beat, name=f"plumbline-heartbeat-{plan.run_id}", daemon=True
        )

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def check(self) -> None:
        if self._lost.is_set():
            raise LostLease(self._plan.run_id)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY):
            try:
                with self._sessions() as session:
                    _owned_update(session, self._plan, heartbeat_at=utcnow())
                    session.commit()
            except LostLease:
                self._lost.set()
                return
            except Exception:
                log.warning("run %s: heartbeat not written; retrying", self._plan.run_id)


class _JudgeCalls:
    """Per llm_judge of a suite, the calls this execution asked it (rows with an output it
    could read: a verdict or an error, not an invalid-input fail) and its answers of
    REFUSED_STATUSES by status. Looked at once every row is evaluated, since how many calls
    the judge will be asked is not known before."""

    def __init__(self, evaluators: list[Evaluator[Any]], repeats: int) -> None:
        self._judges = [e for e in evaluators if isinstance(e, LLMJudge)]
        self._repeats = repeats
        self._asked: Counter[str] = Counter()
        self._refused: dict[str, Counter[int]] = {j.name: Counter() for j in self._judges}

    def count(self, evaluators: list[Evaluator[Any]], verdicts: list[Verdict]) -> None:
        """Adds one row's `verdicts` of the suite `evaluators`: a judge's result was a call
        when it is an error or carries the call's `attempts` (a verdict)."""
        for evaluator, verdict in zip(evaluators, verdicts, strict=True):
            if isinstance(evaluator, LLMJudge) and (verdict.error or "attempts" in verdict.details):
                self._asked[evaluator.name] += 1
                status = verdict.details.get("status") if verdict.error else None
                if status in REFUSED_STATUSES:
                    self._refused[evaluator.name][status] += 1

    def check(self) -> None:
        """Misconfigured when a judge's refusals say it is (endpoint_client.misconfigured)."""
        for judge in self._judges:
            asked = self._asked[judge.name]
            problem = refusal_problem(
                f"evaluator {judge.name}'s judge",
                self._refused[judge.name],
                asked,
                asked,
                self._repeats,
                f"evaluator {judge.name}'s params base_url, model and api_key_env",
            )
            if problem is not None:
                raise Misconfigured(problem)


def _execute(sessions: sessionmaker[Session], plan: _Plan, key_variables: frozenset[str]) -> None:
    _refuse_key_variables(plan, key_variables)
    evaluators = build_suite(plan.evaluators)
    for evaluator in evaluators:
        if isinstance(evaluator, LLMJudge):  # its endpoint is the project's to choose
            evaluator.transport_factory = _guarded_transport
            _require_judge_key(evaluator)
    with _Heartbeat(sessions, plan) as heartbeat:
        if plan.endpoint is not None:
            _produce_outputs(sessions, plan, plan.endpoint, heartbeat)
        after_id: int | None = _resume_after(sessions, plan)
        judge_calls = _JudgeCalls(evaluators, plan.repeats)
        while after_id is not None:
            after_id = _evaluate_chunk(sessions, plan, evaluators, after_id, heartbeat, judge_calls)
        judge_calls.check()
        with sessions() as session:
            summary = compute_summary(
                session, plan.project_id, plan.run_id, plan.version_id, plan.repeats
            )
            now = utcnow()
            _owned_update(
                session,
                plan,
                status=RunStatus.succeeded,
                summary=summary,
                finished_at=now,
                heartbeat_at=now,
                error=None,
            )
            session.execute(
                update(Checkpoint)
                .where(
                    Checkpoint.id == plan.checkpoint_id,
                    Checkpoint.status == CheckpointStatus.registered,
                )
                .values(status=CheckpointStatus.evaluated)
            )
            session.commit()


def _guarded_transport() -> GuardedTransport:
    """How the worker reaches a project's endpoints (a checkpoint's, an LLM judge's): private
    and loopback addresses are where self-hosted models live; cloud metadata, link-local and
    reserved addresses never are, and their answers would land in the run for the project to
    read. Checked at every connection, as for webhooks."""
    return GuardedTransport(allow_private=True)


def _owned_update(session: Session, plan: _Plan, **values: Any) -> None:
    """Writes the run only while this worker still holds it."""
    result = session.execute(
        update(EvaluationRun)
        .where(
            EvaluationRun.id == plan.run_id,
            EvaluationRun.claimed_by == plan.token,
            EvaluationRun.status == RunStatus.running,
        )
        .values(**values)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise LostLease(plan.run_id)


def _fail(sessions: sessionmaker[Session], plan: _Plan, reason: str) -> None:
    with sessions() as session:
        try:
            _owned_update(
                session, plan, status=RunStatus.failed, error=reason[:2000], finished_at=utcnow()
            )
            session.commit()
        except LostLease:
            pass


def _resume_after(sessions: sessionmaker[Session], plan: _Plan) -> int:
    """The row id to continue after. Rows are evaluated in id order and each chunk's results
    commit together with its progress, so the finished rows are exactly a prefix."""
    with sessions() as session:
        last = session.scalar(
            select(func.max(DatasetRow.id))
            .join(
                EvalResult,
                and_(
                    EvalResult.project_id == DatasetRow.project_id,
                    EvalResult.key == DatasetRow.key,
                ),
            )
            .where(
                DatasetRow.project_id == plan.project_id,
                DatasetRow.version_id == plan.version_id,
                EvalResult.run_id == plan.run_id,
            )
        )
        session.rollback()
    return int(last or 0)


def _evaluate_chunk(
    sessions: sessionmaker[Session],
    plan: _Plan,
    evaluators: list[Evaluator[Any]],
    after_id: int,
    heartbeat: _Heartbeat,
    judge_calls: _JudgeCalls,
) -> int | None:
    """Evaluates every repeat of the rows after row id `after_id`; the read and the write are
    separate short transactions, the lease looked at between rows. Returns the
    last row id done, None when there is nothing left. Two simple indexed reads, not a join:
    fresh tables have no planner statistics yet. An evaluator's error is stored as one
    (`error`); a call without an output fails every evaluator (the checkpoint's failure).
    Each llm_judge's calls and refusals are counted in `judge_calls`."""
    with sessions() as session:
        rows = session.execute(
            select(
                DatasetRow.id,
                DatasetRow.key,
                DatasetRow.input,
                DatasetRow.expected,
                DatasetRow.context,
                DatasetRow.expected_behavior,
                DatasetRow.label,
                DatasetRow.meta.label("metadata"),
            )
            .where(
                DatasetRow.project_id == plan.project_id,
                DatasetRow.version_id == plan.version_id,
                DatasetRow.id > after_id,
            )
            .order_by(DatasetRow.id)
            .limit(max(1, EVAL_CHUNK // plan.repeats))
        ).all()
        outputs = {
            (output.key, output.repeat): output
            for output in session.execute(
                select(
                    RunOutput.key,
                    RunOutput.repeat,
                    RunOutput.output,
                    RunOutput.trajectory,
                    RunOutput.probability,
                    RunOutput.latency_ms,
                    RunOutput.error,
                ).where(
                    RunOutput.project_id == plan.project_id,
                    RunOutput.run_id == plan.run_id,
                    RunOutput.key.in_([row.key for row in rows]),
                )
            )
        }
        session.rollback()
    if not rows:
        return None
    results: list[dict[str, Any]] = []
    for row in rows:
        record = row._asdict()
        if record["expected_behavior"] is not None:
            record["expected_behavior"] = record["expected_behavior"].value
        for repeat in range(plan.repeats):
            heartbeat.check()
            output = outputs.get((row.key, repeat))
            error = "no output was produced" if output is None else output.error
            if output is not None and error is None:
                verdicts = evaluate_row(evaluators, record, output._asdict())
                judge_calls.count(evaluators, verdicts)
                outcomes = [
                    (result.score, result.passed, result.reason, result.details, result.error)
                    for result in verdicts
                ]
            else:
                failed = (0.0, False, f"no output: {error}", {"error": error}, False)
                outcomes = [failed] * len(evaluators)
            results.extend(
                {
                    "project_id": plan.project_id,
                    "run_id": plan.run_id,
                    "key": row.key,
                    "repeat": repeat,
                    "evaluator": evaluator.name,
                    "score": score,
                    "passed": passed,
                    "reason": reason,
                    "details": details,
                    "error": evaluator_error,
                }
                for evaluator, (score, passed, reason, details, evaluator_error) in zip(
                    evaluators, outcomes, strict=True
                )
            )
    with sessions() as session:
        insert_ignoring_conflicts(
            session,
            RESULTS_TABLE,
            results,
            ["project_id", "run_id", "key", "evaluator", "repeat"],
        )
        _owned_update(
            session,
            plan,
            progress_done=EvaluationRun.progress_done + len(rows),
            heartbeat_at=utcnow(),
        )
        session.commit()
    return int(rows[-1].id)


def _refuse_key_variables(plan: _Plan, allowed: frozenset[str]) -> None:
    """Fails the run rather than send a variable the operator does not allow as a key (a
    service setting, `PLUMBLINE_*`, or one outside PLUMBLINE_EVALUATOR_KEY_ENVS): the API
    refuses them, but a checkpoint or run stored before it did, or before the operator
    narrowed the list, may still name one."""
    named = [(plan.endpoint or {}).get("api_key_env"), *key_variables(plan.evaluators)]
    for name in named:
        problem = key_variable_problem(name, allowed) if isinstance(name, str) else None
        if problem is not None:
            raise RuntimeError(f"api_key_env: {problem}")


def _require_judge_key(judge: LLMJudge) -> None:
    """Fails the run before any call (Misconfigured) when the judge's `api_key_env` is not set
    on the worker: every row would be an evaluator error, and the run, pooled, would leave the
    judge compared on no row in every later gate of its dataset version."""
    try:
        judge.api_key()
    except EvaluationError as exc:
        raise Misconfigured(f"evaluator {judge.name}: {exc.reason} on the worker") from None


def _produce_outputs(
    sessions: sessionmaker[Session], plan: _Plan, endpoint: dict[str, Any], heartbeat: _Heartbeat
) -> None:
    """Calls the checkpoint's OpenAI-compatible endpoint for every (row, repeat) without an
    output, ENDPOINT_CONCURRENCY at a time, one repeat after another; no transaction is open
    while requests are in flight, and the lease is looked at as each call's answer comes
    in. Fails the run (Misconfigured) as soon as the answers of REFUSED_STATUSES among its
    rows x repeats calls, a resumed run's stored ones included, say the endpoint is
    misconfigured: below that they stay those rows' errors."""
    headers = {}
    key_env = endpoint.get("api_key_env")
    if key_env:
        api_key = os.environ.get(key_env)
        if not api_key:
            raise RuntimeError(f"endpoint.api_key_env: {key_env} is not set for the worker")
        headers["Authorization"] = f"Bearer {api_key}"
    calls, made, refused = _endpoint_calls(sessions, plan)
    _refuse_misconfigured_endpoint(refused, made, calls, plan.repeats)  # a resumed run's
    with (
        httpx.Client(
            headers=headers,
            timeout=float(endpoint.get("timeout_s", 60)),
            transport=_guarded_transport(),
        ) as client,
        ThreadPoolExecutor(ENDPOINT_CONCURRENCY, thread_name_prefix="plumbline-endpoint") as pool,
    ):
        for repeat in range(plan.repeats):
            produced = exists().where(
                RunOutput.project_id == DatasetRow.project_id,
                RunOutput.run_id == plan.run_id,
                RunOutput.key == DatasetRow.key,
                RunOutput.repeat == repeat,
            )
            while True:
                with sessions() as session:
                    rows = session.execute(
                        select(DatasetRow.key, DatasetRow.input)
                        .where(
                            DatasetRow.project_id == plan.project_id,
                            DatasetRow.version_id == plan.version_id,
                            ~produced,
                        )
                        .order_by(DatasetRow.id)
                        .limit(ENDPOINT_CHUNK)
                    ).all()
                    session.rollback()
                if not rows:
                    break
                outputs = list(
                    _beating(
                        pool.map(lambda row: call_endpoint(client, endpoint, row.input), rows),
                        heartbeat,
                    )
                )
                with sessions() as session:
                    insert_ignoring_conflicts(
                        session,
                        OUTPUTS_TABLE,
                        [
                            {
                                "project_id": plan.project_id,
                                "run_id": plan.run_id,
                                "key": row.key,
                                "repeat": repeat,
                                **output,
                            }
                            for row, output in zip(rows, outputs, strict=True)
                        ],
                        ["project_id", "run_id", "key", "repeat"],
                    )
                    _owned_update(session, plan, heartbeat_at=utcnow())
                    session.commit()
                made += len(outputs)
                refused.update(
                    status
                    for status in (refused_status(output["error"]) for output in outputs)
                    if status is not None
                )
                _refuse_misconfigured_endpoint(refused, made, calls, plan.repeats)


def _refuse_misconfigured_endpoint(
    refused: Counter[int], made: int, calls: int, repeats: int
) -> None:
    """Misconfigured when the endpoint's answers of REFUSED_STATUSES among the `made` of the
    run's `calls` calls say so (endpoint_client.misconfigured): checked after every chunk,
    and once before the first, so a run resumed with every output stored is checked too
    (review R1c: it succeeded with 100 refused outputs)."""
    if made == 0:
        return
    problem = refusal_problem(
        "the checkpoint's endpoint",
        refused,
        made,
        calls,
        repeats,
        "the checkpoint's endpoint base_url, model and api_key_env",
    )
    if problem is not None:
        raise Misconfigured(problem)


def _endpoint_calls(sessions: sessionmaker[Session], plan: _Plan) -> tuple[int, int, Counter[int]]:
    """The run's calls to its checkpoint's endpoint (rows x repeats), those already made (a
    resumed run's stored outputs) and their answers of REFUSED_STATUSES, by status."""
    with sessions() as session:
        rows = session.scalar(
            select(func.count())
            .select_from(DatasetRow)
            .where(
                DatasetRow.project_id == plan.project_id,
                DatasetRow.version_id == plan.version_id,
            )
        )
        stored = select(RunOutput.error).where(
            RunOutput.project_id == plan.project_id, RunOutput.run_id == plan.run_id
        )
        made = session.scalar(select(func.count()).select_from(stored.subquery()))
        errors = session.scalars(stored.where(RunOutput.error.like("HTTP 4%"))).all()
        session.rollback()
    refused = Counter(
        status for status in (refused_status(error) for error in errors) if status is not None
    )
    return int(rows or 0) * plan.repeats, int(made or 0), refused


def _beating(answers: Iterator[dict[str, Any]], heartbeat: _Heartbeat) -> Iterator[dict[str, Any]]:
    """The answers in order, the lease looked at as each one comes in."""
    for answer in answers:
        heartbeat.check()
        yield answer
