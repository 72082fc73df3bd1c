"""Evaluation runs (`add_evaluation`), their results, and saved evaluator suites."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from app.core.deps import Paging, Reader, SessionDep, Writer, api_router
from app.core.errors import Unprocessable
from app.core.schemas import Page
from app.datasets.router import is_multipart, json_body, multipart_doc, parse_model, upload_part
from app.datasets.schemas import SuiteIn, SuiteOut
from app.evaluations import service as runs
from app.evaluations import suites
from app.evaluations.schemas import EvaluationIn, Progress, ResultOut, RunCreatedOut, RunOut
from app.models import EvaluationSuite
from app.registry.schemas import Name

router = api_router("/api/v1", "evaluations")


def run_out(view: runs.RunView) -> RunOut:
    run = view.run
    return RunOut(
        id=run.id,
        status=run.status,
        checkpoint_id=run.checkpoint_id,
        dataset=view.dataset,
        dataset_version=view.dataset_version,
        suite=run.suite_name,
        evaluators=run.evaluators,
        output_source=run.output_source,
        progress=Progress(done=run.progress_done, total=run.progress_total),
        summary=run.summary,
        error=run.error,
        attempts=run.attempts,
        created_at=run.created_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
    )


def suite_out(suite: EvaluationSuite) -> SuiteOut:
    return SuiteOut(
        name=suite.name,
        description=suite.description,
        evaluators=suite.evaluators,
        created_at=suite.created_at,
        updated_at=suite.updated_at,
    )


@router.post(
    "/datasets/{dataset_name}/evaluations",
    response_model=RunCreatedOut,
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=multipart_doc(EvaluationIn, "outputs", ["request"]),
)
async def add_evaluation(
    dataset_name: str, request: Request, principal: Writer, session: SessionDep
) -> RunCreatedOut:
    """JSON body, or multipart: a `request` part holding the JSON body without outputs and an
    `outputs` part, a JSONL file of {key, output, trajectory?, probability?, latency_ms?}."""
    if not is_multipart(request):
        body = parse_model(EvaluationIn, await json_body(request))
        outputs = runs.json_outputs(body.outputs) if body.outputs is not None else None
        run = await run_in_threadpool(
            runs.create_run, session, principal, dataset_name, body, outputs
        )
        return RunCreatedOut(run_id=run.id, status=run.status)
    async with request.form() as form:
        raw = form.get("request")
        if not isinstance(raw, str):
            raise Unprocessable(
                "request: the multipart body needs a 'request' part", field="request"
            )
        try:
            fields = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise Unprocessable(f"request: invalid JSON: {exc}", field="request") from None
        body = parse_model(EvaluationIn, fields)
        if body.outputs is not None:
            raise Unprocessable("request.outputs: send outputs as the file part", field="outputs")
        upload = upload_part(form, "outputs")
        await upload.seek(0)
        run = await run_in_threadpool(
            runs.create_run,
            session,
            principal,
            dataset_name,
            body,
            runs.jsonl_outputs(upload.file),
        )
    return RunCreatedOut(run_id=run.id, status=run.status)


@router.get("/runs", response_model=Page[RunOut])
def list_runs(
    principal: Reader,
    session: SessionDep,
    paging: Paging,
    checkpoint_id: Annotated[int | None, Query()] = None,
) -> Page[RunOut]:
    views, cursor = runs.list_runs(
        session, principal.project_id, checkpoint_id, paging.cursor, paging.limit
    )
    return Page(items=[run_out(view) for view in views], next_cursor=cursor)


@router.get("/runs/{run_id}", response_model=RunOut)
def get_run(run_id: int, principal: Reader, session: SessionDep) -> RunOut:
    return run_out(runs.get_run(session, principal.project_id, run_id))


@router.get("/runs/{run_id}/results", response_model=Page[ResultOut])
def list_results(
    run_id: int,
    principal: Reader,
    session: SessionDep,
    paging: Paging,
    evaluator: Annotated[str | None, Query(max_length=100)] = None,
    passed: Annotated[bool | None, Query()] = None,
    key: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[ResultOut]:
    rows, cursor = runs.list_results(
        session, principal.project_id, run_id, evaluator, passed, key, paging.cursor, paging.limit
    )
    items = [
        ResultOut(
            key=row.key,
            evaluator=row.evaluator,
            score=row.score,
            passed=row.passed,
            reason=row.reason,
            details=row.details,
        )
        for row in rows
    ]
    return Page(items=items, next_cursor=cursor)


@router.put(
    "/suites/{suite_name}",
    response_model=SuiteOut,
    responses={201: {"model": SuiteOut, "description": "Created"}},
)
def put_suite(
    suite_name: Name, body: SuiteIn, principal: Writer, session: SessionDep, response: Response
) -> SuiteOut:
    specs = [spec.model_dump(exclude_none=True) for spec in body.evaluators]
    suite, created = suites.put_suite(session, principal, suite_name, body.description, specs)
    if created:
        response.status_code = status.HTTP_201_CREATED
    return suite_out(suite)


@router.get("/suites", response_model=Page[SuiteOut])
def list_suites(principal: Reader, session: SessionDep, paging: Paging) -> Page[SuiteOut]:
    rows, cursor = suites.list_suites(session, principal.project_id, paging.cursor, paging.limit)
    return Page(items=[suite_out(row) for row in rows], next_cursor=cursor)


@router.get("/suites/{suite_name}", response_model=SuiteOut)
def get_suite(suite_name: str, principal: Reader, session: SessionDep) -> SuiteOut:
    return suite_out(suites.get_suite(session, principal.project_id, suite_name))
