"""Kept so `from app.evals import Groundedness` goes on working: the evaluator library is
`plumbline.evals` (importable without the server, by projects that have an `app` of their
own)."""

from plumbline.evals import *  # noqa: F403
from plumbline.evals import __all__ as __all__
