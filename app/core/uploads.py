"""Request bodies the routers parse by hand: JSON validated against a model with errors
shaped as FastAPI's, and multipart uploads (a JSON part plus a streamed file part)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from app.core.errors import Problem, Unprocessable

M = TypeVar("M", bound=BaseModel)


def parse_model(model: type[M], raw: Any) -> M:
    """Validate a body read by hand (routes that also take multipart) with the same 422 shape
    FastAPI gives declared bodies."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        raise RequestValidationError(errors) from None


async def json_body(request: Request) -> Any:
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Unprocessable(f"body: invalid JSON: {exc}", field="body") from None


def json_form_field(form: Any, name: str) -> Any:
    """A multipart text part holding JSON (None when absent or empty)."""
    raw = form.get(name)
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise Unprocessable(f"{name}: must be a text part holding JSON", field=name)
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise Unprocessable(f"{name}: invalid JSON: {exc}", field=name) from None


def is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith("multipart/form-data")


def upload_part(form: Any, name: str) -> UploadFile:
    part = form.get(name)
    if not isinstance(part, UploadFile):
        raise Unprocessable(f"{name}: the multipart body needs a file part '{name}'", field=name)
    return part


def file_kind(upload: UploadFile) -> str:
    """'jsonl' or 'csv', from the file name or else its media type."""
    filename = (upload.filename or "").lower()
    media = (upload.content_type or "").lower()
    if filename.endswith((".jsonl", ".ndjson")) or "ndjson" in media or "jsonl" in media:
        return "jsonl"
    if filename.endswith(".csv") or media.startswith("text/csv"):
        return "csv"
    raise Problem("file: upload a .jsonl or .csv file", status=415, field="file")


def multipart_doc(model: type[BaseModel], file_part: str, text_parts: Sequence[str]) -> Any:
    """OpenAPI for routes that take either a JSON body or a multipart upload."""
    properties: dict[str, Any] = {file_part: {"type": "string", "format": "binary"}}
    properties |= {part: {"type": "string"} for part in text_parts}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": model.model_json_schema()},
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": properties, "required": [file_part]}
                },
            },
        }
    }
