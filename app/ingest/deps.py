"""Request dependencies the ingest routes share (REST events and the OTLP receiver):
backpressure, and the raw body read before the key is checked."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import Depends, FastAPI, Request, status

from app.core.errors import Problem
from app.core.settings import Settings
from app.ingest.queue import IngestGate


def ingest_gate(app: FastAPI) -> IngestGate:
    """The process's gate, made on first use (on the event loop, so made once)."""
    gate: IngestGate | None = getattr(app.state, "ingest_gate", None)
    if gate is None:
        settings: Settings = app.state.settings
        gate = app.state.ingest_gate = IngestGate(
            settings.ingest_max_in_flight,
            settings.ingest_retry_after_s,
            settings.ingest_queue_wait_s,
        )
    return gate


def ingest_slot(overload_status: int) -> Callable[[Request], AsyncIterator[None]]:
    """Dependency holding a place in the gate while the route runs, or refusing the request
    with `overload_status` and Retry-After when no place comes free within the gate's wait.
    Declared before the body and the key so that an overloaded server reads neither."""

    async def slot(request: Request) -> AsyncIterator[None]:
        gate = ingest_gate(request.app)
        if not await gate.acquire():
            raise Problem(
                f"ingest is at capacity ({gate.capacity} requests in flight); retry after "
                f"{gate.retry_after_s}s",
                status=overload_status,
                headers={"Retry-After": str(gate.retry_after_s)},
            )
        try:
            yield
        finally:
            gate.release()

    return slot


async def request_body(request: Request) -> bytes:
    """The raw body, read before the key is checked so no transaction waits on the upload."""
    return await request.body()


# scope="function": the place is given back as soon as the route returns, before the answer
# is sent; a client that sends its next batch the moment it reads the answer then finds the
# place free instead of being told to wait Retry-After seconds for nothing.
RestSlot = Annotated[
    None, Depends(ingest_slot(status.HTTP_429_TOO_MANY_REQUESTS), scope="function")
]
RawBody = Annotated[bytes, Depends(request_body)]
