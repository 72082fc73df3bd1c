"""The garbage collector of a long-running server process.

Everything imported and built at startup lives as long as the process; what an ingest batch
allocates lives until its answer is sent. Neither is garbage, yet CPython's collector walks
both whenever enough new objects pile up."""

from __future__ import annotations

import gc

YOUNG_COLLECTION_THRESHOLD = 100_000
"""Tracked objects allocated (net of those freed) between two young-generation collections;
CPython's default is 700. A REST batch at the request limit (10,000 events) keeps ~63,000
alive until it is stored, so at 700 the collector ran ~90 times per batch, each time walking
and promoting the batch's live events, and the older generations' collections, counted in
young ones, walked them again: ~4 us of CPU per REST event (17.6 with the collector off,
21.6 with it at 700, validate and rows, 2026-12-01). Only garbage in reference cycles waits
for a collection (the rest is freed when its last reference goes), so at most this many
objects of it wait longer."""


def settle_heap() -> None:
    """Called once startup is done (app.main's lifespan; bench/otlp_phases.py, which measures
    the receiver's steps in the heap the server has): everything built so far is moved out of
    the collector's reach, so a full collection during an ingest batch walks the batch's
    objects only, not the whole application again (a third of REST ingest CPU before); and
    the young generation is collected every YOUNG_COLLECTION_THRESHOLD objects, not 700."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, middle, old)
