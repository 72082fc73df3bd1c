"""Backpressure for ingest: a bounded number of ingest requests in flight per process.

A request that finds the gate full is refused at once (REST 429, OTLP 503, both with
Retry-After) before its body is read, so a burst costs the server a refusal each instead of
memory: what is in flight is at most `ingest_max_in_flight` bodies of `max_body_bytes` each. Every
admitted request is committed before it is acknowledged, so nothing acknowledged is ever
held in memory only; the client's retry is the queue, and idempotent inserts make retries
safe.
"""

from __future__ import annotations

import threading


class IngestGate:
    """A non-blocking counting gate: callers either get a place now or are told to retry.

    Thread-safe, so a test (or an admin tool) may hold places from outside the event loop.
    """

    def __init__(self, capacity: int, retry_after_s: int) -> None:
        self.capacity = capacity
        self.retry_after_s = retry_after_s
        self._in_flight = 0
        self._lock = threading.Lock()

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
