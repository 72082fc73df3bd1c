"""Datasets: create, add immutable versions (JSON rows or a streamed JSONL/CSV upload),
list rows, diff two versions, promote production traces into a version."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from app.core.deps import Paging, Reader, SessionDep, Writer, api_router
from app.core.schemas import Page, StrictModel
from app.core.uploads import (
    file_kind,
    is_multipart,
    json_body,
    json_form_field,
    multipart_doc,
    parse_model,
    upload_part,
)
from app.datasets import parsing
from app.datasets import queries as dataset_queries
from app.datasets import service as datasets
from app.datasets.schemas import (
    DatasetIn,
    DatasetOut,
    DiffOut,
    FromTracesIn,
    RowOut,
    VersionCreatedOut,
    VersionIn,
    VersionOut,
)
from app.models import DatasetVersion
from app.registry.schemas import ShortText

router = api_router("/api/v1", "datasets")


def created_out(version: DatasetVersion, created: bool, response: Response) -> VersionCreatedOut:
    if not created:
        response.status_code = status.HTTP_200_OK
    return VersionCreatedOut(**VersionOut.model_validate(version).model_dump(), created=created)


@router.post("/datasets", response_model=DatasetOut, status_code=status.HTTP_201_CREATED)
def create_dataset(body: DatasetIn, principal: Writer, session: SessionDep) -> DatasetOut:
    dataset = datasets.create_dataset(session, principal, body.name, body.description)
    return DatasetOut.model_validate(dataset)


@router.get("/datasets", response_model=Page[DatasetOut])
def list_datasets(principal: Reader, session: SessionDep, paging: Paging) -> Page[DatasetOut]:
    rows, cursor = datasets.list_datasets(
        session, principal.project_id, paging.cursor, paging.limit
    )
    return Page(items=[DatasetOut.model_validate(row) for row in rows], next_cursor=cursor)


@router.get("/datasets/{dataset_name}", response_model=DatasetOut)
def get_dataset(dataset_name: str, principal: Reader, session: SessionDep) -> DatasetOut:
    dataset = datasets.get_dataset(session, principal.project_id, dataset_name)
    return DatasetOut.model_validate(dataset)


class _VersionEnvelope(StrictModel):
    """Rows are validated one by one by the service, so errors name the row number, and the
    declared cohort risk by the service too, so errors name the entry."""

    rows: list[Any]
    note: ShortText | None = None
    cohort_risk: Any = None


class _VersionForm(StrictModel):
    """The text parts of a file upload, held to the JSON body's limits."""

    note: ShortText | None = None


@router.post(
    "/datasets/{dataset_name}/versions",
    response_model=VersionCreatedOut,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": VersionCreatedOut, "description": "Same rows as the latest"}},
    openapi_extra=multipart_doc(VersionIn, "file", ["note", "cohort_risk"]),
)
async def add_version(
    dataset_name: str, request: Request, principal: Writer, session: SessionDep, response: Response
) -> VersionCreatedOut:
    if not is_multipart(request):
        body = parse_model(_VersionEnvelope, await json_body(request))
        version, created = await run_in_threadpool(
            datasets.add_version,
            session,
            principal,
            dataset_name,
            parsing.json_rows(body.rows),
            "json",
            body.note,
            body.cohort_risk,
        )
        return created_out(version, created, response)
    async with request.form() as form:
        upload = upload_part(form, "file")
        kind = file_kind(upload)
        note = form.get("note")
        text = {"note": note if isinstance(note, str) and note else None}
        fields = parse_model(_VersionForm, text)
        declared = json_form_field(form, "cohort_risk")
        await upload.seek(0)
        parse = parsing.jsonl_rows if kind == "jsonl" else parsing.csv_rows
        version, created = await run_in_threadpool(
            datasets.add_version,
            session,
            principal,
            dataset_name,
            parse(upload.file),
            kind,
            fields.note,
            declared,
        )
    return created_out(version, created, response)


@router.post(
    "/datasets/{dataset_name}/versions/from-traces",
    response_model=VersionCreatedOut,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": VersionCreatedOut, "description": "Same rows as the latest"}},
)
def version_from_traces(
    dataset_name: str,
    body: FromTracesIn,
    principal: Writer,
    session: SessionDep,
    response: Response,
) -> VersionCreatedOut:
    version, created = datasets.version_from_traces(session, principal, dataset_name, body)
    return created_out(version, created, response)


@router.get("/datasets/{dataset_name}/versions", response_model=Page[VersionOut])
def list_versions(
    dataset_name: str, principal: Reader, session: SessionDep, paging: Paging
) -> Page[VersionOut]:
    rows, cursor = datasets.list_versions(
        session, principal.project_id, dataset_name, paging.cursor, paging.limit
    )
    return Page(items=[VersionOut.model_validate(row) for row in rows], next_cursor=cursor)


@router.get("/datasets/{dataset_name}/versions/{dataset_version}", response_model=VersionOut)
def get_version(
    dataset_name: str, dataset_version: int, principal: Reader, session: SessionDep
) -> VersionOut:
    return VersionOut.model_validate(
        datasets.get_version(session, principal.project_id, dataset_name, dataset_version)
    )


@router.get("/datasets/{dataset_name}/versions/{dataset_version}/rows", response_model=Page[RowOut])
def list_rows(
    dataset_name: str,
    dataset_version: int,
    principal: Reader,
    session: SessionDep,
    paging: Paging,
) -> Page[RowOut]:
    rows, cursor = datasets.list_rows(
        session, principal.project_id, dataset_name, dataset_version, paging.cursor, paging.limit
    )
    return Page(items=[RowOut.model_validate(row) for row in rows], next_cursor=cursor)


@router.get("/datasets/{dataset_name}/diff", response_model=DiffOut)
def diff_versions(
    dataset_name: str,
    principal: Reader,
    session: SessionDep,
    from_version: Annotated[int, Query(alias="from", ge=1)],
    to_version: Annotated[int, Query(alias="to", ge=1)],
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1_000,
) -> DiffOut:
    diff = dataset_queries.diff_versions(
        session, principal.project_id, dataset_name, from_version, to_version, limit
    )
    return DiffOut(**diff)
