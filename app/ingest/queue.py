"""Backpressure for ingest: a bounded number of ingest requests in flight per process.

A request that finds the gate full waits up to `ingest_queue_wait_s` for a place (its body
still unread: waiting costs no thread and no memory beyond the socket's buffers), then is
refused (REST 429, OTLP 503, both with Retry-After), so a burst costs the server a refusal
each instead of memory: what is in flight is at most `ingest_max_in_flight` bodies of
`max_body_bytes` each. The short wait is what keeps a few steady clients from being
refused every time one of them is a moment early (a refusal idles that client for
Retry-After seconds, a whole second of lost ingest). Every
admitted request is committed before it is acknowledged, so nothing acknowledged is ever
held in memory only; the client's retry is the queue, and idempotent inserts make retries
safe.
"""

from __future__ import annotations

import asyncio
import threading
import time


class IngestGate:
    """A non-blocking counting gate: callers either get a place now or are told to retry.

    Thread-safe, so a test (or an admin tool) may hold places from outside the event loop.
    """

    POLL_S = 0.005
    """How often a waiting request looks for a place again."""

    def __init__(self, capacity: int, retry_after_s: int, wait_s: float = 0.0) -> None:
        self.capacity = capacity
        self.retry_after_s = retry_after_s
        self.wait_s = wait_s
        self._in_flight = 0
        self._lock = threading.Lock()

    async def acquire(self) -> bool:
        """A place now, or within `wait_s`; False when none came free in time. Polls rather
        than waits on a condition because places may be released from other threads."""
        deadline = time.monotonic() + self.wait_s
        while not self.try_acquire():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(self.POLL_S)
        return True

    def try_acquire(self) -> bool:
        with self._lock:
            if self._in_flight >= self.capacity:
                return False
            self._in_flight += 1
            return True

    def release(self) -> None:
        with self._lock:
            if self._in_flight <= 0:
                raise RuntimeError("IngestGate released more often than acquired")
            self._in_flight -= 1

    @property
    def in_flight(self) -> int:
        return self._in_flight
