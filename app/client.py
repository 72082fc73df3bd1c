"""Kept so `from app.client import Plumbline` goes on working: the client is `plumbline`."""

from plumbline.client import Checkpoint, Dataset, Plumbline, PlumblineError, Run, as_spec

__all__ = ["Checkpoint", "Dataset", "Plumbline", "PlumblineError", "Run", "as_spec"]
