"""A small client-side rate limiter, so adapters stay under a vendor's published limits.

Brokers answer bursts with 429s (and alpaca-py then retries on its own, even order POSTs),
so it is cheaper and safer to pace calls on our side: `acquire()` blocks until a call is
allowed instead of hammering the server and reading errors.

    limiter = RateLimiter(200, 60.0)   # Alpaca: 200 requests per minute
    limiter.acquire()                  # before every HTTP call

The clock and sleep are injectable so tests never wait for real.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class RateLimiter:
    """At most `calls` acquisitions in any sliding window of `per_seconds` (thread-safe)."""

    def __init__(
        self,
        calls: int,
        per_seconds: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if calls < 1:
            raise ValueError(f"calls must be >= 1, got {calls}")
        if per_seconds <= 0:
            raise ValueError(f"per_seconds must be > 0, got {per_seconds}")
        self.calls = int(calls)
        self.per_seconds = float(per_seconds)
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._stamps: deque[float] = deque()
        self.waited = 0.0  # total seconds spent waiting, for metrics and tests

    def _wait_needed(self, now: float) -> float:
        """Seconds until a slot frees up (0 = a call may go now). Caller holds the lock."""
        horizon = now - self.per_seconds
        while self._stamps and self._stamps[0] <= horizon:
            self._stamps.popleft()
        if len(self._stamps) < self.calls:
            return 0.0
        return self._stamps[0] + self.per_seconds - now

    def try_acquire(self) -> bool:
        """Take a slot if one is free right now; never waits."""
        with self._lock:
            now = self._clock()
            if self._wait_needed(now) > 0:
                return False
            self._stamps.append(now)
            return True

    def acquire(self) -> float:
        """Block until a call is allowed, take the slot, return the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                wait = self._wait_needed(now)
                if wait <= 0:
                    self._stamps.append(now)
                    self.waited += waited
                    return waited
            # Sleep outside the lock so other threads can still see the window.
            self._sleep(wait)
            waited += wait

    def __enter__(self) -> RateLimiter:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    @classmethod
    def per_minute(cls, calls: int, **kw: Callable) -> RateLimiter:
        """The common case: a vendor limit stated per minute."""
        return cls(calls, 60.0, **kw)
