"""Dataset rows from a JSON body, a JSONL file or a CSV file, validated one at a time.

Rows are yielded as they are read, so a 100,000-row upload never sits in memory whole. Row
numbers in errors are 1-based: the position in `rows`, the line of a JSONL file, or the data
record of a CSV file (header excluded)."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any

from pydantic import ValidationError

from app.core.errors import Unprocessable
from app.core.schemas import nfc
from app.datasets.schemas import RowIn
from app.models.datasets import DatasetVersion, Risk

CSV_FIELDS = frozenset(
    {"key", "input", "expected", "context", "risk", "expected_behavior", "label", "metadata"}
)


COHORT_PREFIX = "cohort."


ParsedRows = Iterable[tuple[int, Any]]


def row_problem(row: int, field: str, message: str) -> Unprocessable:
    return Unprocessable(
        f"row {row}: {field}: {message}",
        row=row,
        field=field,
        errors=[{"row": row, "field": field, "message": message}],
    )


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def json_rows(raw_rows: Sequence[Any]) -> ParsedRows:
    return ((index + 1, raw) for index, raw in enumerate(raw_rows))


def jsonl_rows(stream: IO[bytes]) -> Iterator[tuple[int, Any]]:
    """One JSON object per line, read line by line; blank lines are skipped but counted. A
    leading byte-order mark (Windows tools write one) is dropped, as for CSV."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig")
    number = 0
    try:
        for number, line in enumerate(text, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line, parse_constant=_reject_constant)
            except ValueError as exc:
                raise row_problem(number, "line", f"invalid JSON: {exc}") from None
    except UnicodeDecodeError:
        raise row_problem(number + 1, "line", "file is not valid UTF-8") from None
    finally:
        _release(text)


