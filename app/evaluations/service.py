"""Evaluation runs: `add_evaluation` records intent (a queued run plus uploaded outputs);
`work_runs`, a background loop, claims one run at a time and executes it in short
transactions: produce outputs from the checkpoint's endpoint if needed, evaluate rows in
chunks, bulk-insert results, keep a heartbeat, then compute the summary in SQL.

Recovery: a `running` run whose heartbeat is older than LEASE is re-queued and resumes where
it stopped (rows that have results are skipped), at most MAX_ATTEMPTS times; then it is
failed with the reason. Each claim carries a token, so a worker that lost its lease cannot
write over the worker that took over."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import httpx
from pydantic import ValidationError
from sqlalchemy import Float, Table, and_, case, exists, func, insert, or_, select, true, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import TableValuedAlias

from app.core import audit
from app.core.auth import Principal
from app.core.db import get_owned, insert_ignoring_conflicts, is_postgres, utcnow
from app.core.errors import NotFound, Unprocessable, database_unavailable
from app.core.pagination import paginate
from app.core.settings import Settings
from app.datasets import service as datasets
from app.evals import Evaluator, build_suite, evaluate_row
from app.evaluations import suites
from app.evaluations.schemas import EvaluationIn, OutputIn
from app.models import (
    Checkpoint,
    DatasetRow,
    DatasetVersion,
    EvalResult,
    EvaluationRun,
    RunOutput,
)
from app.models.registry import CheckpointStatus
from app.models.runs import RunStatus
from app.registry import service as registry

log = logging.getLogger("plumbline.runs")

LEASE = timedelta(seconds=60)
MAX_ATTEMPTS = 3
EVAL_CHUNK = 2_000
OUTPUT_INSERT_CHUNK = 5_000
ENDPOINT_CHUNK = 64
ENDPOINT_CONCURRENCY = 8
ENDPOINT_ATTEMPTS = 3
ParsedOutputs = Iterable[tuple[str, Any]]
RESULTS_TABLE = cast(Table, EvalResult.__table__)
OUTPUTS_TABLE = cast(Table, RunOutput.__table__)


class LostLease(Exception):
    """Another worker re-queued or finished this run: stop without writing."""


# ---------------------------------------------------------------------------- add_evaluation


def create_run(
    session: Session,
    principal: Principal,
    dataset_name: str,
    body: EvaluationIn,
    outputs: ParsedOutputs | None,
) -> EvaluationRun:
    """Validates everything (checkpoint, version, evaluators, every output) before the run
    exists; the run and its outputs commit together or not at all."""
    try:
        try:
            checkpoint = registry.get_checkpoint(session, principal.project_id, body.checkpoint_id)
        except NotFound:
            raise Unprocessable(
                f"checkpoint_id: no checkpoint {body.checkpoint_id}", field="checkpoint_id"
            ) from None
        version = datasets.get_version(
            session, principal.project_id, dataset_name, body.dataset_version
        )
        if body.suite is not None:
            try:
                suite = suites.get_suite(session, principal.project_id, body.suite)
            except NotFound as exc:
                raise Unprocessable(f"suite: {exc.detail}", field="suite") from None
            specs = suites.snapshot(suite.evaluators, "suite.evaluators")
        else:
            assert body.evaluators is not None
            specs = suites.snapshot(
                [spec.model_dump(exclude_none=True) for spec in body.evaluators]
            )
        if outputs is None and not checkpoint.endpoint:
            raise Unprocessable(
                f"outputs: required, because checkpoint {checkpoint.id} has no endpoint to call",
                field="outputs",
            )
        run = EvaluationRun(
            project_id=principal.project_id,
            checkpoint_id=checkpoint.id,
            dataset_version_id=version.id,
            suite_name=body.suite,
            evaluators=specs,
            status=RunStatus.queued,
            output_source="endpoint" if outputs is None else "uploaded",
            progress_total=version.row_count,
            api_key_id=principal.key_id,
        )
        session.add(run)
        session.flush()
        if outputs is not None:
            _store_outputs(session, run, version, outputs)
        audit.record(
            session,
            principal,
            "run.created",
            "evaluation_run",
            run.id,
            {
                "checkpoint_id": checkpoint.id,
                "dataset": dataset_name,
                "dataset_version": version.version,
                "evaluators": [spec["name"] for spec in specs],
                "output_source": run.output_source,
            },
        )
        session.commit()
        return run
    except BaseException:
        session.rollback()
        raise


def json_outputs(outputs: Sequence[OutputIn]) -> ParsedOutputs:
    return ((f"outputs[{index}]", output) for index, output in enumerate(outputs))


def jsonl_outputs(stream: Any) -> ParsedOutputs:
    return ((f"outputs line {line}", raw) for line, raw in datasets.jsonl_rows(stream))


def _store_outputs(
    session: Session, run: EvaluationRun, version: DatasetVersion, outputs: ParsedOutputs
) -> None:
    """Streamed into run_outputs in chunks; every key must be a row of the version, once."""
    expected = set(
        session.scalars(select(DatasetRow.key).where(DatasetRow.version_id == version.id))
    )
    seen: set[str] = set()
    chunk: list[dict[str, Any]] = []
    for where, raw in outputs:
        output = _valid_output(where, raw)
        if output.key not in expected:
            raise Unprocessable(
                f"{where}.key: no row '{output.key}' in dataset version {version.version}",
                field=f"{where}.key",
            )
        if output.key in seen:
            raise Unprocessable(f"{where}.key: duplicate key '{output.key}'", field=f"{where}.key")
        seen.add(output.key)
        chunk.append({"run_id": run.id, **output.model_dump()})
        if len(chunk) >= OUTPUT_INSERT_CHUNK:
            session.execute(insert(RunOutput), chunk)
            chunk = []
    if chunk:
        session.execute(insert(RunOutput), chunk)
    missing = expected - seen
    if missing:
        raise Unprocessable(
            f"outputs: {len(missing)} row(s) of dataset version {version.version} have no "
            f"output (first: '{min(missing)}')",
            field="outputs",
        )


def _valid_output(where: str, raw: Any) -> OutputIn:
    if isinstance(raw, OutputIn):
        return raw
    if not isinstance(raw, dict):
        raise Unprocessable(f"{where}: must be a JSON object", field=where)
    try:
        return OutputIn.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join([where, *(str(part) for part in first["loc"])])
        raise Unprocessable(f"{field}: {first['msg']}", field=field) from None


# ---------------------------------------------------------------------------- reading


def owned_run(session: Session, project_id: int, run_id: int) -> EvaluationRun:
    return get_owned(session, EvaluationRun, project_id, run_id, "run")


def list_runs(
    session: Session, project_id: int, checkpoint_id: int | None, cursor: str | None, limit: int
) -> tuple[Sequence[EvaluationRun], str | None]:
    stmt = select(EvaluationRun).where(EvaluationRun.project_id == project_id)
    if checkpoint_id is not None:
        stmt = stmt.where(EvaluationRun.checkpoint_id == checkpoint_id)
    return paginate(session, stmt, EvaluationRun.id, cursor, limit)


def list_results(
    session: Session,
    project_id: int,
    run_id: int,
    evaluator: str | None,
    passed: bool | None,
    key: str | None,
    cursor: str | None,
    limit: int,
) -> tuple[Sequence[EvalResult], str | None]:
    owned_run(session, project_id, run_id)
    stmt = select(EvalResult).where(EvalResult.run_id == run_id)
    if evaluator is not None:
        stmt = stmt.where(EvalResult.evaluator == evaluator)
    if passed is not None:
        stmt = stmt.where(EvalResult.passed == passed)
    if key is not None:
        stmt = stmt.where(EvalResult.key == key)
    return paginate(session, stmt, EvalResult.id, cursor, limit, oldest_first=True)


# ---------------------------------------------------------------------------- summary (SQL)


def json_object_entries(session: Session, column: Any) -> TableValuedAlias:
    """(key, value) rows of a JSON object column, as a table joinable per row: json_each on
    SQLite, jsonb_each_text on PostgreSQL. Cohort values are stored as strings, so both
    dialects yield the same text values."""
    function = func.jsonb_each_text if is_postgres(session) else func.json_each
    return function(column).table_valued("key", "value", joins_implicitly=True)


def _rates() -> list[ColumnElement[Any]]:
    return [
        func.count().label("n"),
        sql_cast(func.avg(EvalResult.score), Float).label("mean_score"),
        sql_cast(func.avg(case((EvalResult.passed, 1.0), else_=0.0)), Float).label("pass_rate"),
    ]


def compute_summary(session: Session, run_id: int, version_id: int) -> dict[str, Any]:
    """Mean score and pass rate per evaluator, per (evaluator, risk) and per (evaluator,
    cohort dimension, value), each a GROUP BY in the database."""
    joined = (
        select()
        .select_from(EvalResult)
        .join(
            DatasetRow, and_(DatasetRow.version_id == version_id, DatasetRow.key == EvalResult.key)
        )
    )
    where = EvalResult.run_id == run_id
    by_evaluator = session.execute(
        select(EvalResult.evaluator, *_rates())
        .where(where)
        .group_by(EvalResult.evaluator)
        .order_by(EvalResult.evaluator)
    ).all()
    by_risk = session.execute(
        joined.add_columns(EvalResult.evaluator, DatasetRow.risk, *_rates())
        .where(where)
        .group_by(EvalResult.evaluator, DatasetRow.risk)
        .order_by(EvalResult.evaluator, DatasetRow.risk)
    ).all()
    entries = json_object_entries(session, DatasetRow.cohort)
    dimension, value = entries.c.key, entries.c.value
    by_cohort = session.execute(
        joined.join(entries, true())
        .add_columns(EvalResult.evaluator, dimension, value, *_rates())
        .where(where)
        .group_by(EvalResult.evaluator, dimension, value)
        .order_by(EvalResult.evaluator, dimension, value)
    ).all()
    errors = session.scalar(
        select(func.count())
        .select_from(RunOutput)
        .where(RunOutput.run_id == run_id, RunOutput.error.is_not(None))
    )

    def rates(row: Any) -> dict[str, Any]:
        return {"n": row.n, "mean_score": row.mean_score, "pass_rate": row.pass_rate}

    return {
        "by_evaluator": [{"evaluator": row.evaluator, **rates(row)} for row in by_evaluator],
        "by_risk": [
            {"evaluator": row.evaluator, "risk": str(row.risk.value), **rates(row)}
            for row in by_risk
        ],
        "by_cohort": [
            {"evaluator": row.evaluator, "dimension": "all", "value": "all", **rates(row)}
            for row in by_evaluator
        ]
        + [
            {"evaluator": row.evaluator, "dimension": row.key, "value": row.value, **rates(row)}
            for row in by_cohort
        ],
        "output_errors": errors or 0,
    }


# ---------------------------------------------------------------------------- the worker


@dataclass(frozen=True)
class _Plan:
    run_id: int
    token: str
    version_id: int
    checkpoint_id: int
    evaluators: list[dict[str, Any]]
    endpoint: dict[str, Any] | None


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
        _execute(sessions, plan)
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
            run_id=run.id,
            token=token,
            version_id=run.dataset_version_id,
            checkpoint_id=checkpoint.id,
            evaluators=run.evaluators,
            endpoint=checkpoint.endpoint if run.output_source == "endpoint" else None,
        )
        session.commit()
    return plan


def _execute(sessions: sessionmaker[Session], plan: _Plan) -> None:
    evaluators = build_suite(plan.evaluators)
    if plan.endpoint is not None:
        _produce_outputs(sessions, plan, plan.endpoint)
    after_id: int | None = _resume_after(sessions, plan)
    while after_id is not None:
        after_id = _evaluate_chunk(sessions, plan, evaluators, after_id)
    with sessions() as session:
        summary = compute_summary(session, plan.run_id, plan.version_id)
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
            .join(EvalResult, EvalResult.key == DatasetRow.key)
            .where(DatasetRow.version_id == plan.version_id, EvalResult.run_id == plan.run_id)
        )
        session.rollback()
    return int(last or 0)


def _evaluate_chunk(
    sessions: sessionmaker[Session], plan: _Plan, evaluators: list[Evaluator[Any]], after_id: int
) -> int | None:
    """Evaluates the rows after row id `after_id`; the read and the write are separate short
    transactions. Returns the last row id done, None when there is nothing left. Two simple
    indexed reads, not a join: fresh tables have no planner statistics yet."""
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
            .where(DatasetRow.version_id == plan.version_id, DatasetRow.id > after_id)
            .order_by(DatasetRow.id)
            .limit(EVAL_CHUNK)
        ).all()
        outputs = {
            output.key: output
            for output in session.execute(
                select(
                    RunOutput.key,
                    RunOutput.output,
                    RunOutput.trajectory,
                    RunOutput.probability,
                    RunOutput.latency_ms,
                    RunOutput.error,
                ).where(
                    RunOutput.run_id == plan.run_id, RunOutput.key.in_([row.key for row in rows])
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
        output = outputs.get(row.key)
        error = "no output was produced" if output is None else output.error
        if output is not None and error is None:
            outcomes = [
                (result.score, result.passed, result.reason, result.details)
                for result in evaluate_row(evaluators, record, output._asdict())
            ]
        else:
            outcomes = [(0.0, False, f"no output: {error}", {"error": error})] * len(evaluators)
        results.extend(
            {
                "run_id": plan.run_id,
                "key": row.key,
                "evaluator": evaluator.name,
                "score": score,
                "passed": passed,
                "reason": reason,
                "details": details,
            }
            for evaluator, (score, passed, reason, details) in zip(
                evaluators, outcomes, strict=True
            )
        )
    with sessions() as session:
        insert_ignoring_conflicts(session, RESULTS_TABLE, results, ["run_id", "key", "evaluator"])
        _owned_update(
            session,
            plan,
            progress_done=EvaluationRun.progress_done + len(rows),
            heartbeat_at=utcnow(),
        )
        session.commit()
    return int(rows[-1].id)


# ---------------------------------------------------------------------------- endpoint calls


def _produce_outputs(
    sessions: sessionmaker[Session], plan: _Plan, endpoint: dict[str, Any]
) -> None:
    """Calls the checkpoint's OpenAI-compatible endpoint for every row without an output,
    ENDPOINT_CONCURRENCY at a time; no transaction is open while requests are in flight."""
    headers = {}
    key_env = endpoint.get("api_key_env")
    if key_env:
        api_key = os.environ.get(key_env)
        if not api_key:
            raise RuntimeError(f"endpoint.api_key_env: {key_env} is not set for the worker")
        headers["Authorization"] = f"Bearer {api_key}"
    produced = exists().where(RunOutput.run_id == plan.run_id, RunOutput.key == DatasetRow.key)
    with (
        httpx.Client(headers=headers, timeout=float(endpoint.get("timeout_s", 60))) as client,
        ThreadPoolExecutor(ENDPOINT_CONCURRENCY, thread_name_prefix="plumbline-endpoint") as pool,
    ):
        while True:
            with sessions() as session:
                rows = session.execute(
                    select(DatasetRow.key, DatasetRow.input)
                    .where(DatasetRow.version_id == plan.version_id, ~produced)
                    .order_by(DatasetRow.id)
                    .limit(ENDPOINT_CHUNK)
                ).all()
                session.rollback()
            if not rows:
                return
            outputs = list(pool.map(lambda row: call_endpoint(client, endpoint, row.input), rows))
            with sessions() as session:
                insert_ignoring_conflicts(
                    session,
                    OUTPUTS_TABLE,
                    [
                        {"run_id": plan.run_id, "key": row.key, **output}
                        for row, output in zip(rows, outputs, strict=True)
                    ],
                    ["run_id", "key"],
                )
                _owned_update(session, plan, heartbeat_at=utcnow())
                session.commit()


def chat_messages(row_input: Any) -> list[dict[str, Any]]:
    """A row's input as chat messages: text becomes one user message; a list of messages or
    an object with `messages` is sent as given."""
    if isinstance(row_input, str):
        return [{"role": "user", "content": row_input}]
    if isinstance(row_input, dict) and isinstance(row_input.get("messages"), list):
        return list(row_input["messages"])
    if isinstance(row_input, list) and all(isinstance(m, dict) for m in row_input):
        return row_input
    raise ValueError("input must be text, a list of chat messages or {messages: [...]}")


def call_endpoint(client: httpx.Client, endpoint: dict[str, Any], row_input: Any) -> dict[str, Any]:
    """One row's output record; failures become `error`, never an exception. Retries
    timeouts, connection errors, 429 and 5xx with backoff (honouring a short Retry-After)."""
    record: dict[str, Any] = {
        "output": None,
        "trajectory": None,
        "probability": None,
        "latency_ms": None,
        "error": None,
    }
    try:
        body = {"model": endpoint["model"], "messages": chat_messages(row_input)}
    except ValueError as exc:
        return {**record, "error": str(exc)}
    url = endpoint["base_url"].rstrip("/") + "/chat/completions"
    problem = "not attempted"
    for attempt in range(ENDPOINT_ATTEMPTS):
        if attempt:
            time.sleep(_backoff(attempt, problem))
        started = time.perf_counter()
        try:
            response = client.post(url, json=body)
        except httpx.HTTPError as exc:
            problem = f"{type(exc).__name__}: {exc}"
            continue
        latency_ms = (time.perf_counter() - started) * 1000
        if response.status_code == 429 or response.status_code >= 500:
            problem = f"HTTP {response.status_code}"
            retry_after = response.headers.get("retry-after", "")
            if retry_after.isdigit():
                problem += f" retry-after {retry_after}"
            continue
        if response.status_code >= 400:
            return {**record, "error": f"HTTP {response.status_code}: {response.text[:300]}"}
        return {**record, "latency_ms": latency_ms, **_parse_completion(response)}
    return {**record, "error": f"failed after {ENDPOINT_ATTEMPTS} attempts: {problem}"[:2000]}


def _backoff(attempt: int, problem: str) -> float:
    _, _, retry_after = problem.partition(" retry-after ")
    if retry_after:
        return min(float(retry_after), 5.0)
    return 0.2 * 2 ** (attempt - 1)


def _parse_completion(response: httpx.Response) -> dict[str, Any]:
    try:
        message = response.json()["choices"][0]["message"]
        content, tool_calls = message.get("content"), message.get("tool_calls")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return {"error": f"not an OpenAI chat completion: {response.text[:300]}"}
    if content is None and not tool_calls:
        return {"error": "the completion has neither content nor tool calls"}
    return {"output": content, "trajectory": tool_calls or None}
