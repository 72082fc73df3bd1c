"""Plumbline's Python client and evaluator library, for training pipelines and CI jobs.

    from plumbline import Plumbline
    from plumbline.evals import Groundedness, JSONValidation, TaskCompletion, IsCompliant

Neither imports anything of the server (`app`), so a project with an `app` package of its
own can use them. The server imports the same evaluator code from here."""

from plumbline.client import Checkpoint, Dataset, Plumbline, PlumblineError, Run

__all__ = ["Checkpoint", "Dataset", "Plumbline", "PlumblineError", "Run"]