def csv_rows(stream: IO[bytes]) -> Iterator[tuple[int, Any]]:
    """Columns key, input, expected, context, risk, expected_behavior, label, metadata (a
    JSON object) and cohort.<dimension>; cells are text and an empty cell means absent."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    number = 0
    try:
        reader = csv.reader(text)
        header = next(reader, None)
        if header is None:
            raise Unprocessable("file: the CSV file is empty", field="file")
        _check_csv_header(header)
        for number, cells in enumerate(reader, 1):
            if not any(cells):
                continue
            if len(cells) != len(header):
                raise row_problem(number, "row", f"{len(cells)} cells, header has {len(header)}")
            yield number, _csv_record(number, header, cells)
    except csv.Error as exc:
        raise row_problem(number + 1, "row", f"malformed CSV: {exc}") from None
    except UnicodeDecodeError:
        raise row_problem(number + 1, "row", "file is not valid UTF-8") from None
    finally:
        _release(text)


def _release(text: io.TextIOWrapper) -> None:
    """Detach so the wrapper never closes the upload; a generator abandoned mid-file may only
    be finalized after the upload was closed, which is fine."""
    with contextlib.suppress(ValueError):
        text.detach()


def _check_csv_header(header: list[str]) -> None:
    for column in header:
        dimension = column.removeprefix(COHORT_PREFIX)
        if column not in CSV_FIELDS and not (column.startswith(COHORT_PREFIX) and dimension):
            raise Unprocessable(
                f"file: unknown CSV column '{column}' (expected {', '.join(sorted(CSV_FIELDS))} "
                "or cohort.<dimension>)",
                field=column,
            )
    for required in ("key", "input"):
        if required not in header:
            raise Unprocessable(f"file: the CSV header needs a '{required}' column", field=required)
    duplicates = {column for column in header if header.count(column) > 1}
    if duplicates:
        raise Unprocessable(f"file: duplicate CSV column '{min(duplicates)}'", field="file")


def _csv_record(number: int, header: list[str], cells: list[str]) -> dict[str, Any]:
    record: dict[str, Any] = {"cohort": {}}
    for column, cell in zip(header, cells, strict=True):
        if cell == "" and column != "input":
            continue
        if column.startswith(COHORT_PREFIX):
            record["cohort"][column.removeprefix(COHORT_PREFIX)] = cell
        elif column == "metadata":
            try:
                record["metadata"] = json.loads(cell, parse_constant=_reject_constant)
            except ValueError as exc:
                raise row_problem(number, "metadata", f"invalid JSON: {exc}") from None
        else:
            record[column] = cell
    return record


# The fields holding free JSON: a number without a JSON form can only hide in them.
FREE_JSON_FIELDS = ("input", "expected", "context", "metadata")


def validate_row(number: int, raw: Any) -> RowIn:
    """A valid row or a problem naming its number and field. Free JSON must be storable as
    JSON: 1e400 parses to infinity and a JSON body may spell NaN, which PostgreSQL refuses
    late and SQLite silently stores as null, so the row would lose the value its hash
    covers."""
    if not isinstance(raw, dict):
        raise row_problem(number, "row", "must be a JSON object")
    try:
        row = RowIn.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or "row"
        raise row_problem(number, field, first["msg"]) from None
    for field in FREE_JSON_FIELDS:
        try:
            json.dumps(getattr(row, field), allow_nan=False)
        except ValueError:
            raise row_problem(
                number,
                field,
                "numbers must be finite (NaN, Infinity and out-of-range numbers such as 1e400 "
                "have no JSON form)",
            ) from None
    return row


def row_values(version: DatasetVersion, row: RowIn) -> dict[str, Any]:
    """Insert parameters of one row of `version` (in its project); its hash covers every
    field, so diffs see any change."""
    content = row.model_dump(mode="json")
    return {
        "project_id": version.project_id,
        "version_id": version.id,
        "key": row.key,
        "input": row.input,
        "expected": row.expected,
        "context": row.context,
        "cohort": row.cohort,
        "risk": row.risk,
        "expected_behavior": row.expected_behavior,
        "label": row.label,
        "meta": row.metadata,
        "row_hash": hashlib.sha256(canonical_json(content).encode()).hexdigest(),
    }


# Cohorts whose names the gate builds itself: declaring them would be ambiguous.
RESERVED_DIMENSIONS = ("all", "risk")
MAX_DECLARED_COHORTS = 1_000
_DECLARED_TWICE = "declared twice once Unicode-normalised (NFC); declare it once"


def refuse_reserved_dimensions(number: int, row: RowIn) -> None:
    """An uploaded row's cohort may not use a built-in cohort's name: the gate ignores such a
    dimension, so `cohort.risk = high` would leave the row medium and unguarded while reading
    as high. Rows from traces keep their production cohort as it is."""
    for dimension in RESERVED_DIMENSIONS:
        if dimension in row.cohort:
            raise row_problem(
                number,
                f"cohort.{dimension}",
                f"'{dimension}' is a built-in cohort and cannot be a row's dimension; set a "
                "row's risk with its `risk` field",
            )


def cohort_risk(raw: Any) -> dict[str, dict[str, str]]:
    """A version's declared cohort risk, {dimension: {value: level}}, checked for shape; the
    problem names the offending entry (`cohort_risk.route.billing`). Names and values are
    stored in Unicode NFC, as rows' cohorts and events' are, so a cohort declared in another
    form still names the rows and the production cohort it means; two entries equal once
    normalised are refused (their levels could differ). Whether each declared cohort has rows
    is the service's check, once the rows are read."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise Unprocessable(
            "cohort_risk: must be an object {dimension: {value: level}}", field="cohort_risk"
        )
    declared: dict[str, dict[str, str]] = {}
    for raw_dimension, values in raw.items():
        dimension = nfc(raw_dimension)
        where = f"cohort_risk.{dimension}"
        if dimension in declared:
            raise Unprocessable(f"{where}: {_DECLARED_TWICE}", field=where)
        if not 0 < len(dimension) <= 100 or any(c.isspace() for c in dimension):
            raise Unprocessable(
                f"{where}: a dimension is 1-100 characters without spaces", field=where
            )
        if dimension in RESERVED_DIMENSIONS:
            raise Unprocessable(
                f"{where}: '{dimension}' is a built-in cohort; declare a row's risk with its "
                "`risk` field instead",
                field=where,
            )
        if not isinstance(values, dict):
            raise Unprocessable(f"{where}: must be an object {{value: level}}", field=where)
        declared[dimension] = {}
        for raw_value, level in values.items():
            value = nfc(raw_value)
            at = f"{where}.{value}"
            if value in declared[dimension]:
                raise Unprocessable(f"{at}: {_DECLARED_TWICE}", field=at)
            if not 0 < len(value) <= 200:
                raise Unprocessable(f"{at}: a cohort value is 1-200 characters", field=at)
            if level not in [risk.value for risk in Risk]:
                raise Unprocessable(
                    f"{at}: {json.dumps(level)} is not a risk level (high, medium, low)",
                    field=at,
                )
            declared[dimension][value] = level
    declared = {dimension: values for dimension, values in declared.items() if values}
    if sum(len(values) for values in declared.values()) > MAX_DECLARED_COHORTS:
        raise Unprocessable(
            f"cohort_risk: at most {MAX_DECLARED_COHORTS} declared cohorts", field="cohort_risk"
        )
    return declared
