"""A stand-in for `time.time` / `time.monotonic` and `time.sleep`: time only moves when
code sleeps or a test advances `now`, so waits are asserted without waiting."""

import threading


class FakeTime:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []
        self._lock = threading.Lock()

    def time(self) -> float:
        with self._lock:
            return self.now

    clock = time  # the name RateLimiter(clock=...) uses

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.sleeps.append(seconds)
            self.now += seconds
