"""Evaluation runs: `add_evaluation` records intent (a queued run plus the uploaded outputs,
in one transaction) and answers 202; the worker (worker.py) executes it. A request that
carries an `Idempotency-Key` makes at most one run per key and project: a retry (after a
timeout, a dropped answer, a re-run CI job) gets the run the first request made, because a
second identical run would be pooled by the gate as a repeat of the same checkpoint. Reads of
runs and results."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any, cast

from pydantic import ValidationError
from sqlalchemy import Table, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core import audit
from app.core.auth import Principal
from app.core.db import get_owned
from app.core.errors import NotFound, Unprocessable
from app.core.pagination import paginate
from app.datasets import parsing
from app.datasets import service as datasets
from app.evaluations import suites
from app.evaluations.schemas import EvaluationIn, OutputIn
from app.models import (
    DatasetRow,
    DatasetVersion,
    EvalResult,
    EvaluationRun,
    RunOutput,
)
from app.models.runs import IDEMPOTENCY_KEY_LENGTH, RunStatus
from app.registry import service as registry

OUTPUT_INSERT_CHUNK = 5_000


ParsedOutputs = Iterable[tuple[str, Any]]


OUTPUTS_TABLE = cast(Table, RunOutput.__table__)

NO_ANSWER = "nothing was uploaded for this call (no output, trajectory, probability or latency)"
"""The error of an uploaded call without an answer. An upload names every (key, repeat) and
has no other way to say that a call failed: like an endpoint's completion with neither
content nor tool calls (endpoint_client), it is a call without an output, which fails every
evaluator (the worker) and which a gate leaves out of the baseline's side (its outage, not
its verdicts: app.gates.pairs)."""


def _nothing_measured(output: OutputIn) -> bool:
    """An uploaded call carrying none of what an evaluator reads. A call with only a
    `latency_ms` or a `probability` is an answer to `latency_budget` or a calibrated
    classifier's evaluator (review R1, 2026-12-01: a latency-only suite uploaded as
    `{key, latency_ms}` failed every row as unanswered)."""
    return (
        output.output is None
        and output.trajectory is None
        and output.probability is None
        and output.latency_ms is None
    )


DIGEST_BLOCK_BYTES = 1 << 16


class UploadedOutputs:
    """A multipart JSONL file of outputs: iterated, its lines are parsed one at a time (the
    file is never whole in memory); `blocks` reads its bytes for a keyed request's digest and
    rewinds it, so the request can be compared before its outputs are stored."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        return ((f"outputs line {line}", raw) for line, raw in parsing.jsonl_rows(self.stream))

    def blocks(self) -> Iterator[bytes]:
        yield from iter(lambda: self.stream.read(DIGEST_BLOCK_BYTES), b"")
        self.stream.seek(0)


def create_run(
    session: Session,
    principal: Principal,
    dataset_name: str,
    body: EvaluationIn,
    outputs: ParsedOutputs | None,
    idempotency_key: str | None = None,
    key_variables: frozenset[str] = frozenset(),
) -> tuple[EvaluationRun, bool]:
    """Returns (run, created). Validates everything (checkpoint, version, evaluators, every
    output) before the run exists; the run and its outputs commit together or not at all.
    `key_variables`: the names an evaluator may give as its `api_key_env` (the operator's
    Settings.key_variables; none by default).

    With an `idempotency_key` (the header's raw value), a run this project already made under
    the key is returned (created False) if this request is the same one (`request_digest`)
    and refused with a 422 naming the key if it is not. Two concurrent requests with one key
    make one run: the unique (project, key) lets one insert win, and the other answers the
    winner's run (PostgreSQL makes it wait for the winner's commit; SQLite's single writer
    finds the run on its lookup)."""
    try:
        digest = None
        if idempotency_key is not None:
            idempotency_key = valid_idempotency_key(idempotency_key)
            digest = request_digest(dataset_name, body, outputs)
            earlier = _keyed_run(session, principal.project_id, idempotency_key)
            if earlier is not None:
                return _replayed(session, earlier, digest), False
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
            specs = suites.snapshot(suite.evaluators, key_variables, "suite.evaluators")
        else:
            assert body.evaluators is not None
            specs = suites.snapshot(
                [spec.model_dump(exclude_none=True) for spec in body.evaluators], key_variables
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
            repeats=body.repeats,
            progress_total=version.row_count,
            api_key_id=principal.key_id,
            idempotency_key=idempotency_key,
            request_digest=digest,
        )
        session.add(run)
        try:
            session.flush()
        except IntegrityError:
            if idempotency_key is None or digest is None:
                raise
            # A concurrent request with the same key committed its run first.
            session.rollback()
            winner = _keyed_run(session, principal.project_id, idempotency_key)
            if winner is None:
                raise
            return _replayed(session, winner, digest), False
        if outputs is not None:
            _store_outputs(session, run, version, outputs, body.repeats)
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
                "repeats": run.repeats,
            },
        )
        session.commit()
        return run, True
    except BaseException:
        session.rollback()
        raise


def valid_idempotency_key(raw: str) -> str:
    """The key of an `Idempotency-Key` header: the draft standard's quoted string
    (`"8e03978e-..."`, quotes dropped) or the bare token most clients send, 1 to 255 visible
    ASCII characters (a UUID is the usual choice)."""
    key = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] == '"' else raw
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_LENGTH or not all("!" <= c <= "~" for c in key):
        raise Unprocessable(
            f"Idempotency-Key: 1 to {IDEMPOTENCY_KEY_LENGTH} visible ASCII characters, "
            "without spaces (e.g. a UUID)",
            field="Idempotency-Key",
        )
    return key


