"""Plumbline's evaluator library: score model outputs row by row, locally and deterministically.

from app.evals import Groundedness
Groundedness().evaluate(output=answer, context=retrieved).score
"""

from app.evals.base import (
    PARAMS_CONFIG,
    EvalResult,
    EvaluationError,
    Evaluator,
    EvaluatorConfigError,
    InvalidInput,
    Sample,
    Score,
    require_number,
    require_text,
    require_texts,
)
from app.evals.batch import evaluate_row
from app.evals.budgets import LatencyBudget, LengthBudget
from app.evals.classification import Classification
from app.evals.compliance import IsCompliant
from app.evals.groundedness import Groundedness
from app.evals.json_validation import JSONValidation
from app.evals.llm_judge import LLMJudge
from app.evals.matching import Contains, ExactMatch, Regex
from app.evals.refusal import Refusal
from app.evals.registry import (
    ENTRY_POINT_GROUP,
    UnknownEvaluator,
    available_evaluators,
    build_suite,
    get_evaluator,
)
from app.evals.similarity import Similarity
from app.evals.task_completion import TaskCompletion

__all__ = [
    "ENTRY_POINT_GROUP",
    "PARAMS_CONFIG",
    "Classification",
    "Contains",
    "EvalResult",
    "EvaluationError",
    "Evaluator",
    "EvaluatorConfigError",
    "ExactMatch",
    "Groundedness",
    "InvalidInput",
    "IsCompliant",
    "JSONValidation",
    "LLMJudge",
    "LatencyBudget",
    "LengthBudget",
    "Refusal",
    "Regex",
    "Sample",
    "Score",
    "Similarity",
    "TaskCompletion",
    "UnknownEvaluator",
    "available_evaluators",
    "build_suite",
    "evaluate_row",
    "get_evaluator",
    "require_number",
    "require_text",
    "require_texts",
]
