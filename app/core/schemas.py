"""Shared pieces of the public contract."""

from __future__ import annotations

import unicodedata
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import AfterValidator, BaseModel, ConfigDict

T = TypeVar("T")

# Ids are 32-bit integer columns on PostgreSQL: a larger one cannot name a stored row.
MAX_ID = 2**31 - 1


def nfc(text: str) -> str:
    """Unicode NFC. Cohort dimensions and values are compared as stored, byte for byte, so
    "café" typed composed (U+00E9) and decomposed (e + U+0301) were two cohorts, each judged
    at half the volume; they are normalised wherever they enter: ingest (REST and OTLP),
    dataset rows and declared cohort risk (of versions and gate policies), monitors and query
    filters. ASCII, the common case, is NFC already."""
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def nfc_or_none(text: str | None) -> str | None:
    return None if text is None else nfc(text)


CohortFilter = Annotated[str | None, Query(max_length=200), AfterValidator(nfc_or_none)]
"""A query parameter naming a cohort dimension or value, NFC-normalised as stored ones are."""


class StrictModel(BaseModel):
    """Request bodies: unknown fields are mistakes, NaN and Infinity are not numbers."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, str_strip_whitespace=False)


class OrmModel(BaseModel):
    """Response bodies: read from ORM rows or typed query results by attribute
    (`Out.model_validate(row)`), so a noun has one shape for the API, the pages and webhooks.

    Names of related rows come through `validation_alias=AliasPath(...)` over the models'
    relationships; building one from keyword arguments by field name works too."""

    model_config = ConfigDict(from_attributes=True, validate_by_name=True, validate_by_alias=True)


class CohortRef(BaseModel):
    """One cohort: a dimension and one of its values; the whole population is all/all."""

    dimension: str
    value: str


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


class ProblemDetail(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None