def request_digest(dataset_name: str, body: EvaluationIn, outputs: ParsedOutputs | None) -> str:
    """sha256 of the request's canonical form: the dataset name and the validated body as
    sorted JSON with defaults filled in (a left-out `repeats` and `repeats: 1` are one
    request; JSON outputs are part of the body), then an uploaded outputs file's bytes."""
    canonical = {"dataset": dataset_name, "body": body.model_dump(mode="json")}
    digest = hashlib.sha256(json.dumps(canonical, sort_keys=True).encode())
    if isinstance(outputs, UploadedOutputs):
        for block in outputs.blocks():
            digest.update(block)
    return digest.hexdigest()


def _keyed_run(session: Session, project_id: int, idempotency_key: str) -> EvaluationRun | None:
    return session.scalar(
        select(EvaluationRun).where(
            EvaluationRun.project_id == project_id,
            EvaluationRun.idempotency_key == idempotency_key,
        )
    )


def _replayed(session: Session, earlier: EvaluationRun, digest: str) -> EvaluationRun:
    """The run an earlier request made under this key, if it was this request; the read's
    transaction ends here (it wrote nothing)."""
    session.commit()
    if earlier.request_digest != digest:
        raise Unprocessable(
            f"Idempotency-Key: '{earlier.idempotency_key}' was used for another request, "
            f"which made run {earlier.id}; send a new key for a new run",
            field="Idempotency-Key",
            run_id=earlier.id,
        )
    return earlier


def json_outputs(outputs: Sequence[OutputIn]) -> ParsedOutputs:
    return ((f"outputs[{index}]", output) for index, output in enumerate(outputs))


def _store_outputs(
    session: Session,
    run: EvaluationRun,
    version: DatasetVersion,
    outputs: ParsedOutputs,
    repeats: int,
) -> None:
    """Streamed into run_outputs in chunks; every (key, repeat) of the version's rows, once.
    With one call per row the repeat index may be left out (it is 0). A call uploaded with
    nothing an evaluator reads is stored as one without an output (NO_ANSWER)."""
    expected = set(
        session.scalars(
            select(DatasetRow.key).where(
                DatasetRow.project_id == version.project_id, DatasetRow.version_id == version.id
            )
        )
    )
    seen: set[tuple[str, int]] = set()
    chunk: list[dict[str, Any]] = []
    for where, raw in outputs:
        output = _valid_output(where, raw)
        repeat = _repeat_of(where, output, repeats)
        if output.key not in expected:
            raise Unprocessable(
                f"{where}.key: no row '{output.key}' in dataset version {version.version}",
                field=f"{where}.key",
            )
        if (output.key, repeat) in seen:
            which = f" (repeat {repeat})" if repeats > 1 else ""
            raise Unprocessable(
                f"{where}.key: duplicate key '{output.key}'{which}", field=f"{where}.key"
            )
        seen.add((output.key, repeat))
        chunk.append(
            {
                "project_id": run.project_id,
                "run_id": run.id,
                **output.model_dump(),
                "repeat": repeat,
                "error": NO_ANSWER if _nothing_measured(output) else None,
            }
        )
        if len(chunk) >= OUTPUT_INSERT_CHUNK:
            session.execute(insert(RunOutput), chunk)
            chunk = []
    if chunk:
        session.execute(insert(RunOutput), chunk)
    if len(seen) < len(expected) * repeats:
        key, repeat = next(
            (key, repeat)
            for key in sorted(expected)
            for repeat in range(repeats)
            if (key, repeat) not in seen
        )
        missing = len(expected) * repeats - len(seen)
        if repeats == 1:
            what = f"{missing} row(s) of dataset version {version.version} have no output"
            first = f"'{key}'"
        else:
            what = f"{missing} (key, repeat) pair(s) of {repeats} repeats have no output"
            first = f"'{key}' repeat {repeat}"
        raise Unprocessable(f"outputs: {what} (first: {first})", field="outputs")


def _repeat_of(where: str, output: OutputIn, repeats: int) -> int:
    if output.repeat is None:
        if repeats > 1:
            raise Unprocessable(
                f"{where}.repeat: required with repeats = {repeats} (0..{repeats - 1})",
                field=f"{where}.repeat",
            )
        return 0
    if output.repeat >= repeats:
        raise Unprocessable(
            f"{where}.repeat: {output.repeat} is not below repeats = {repeats}",
            field=f"{where}.repeat",
        )
    return output.repeat


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
    error: bool | None = None,
) -> tuple[Sequence[EvalResult], str | None]:
    owned_run(session, project_id, run_id)
    stmt = select(EvalResult).where(
        EvalResult.project_id == project_id, EvalResult.run_id == run_id
    )
    if evaluator is not None:
        stmt = stmt.where(EvalResult.evaluator == evaluator)
    if passed is not None:
        stmt = stmt.where(EvalResult.passed == passed)
    if key is not None:
        stmt = stmt.where(EvalResult.key == key)
    if error is not None:
        stmt = stmt.where(EvalResult.error == error)
    return paginate(session, stmt, EvalResult.id, cursor, limit, oldest_first=True)
