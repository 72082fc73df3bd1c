"""JSON validation: the output parses as JSON and, optionally, satisfies a JSON Schema."""

from __future__ import annotations

from typing import Any

from jsonschema import exceptions as schema_exceptions
from jsonschema import validators
from jsonschema.protocols import Validator
from pydantic import BaseModel, Field, field_validator

from plumbline.evals.base import PARAMS_CONFIG, Evaluator, Sample, Score, require_text
from plumbline.evals.jsontext import parse_json, unfence
from plumbline.evals.text import clip

MAX_LISTED_ERRORS = 20


class JSONValidationParams(BaseModel):
    model_config = PARAMS_CONFIG

    # "schema" would shadow a BaseModel attribute, hence the alias.
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    allow_code_fence: bool = False
    """Accept output wrapped in a ```json block, as chat models often do."""

    @field_validator("json_schema")
    @classmethod
    def _schema_is_valid(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        if schema is not None:
            try:
                validators.validator_for(schema).check_schema(schema)
            except schema_exceptions.SchemaError as exc:
                raise ValueError(f"invalid JSON Schema: {exc.message}") from None
        return schema


class JSONValidation(Evaluator[JSONValidationParams]):
    name = "json_validation"
    default_threshold = 1.0
    params_model = JSONValidationParams

    def _prepare(self) -> None:
        schema = self.params.json_schema
        self._validator: Validator | None = (
            None if schema is None else validators.validator_for(schema)(schema)
        )

    def _score(self, sample: Sample) -> Score:
        text = require_text("output", sample.output)
        if self.params.allow_code_fence:
            text = unfence(text)
        try:
            document = parse_json(text)
        except ValueError as exc:
            return (
                0.0,
                f"output is not valid JSON: {exc}",
                {"valid_json": False, "parse_error": str(exc)},
            )
        errors = self._schema_errors(document)
        details = {
            "valid_json": True,
            "schema_error_count": len(errors),
            "schema_errors": [
                {"path": error.json_path, "message": clip(error.message)}
                for error in errors[:MAX_LISTED_ERRORS]
            ],
        }
        if errors:
            return (
                0.0,
                f"{len(errors)} schema violation(s), first at {errors[0].json_path}",
                details,
            )
        return (
            1.0,
            "output is valid JSON" + (" matching the schema" if self._validator else ""),
            details,
        )

    def _schema_errors(self, document: Any) -> list[schema_exceptions.ValidationError]:
        if self._validator is None:
            return []
        return sorted(self._validator.iter_errors(document), key=lambda e: e.json_path)
