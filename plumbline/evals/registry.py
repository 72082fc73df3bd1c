"""Name -> evaluator class, for built-ins and for plugins installed as entry points."""

from __future__ import annotations

import functools
import inspect
import logging
import re
from collections.abc import Iterator, Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from plumbline.evals.base import Evaluator, EvaluatorConfigError, describe_type
from plumbline.evals.budgets import LatencyBudget, LengthBudget
from plumbline.evals.classification import Classification
from plumbline.evals.compliance import IsCompliant
from plumbline.evals.groundedness import Groundedness
from plumbline.evals.json_validation import JSONValidation
from plumbline.evals.llm_judge import LLMJudge
from plumbline.evals.matching import Contains, ExactMatch, Regex
from plumbline.evals.refusal import Refusal
from plumbline.evals.similarity import Similarity
from plumbline.evals.task_completion import TaskCompletion

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "plumbline.evaluators"

BUILTIN_EVALUATORS: tuple[type[Evaluator[Any]], ...] = (
    Groundedness,
    JSONValidation,
    TaskCompletion,
    IsCompliant,
    Refusal,
    ExactMatch,
    Contains,
    Regex,
    Similarity,
    Classification,
    LatencyBudget,
    LengthBudget,
    LLMJudge,
)

_SNAKE_CASE_RE = re.compile(r"[a-z][a-z0-9_]*")
_SPEC_KEYS = frozenset({"name", "threshold", "params"})


class UnknownEvaluator(EvaluatorConfigError):
    """No evaluator is registered under the requested name."""


def available_evaluators(refresh: bool = False) -> dict[str, type[Evaluator[Any]]]:
    """Plugins are discovered once per process; `refresh` rescans after installing one."""
    if refresh:
        _registry.cache_clear()
    return dict(_registry())


def get_evaluator(
    name: str, threshold: float | None = None, params: Mapping[str, Any] | None = None
) -> Evaluator[Any]:
    if not isinstance(name, str):
        raise EvaluatorConfigError("name", f"must be a string, got {describe_type(name)}")
    registry = _registry()
    if name not in registry:
        known = ", ".join(sorted(registry))
        raise UnknownEvaluator("name", f"unknown evaluator {name!r} (available: {known})")
    try:
        return registry[name](threshold, **_checked_params(params))
    except EvaluatorConfigError:
        raise
    except Exception as exc:
        # A plugin validates its params its own way, raising whatever it likes; for the
        # caller it is a refusal of this spec (a 422 naming it), never a server error.
        raise EvaluatorConfigError("params", f"{type(exc).__name__}: {exc}") from exc


def build_suite(specs: list[dict[str, Any]]) -> list[Evaluator[Any]]:
    """Build every evaluator of a suite or fail on the first bad spec, before any row runs."""
    if not isinstance(specs, list):
        raise EvaluatorConfigError("specs", f"must be a list, got {describe_type(specs)}")
    suite = []
    for index, spec in enumerate(specs):
        try:
            suite.append(_build(spec))
        except EvaluatorConfigError as exc:
            raise exc.at(f"specs[{index}]") from None
    return suite


def _build(spec: object) -> Evaluator[Any]:
    if not isinstance(spec, Mapping):
        raise EvaluatorConfigError("", f"must be an object, got {describe_type(spec)}")
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise EvaluatorConfigError(
            str(unknown[0]), "unknown field (expected name, threshold, params)"
        )
    if "name" not in spec:
        raise EvaluatorConfigError("name", "is required")
    return get_evaluator(spec["name"], spec.get("threshold"), spec.get("params"))


def _checked_params(params: object) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise EvaluatorConfigError("params", f"must be an object, got {describe_type(params)}")
    if "threshold" in params:
        raise EvaluatorConfigError(
            "params.threshold", "threshold belongs next to params, not in it"
        )
    if not all(isinstance(key, str) for key in params):
        raise EvaluatorConfigError("params", "keys must be strings")
    return dict(params)


@functools.cache
def _registry() -> dict[str, type[Evaluator[Any]]]:
    registry = {cls.name: cls for cls in BUILTIN_EVALUATORS}
    for cls in _plugins():
        if cls.name in registry:
            logger.error("evaluator plugin %r ignored: the name is already taken", cls.name)
        else:
            registry[cls.name] = cls
    return registry


def _plugins() -> Iterator[type[Evaluator[Any]]]:
    """A broken plugin must cost only itself, never the registry."""
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = entry_point.load()
        except Exception:
            logger.exception("evaluator plugin %r failed to import; skipped", entry_point.name)
            continue
        problem = _plugin_problem(entry_point, loaded)
        if problem:
            logger.error("evaluator plugin %r skipped: %s", entry_point.name, problem)
            continue
        yield loaded


def _plugin_problem(entry_point: EntryPoint, loaded: object) -> str | None:
    if not (inspect.isclass(loaded) and issubclass(loaded, Evaluator)):
        return f"{entry_point.value} is not an Evaluator subclass"
    if inspect.isabstract(loaded):
        return f"{entry_point.value} does not implement _score"
    name = getattr(loaded, "name", None)
    if not isinstance(name, str) or not _SNAKE_CASE_RE.fullmatch(name):
        return f"its name {name!r} is not snake_case"
    if name != entry_point.name:
        return f"entry point name {entry_point.name!r} differs from the class name {name!r}"
    return None
