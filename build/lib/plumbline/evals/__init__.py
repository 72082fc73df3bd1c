"""Plumbline's evaluator library: score model outputs row by row, locally and deterministically.

from plumbline.evals import Groundedness
Groundedness().evaluate(output=answer, context=retrieved).score
"""

from plumbline.evals.base import (
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
from plumbline.evals.batch import evaluate_row
from plumbline.evals.budgets import LatencyBudget, LengthBudget
from plumbline.evals.classification import Classification
from plumbline.evals.compliance import IsCompliant
from plumbline.evals.groundedness import Groundedness
from plumbline.evals.json_validation import JSONValidation
from plumbline.evals.llm_judge import LLMJudge
from plumbline.evals.matching import Contains, ExactMatch, Regex
from plumbline.evals.refusal import Refusal
from plumbline.evals.registry import (
    ENTRY_POINT_GROUP,
    UnknownEvaluator,
    available_evaluators,
    build_suite,
    get_evaluator,
)
from plumbline.evals.similarity import Similarity
from plumbline.evals.task_completion import TaskCompletion

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
