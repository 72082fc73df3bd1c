"""Named evaluator suites saved per project, and the one place specs become evaluators."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core import audit
from app.core.auth import Principal
from app.core.errors import Conflict, NotFound, Unprocessable
from app.core.pagination import paginate
from app.core.settings import key_variable_problem
from app.models import EvaluationSuite
from plumbline.evals import Evaluator, EvaluatorConfigError, build_suite


def build_evaluators(
    specs: list[dict[str, Any]], allowed_keys: frozenset[str], field: str = "evaluators"
) -> list[Evaluator[Any]]:
    """Every spec checked before anything is stored; the error names `evaluators[i].<field>`.
    A key variable outside the operator's `allowed_keys` (PLUMBLINE_EVALUATOR_KEY_ENVS), and
    any of the service's own (`PLUMBLINE_*`), is refused: the worker would send its value to
    the URL the spec names."""
    try:
        evaluators = build_suite(specs)
    except EvaluatorConfigError as exc:
        located = field + exc.field.removeprefix("specs")
        raise Unprocessable(
            f"{located}: {exc.problem}",
            field=located,
            errors=[{"field": located, "message": exc.problem}],
        ) from None
    for index, name in enumerate(key_variables(specs)):
        problem = None if name is None else key_variable_problem(name, allowed_keys)
        if problem is not None:
            located = f"{field}[{index}].params.api_key_env"
            raise Unprocessable(
                f"{located}: {problem}",
                field=located,
                errors=[{"field": located, "message": problem}],
            )
    return evaluators


def key_variables(specs: list[dict[str, Any]]) -> list[str | None]:
    """Each spec's `params.api_key_env` (None where it names none), in order."""
    named: list[str | None] = []
    for spec in specs:
        params = spec.get("params")
        name = params.get("api_key_env") if isinstance(params, dict) else None
        named.append(name if isinstance(name, str) else None)
    return named


def snapshot(
    specs: list[dict[str, Any]], allowed_keys: frozenset[str], field: str = "evaluators"
) -> list[dict[str, Any]]:
    """Specs with every default filled in, so a stored suite or run means one thing forever.
    Names must be unique: results are stored per (row, evaluator name)."""
    evaluators = build_evaluators(specs, allowed_keys, field)
    names = [evaluator.name for evaluator in evaluators]
    for index, name in enumerate(names):
        if name in names[:index]:
            located = f"{field}[{index}].name"
            raise Unprocessable(
                f"{located}: evaluator '{name}' appears twice in the suite", field=located
            )
    return [evaluator.spec() for evaluator in evaluators]


def get_suite(session: Session, project_id: int, name: str) -> EvaluationSuite:
    suite = session.scalar(
        select(EvaluationSuite).where(
            EvaluationSuite.project_id == project_id, EvaluationSuite.name == name
        )
    )
    if suite is None:
        raise NotFound(f"no evaluator suite named '{name}'")
    return suite


def put_suite(
    session: Session,
    principal: Principal,
    name: str,
    description: str | None,
    specs: list[dict[str, Any]],
    allowed_keys: frozenset[str],
) -> tuple[EvaluationSuite, bool]:
    """Create or replace; returns (suite, created). Runs keep their own snapshot, so replacing
    a suite never changes what an earlier run meant."""
    evaluators = snapshot(specs, allowed_keys)
    suite = session.scalar(
        select(EvaluationSuite)
        .where(EvaluationSuite.project_id == principal.project_id, EvaluationSuite.name == name)
        .with_for_update()
    )
    created = suite is None
    if suite is None:
        suite = EvaluationSuite(project_id=principal.project_id, name=name)
        session.add(suite)
    suite.description = description
    suite.evaluators = evaluators
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(f"suite '{name}' was created concurrently; retry") from None
    audit.record(
        session,
        principal,
        "suite.saved",
        "evaluation_suite",
        suite.id,
        {"name": name, "evaluators": [spec["name"] for spec in evaluators]},
    )
    session.commit()
    return suite, created


def list_suites(
    session: Session, project_id: int, cursor: str | None, limit: int
) -> tuple[Sequence[EvaluationSuite], str | None]:
    stmt = select(EvaluationSuite).where(EvaluationSuite.project_id == project_id)
    return paginate(session, stmt, EvaluationSuite.id, cursor, limit)
