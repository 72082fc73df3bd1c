"""Evaluation runs (`add_evaluation`), their results, and saved evaluator suites."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import Header, Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from app.core.deps import Paging, Reader, SessionDep, SettingsDep, Writer, api_router
from app.core.errors import Unprocessable
from app.core.schemas import Page
from app.core.uploads import is_multipart, json_body, multipart_doc, parse_model, upload_part
from app.datasets.schemas import SuiteIn, SuiteOut
from app.evaluations import service as runs
from app.evaluations import suites
from app.evaluations.schemas import EvaluationIn, ResultOut, RunCreatedOut, RunOut
from app.registry.schemas import Name

router = api_router("/api/v1", "evaluations")


IdempotencyKey = Annotated[
    str | None,
    Header(
        description="Any unique string (a UUID) naming this request: sent again with the same "
        "request, it answers 200 with the run the first one made instead of making a second; "
        "with another request, 422. Per project, kept with the run.",
    ),
]


@router.post(
    "/datasets/{dataset_name}/evaluations",
    response_model=RunCreatedOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        200: {
            "model": RunCreatedOut,
            "description": "Replayed: the run an earlier request with this Idempotency-Key "
            "made (header Idempotent-Replayed: true)",
        }
    },
    openapi_extra=multipart_doc(EvaluationIn, "outputs", ["request"]),
)
async def add_evaluation(
    dataset_name: str,
    request: Request,
    response: Response,
    principal: Writer,
    session: SessionDep,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> RunCreatedOut:
    """JSON body, or multipart: a `request` part holding the JSON body without outputs and an
    `outputs` part, a JSONL file of {key, output, trajectory?, probability?, latency_ms?}."""
    if not is_multipart(request):
        body = parse_model(EvaluationIn, await json_body(request))
        outputs = runs.json_outputs(body.outputs) if body.outputs is not None else None
        run, created = await run_in_threadpool(
            runs.create_run,
            session,
            principal,
            dataset_name,
            body,
            outputs,
            idempotency_key,
            settings.key_variables,
        )
    else:
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
                raise Unprocessable(
                    "request.outputs: send outputs as the file part", field="outputs"
                )
            upload = upload_part(form, "outputs")
            await upload.seek(0)
            run, created = await run_in_threadpool(
                runs.create_run,
                session,
                principal,
                dataset_name,
                body,
                runs.UploadedOutputs(upload.file),
                idempotency_key,
                settings.key_variables,
            )
    if not created:
        response.status_code = status.HTTP_200_OK
        response.headers["Idempotent-Replayed"] = "true"
    return RunCreatedOut(run_id=run.id, status=run.status)


@router.get("/runs", response_model=Page[RunOut])
def list_runs(
    principal: Reader,
    session: SessionDep,
    paging: Paging,
    checkpoint_id: Annotated[int | None, Query()] = None,
) -> Page[RunOut]:
    found, cursor = runs.list_runs(
        session, principal.project_id, checkpoint_id, paging.cursor, paging.limit
    )
    return Page(items=[RunOut.model_validate(run) for run in found], next_cursor=cursor)


@router.get("/runs/{run_id}", response_model=RunOut)
def get_run(run_id: int, principal: Reader, session: SessionDep) -> RunOut:
    return RunOut.model_validate(runs.owned_run(session, principal.project_id, run_id))


@router.get("/runs/{run_id}/results", response_model=Page[ResultOut])
def list_results(
    run_id: int,
    principal: Reader,
    session: SessionDep,
    paging: Paging,
    evaluator: Annotated[str | None, Query(max_length=100)] = None,
    passed: Annotated[bool | None, Query()] = None,
    key: Annotated[str | None, Query(max_length=200)] = None,
    error: Annotated[bool | None, Query()] = None,
) -> Page[ResultOut]:
    rows, cursor = runs.list_results(
        session,
        principal.project_id,
        run_id,
        evaluator,
        passed,
        key,
        paging.cursor,
        paging.limit,
        error=error,
    )
    return Page(items=[ResultOut.model_validate(row) for row in rows], next_cursor=cursor)


@router.put(
    "/suites/{suite_name}",
    response_model=SuiteOut,
    responses={201: {"model": SuiteOut, "description": "Created"}},
)
def put_suite(
    suite_name: Name,
    body: SuiteIn,
    principal: Writer,
    session: SessionDep,
    settings: SettingsDep,
    response: Response,
) -> SuiteOut:
    specs = [spec.model_dump(exclude_none=True) for spec in body.evaluators]
    suite, created = suites.put_suite(
        session, principal, suite_name, body.description, specs, settings.key_variables
    )
    if created:
        response.status_code = status.HTTP_201_CREATED
    return SuiteOut.model_validate(suite)


@router.get("/suites", response_model=Page[SuiteOut])
def list_suites(principal: Reader, session: SessionDep, paging: Paging) -> Page[SuiteOut]:
    rows, cursor = suites.list_suites(session, principal.project_id, paging.cursor, paging.limit)
    return Page(items=[SuiteOut.model_validate(row) for row in rows], next_cursor=cursor)


@router.get("/suites/{suite_name}", response_model=SuiteOut)
def get_suite(suite_name: str, principal: Reader, session: SessionDep) -> SuiteOut:
    return SuiteOut.model_validate(suites.get_suite(session, principal.project_id, suite_name))
