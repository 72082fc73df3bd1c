"""The garbage collector of a long-running server process.

Everything imported and built at startup lives as long as the process; what an ingest batch
allocates lives until its answer is sent. Neither is garbage, yet CPython's collector walks
both whenever enough new objects pile up."""

from __future__ import annotations

import gc


def settle_heap() -> None:
    """Called once startup is done (app.main's lifespan; bench/otlp_phases.py, which measures
    the receiver's steps in the heap the server has): everything built so far is moved out of
    the collector's reach, so a full collection during an ingest batch walks the batch's
    objects only, not the whole application again (a third of REST ingest CPU before)."""
    gc.freeze()
