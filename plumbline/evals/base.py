"""The evaluator contract: configuration is checked up front, evaluation never raises."""

from __future__ import annotations

import logging
import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar, Generic, TypeGuard, TypeVar, cast

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

logger = logging.getLogger(__name__)

Score = tuple[float, str, dict[str, Any]]
"""What `Evaluator._score` returns: (score in [0, 1], reason, details)."""

PARAMS_CONFIG = ConfigDict(strict=True, extra="forbid", frozen=True)
"""Strict so a suite stored as JSON means exactly one thing: no "5" silently becoming 5."""


class EvaluatorConfigError(ValueError):
    """A bad evaluator spec; `field` lets an API point at the offending part of a suite."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem

    def at(self, prefix: str) -> EvaluatorConfigError:
        """The same error located inside a larger document (e.g. a suite's `specs[2]`)."""
        located = f"{prefix}.{self.field}" if self.field else prefix
        return type(self)(located, self.problem)


class EvaluationError(Exception):
    """Raised inside `_score` when the evaluator cannot reach a verdict on a row (its judge
    is unreachable or replies nonsense, its key is missing): the result is an error, not a
    fail. The subclass `InvalidInput` is the row's own verdict instead."""

    def __init__(self, reason: str, **details: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details


class InvalidInput(EvaluationError):
    """The row does not carry what the evaluator needs (missing field, wrong type): the row
    fails, a verdict like any other."""


@dataclass(frozen=True, slots=True)
class EvalResult:
    """A verdict, or with `error` the evaluator's failure to reach one (score 0, not passed,
    details["error"] says why): a run stores it, a gate leaves it out like a missing row."""

    score: float
    passed: bool
    reason: str
    details: dict[str, Any] = field(default_factory=dict)
    error: bool = False


@dataclass(frozen=True, slots=True)
class Sample:
    """One row as seen by every evaluator; built once per row so a suite shares it."""

    input: Any = None
    output: Any = None
    expected: Any = None
    context: Any = None
    trajectory: Any = None
    probability: Any = None
    label: Any = None
    expected_behavior: Any = None
    latency_ms: Any = None
    metadata: Any = None


def describe_type(value: object) -> str:
    return "None" if value is None else type(value).__name__


def require_text(field_name: str, value: object) -> str:
    if isinstance(value, str):
        return value
    raise InvalidInput(f"{field_name} must be a string, got {describe_type(value)}")


def require_texts(field_name: str, value: object) -> list[str]:
    """Fields such as context or expected may hold one text or several alternatives."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise InvalidInput(
        f"{field_name} must be a string or a list of strings, got {describe_type(value)}"
    )


def is_number(value: object) -> TypeGuard[float]:
    """bool is an int in Python, but `latency_ms=True` is a bug upstream, not a number."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_unit_interval(value: object) -> TypeGuard[float]:
    return is_number(value) and 0.0 <= value <= 1.0


def require_number(field_name: str, value: object) -> float:
    if is_number(value):
        return float(value)
    raise InvalidInput(f"{field_name} must be a finite number, got {describe_type(value)}")


def _check_regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from exc
    return pattern


RegexPattern = Annotated[str, AfterValidator(_check_regex)]
"""A params field holding a regex, rejected at construction when it does not compile."""


def _check_not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty or only whitespace")
    return text


Phrase = Annotated[str, AfterValidator(_check_not_blank)]
"""A params field holding text to look for; a blank one would match everywhere."""


class NoParams(BaseModel):
    model_config = PARAMS_CONFIG


P = TypeVar("P", bound=BaseModel)


def _params_error(exc: ValidationError) -> EvaluatorConfigError:
    first = exc.errors(include_url=False)[0]
    path = ".".join(str(part) for part in ("params", *first["loc"]))
    if first["type"] == "extra_forbidden":
        return EvaluatorConfigError(path, "unknown parameter")
    return EvaluatorConfigError(path, first["msg"].removeprefix("Value error, "))


def _checked_threshold(threshold: object) -> float:
    if not is_unit_interval(threshold):
        raise EvaluatorConfigError("threshold", "must be a number between 0 and 1")
    return float(threshold)


class Evaluator(ABC, Generic[P]):
    """Subclasses set `name`, `default_threshold`, `params_model` and implement `_score`."""

    name: ClassVar[str]
    default_threshold: ClassVar[float] = 0.5
    params_model: ClassVar[type[BaseModel]] = NoParams
    unscored_params: ClassVar[frozenset[str]] = frozenset()
    """Params that decide only whether a verdict is reached (how long to wait for a judge, how
    often to retry it, which variable holds its key), never the score a verdict gives: two
    runs set up alike but for these measure one thing (the server's gate compares them)."""

    def __init__(self, threshold: float | None = None, **params: Any) -> None:
        self.threshold = _checked_threshold(
            self.default_threshold if threshold is None else threshold
        )
        try:
            self.params = cast(P, self.params_model.model_validate(params))
        except ValidationError as exc:
            raise _params_error(exc) from None
        self._prepare()

    def _prepare(self) -> None:
        """Hook to precompile patterns/validators once instead of on every row."""

    @abstractmethod
    def _score(self, sample: Sample) -> Score: ...

    def spec(self) -> dict[str, Any]:
        """Everything needed to rebuild this evaluator, including defaults, for run snapshots."""
        return {
            "name": self.name,
            "threshold": self.threshold,
            "params": self.params.model_dump(mode="json", by_alias=True),
        }

    def evaluate(
        self,
        *,
        input: Any = None,
        output: Any = None,
        expected: Any = None,
        context: Any = None,
        trajectory: Any = None,
        probability: Any = None,
        label: Any = None,
        expected_behavior: Any = None,
        latency_ms: Any = None,
        metadata: Any = None,
    ) -> EvalResult:
        return self.evaluate_sample(
            Sample(
                input=input,
                output=output,
                expected=expected,
                context=context,
                trajectory=trajectory,
                probability=probability,
                label=label,
                expected_behavior=expected_behavior,
                latency_ms=latency_ms,
                metadata=metadata,
            )
        )

    def evaluate_sample(self, sample: Sample) -> EvalResult:
        """Never raises, so one row never aborts a run: a bad row becomes a failed result (its
        verdict), an evaluator that cannot judge (EvaluationError, a crash, an invalid score)
        an error result."""
        try:
            score, reason, details = self._score(sample)
        except InvalidInput as exc:
            return _failure(f"invalid input: {exc.reason}", exc.details | {"error": exc.reason})
        except EvaluationError as exc:
            return _failure(exc.reason, exc.details | {"error": exc.reason}, error=True)
        except Exception as exc:
            logger.warning("evaluator %s crashed", self.name, exc_info=True)
            problem = f"{type(exc).__name__}: {exc}"
            return _failure(f"evaluator error: {problem}", {"error": problem}, error=True)
        if not is_unit_interval(score) or not isinstance(details, dict):
            problem = f"evaluator returned an invalid result (score={score!r})"
            return _failure(problem, {"error": problem}, error=True)
        return EvalResult(float(score), score >= self.threshold, str(reason), details)


def _failure(reason: str, details: dict[str, Any], *, error: bool = False) -> EvalResult:
    return EvalResult(0.0, False, reason, details, error)
