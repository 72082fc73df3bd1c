"""In-process token buckets: dashboard sign-in per client IP, key-authenticated writes per key.

The buckets live in the process's memory, so N service processes allow N times the configured
rate; that bounds abuse cheaply without a shared store, which is all these limits are for."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable

from fastapi import FastAPI

from app.core.errors import Problem


class RateLimited(Problem):
    status = 429
    title = "Too many requests"


class TokenBuckets:
    """One bucket per key holding up to `per_minute` tokens, refilled at `per_minute / 60` per
    second. Only the most recently used `max_keys` buckets are kept, so a flood of distinct
    keys (IP addresses) cannot grow memory; an evicted bucket comes back full."""

    def __init__(self, per_minute: int, max_keys: int = 100_000) -> None:
        self.capacity = float(per_minute)
        self.refill_per_s = per_minute / 60.0
        self.max_keys = max_keys
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: Hashable) -> float:
        """Spends one token; answers 0 when allowed, else the seconds until a token is back."""
        now = time.monotonic()
        with self._lock:
            tokens, updated = self._buckets.pop(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - updated) * self.refill_per_s)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.refill_per_s
            self._buckets[key] = (tokens - 1 if wait == 0 else tokens, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return wait


_creation_lock = threading.Lock()


def enforce(app: FastAPI, limit_name: str, per_minute: int, key: Hashable, what: str) -> None:
    """Raises 429 with Retry-After when `key` has used up its `per_minute` budget of
    `limit_name`; a limit of 0 turns the check off. Buckets are kept on `app.state`."""
    if per_minute <= 0:
        return
    with _creation_lock:
        limiters: dict[str, TokenBuckets] | None = getattr(app.state, "rate_limiters", None)
        if limiters is None:
            limiters = app.state.rate_limiters = {}
        buckets = limiters.get(limit_name)
        if buckets is None or buckets.capacity != per_minute:
            buckets = limiters[limit_name] = TokenBuckets(per_minute)
    wait = buckets.take(key)
    if wait > 0:
        retry_after = max(1, math.ceil(wait))
        raise RateLimited(
            f"too many {what}: at most {per_minute} per minute; retry after {retry_after}s",
            headers={"Retry-After": str(retry_after)},
        )
