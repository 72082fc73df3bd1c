"""scipy, imported on first use instead of at startup.

Importing scipy.stats and scipy.optimize costs a process ~75 MB of RSS and a second of
startup, and only some paths need them (gate decisions, drift bands, canaries): a server
process that only ingests and serves pages never does. Modules of `app.stats` take scipy's
submodules from here; each name is a stand-in that imports the real module when an attribute
is first read and keeps what it read. Type checkers see the real modules.

Add a heavy optional library here rather than importing it inside a function.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any


class LazyModule:
    """Stands in for the module `name` until an attribute is first read."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        # Only reached for names not read before: each is kept on the stand-in afterwards.
        value = getattr(importlib.import_module(self._name), attribute)
        setattr(self, attribute, value)
        return value

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}>"


if TYPE_CHECKING:
    from scipy import optimize as scipy_optimize
    from scipy import special as scipy_special
    from scipy import stats as scipy_stats
else:
    scipy_optimize = LazyModule("scipy.optimize")
    scipy_special = LazyModule("scipy.special")
    scipy_stats = LazyModule("scipy.stats")

__all__ = ["LazyModule", "scipy_optimize", "scipy_special", "scipy_stats"]
