"""The client-side rate limiter paces calls instead of letting the vendor 429 us."""

from __future__ import annotations

import threading

import pytest

from trading_assets.adapters.ratelimit import RateLimiter
from trading_assets_tests.fakes.clock import FakeTime


def test_calls_within_the_limit_go_straight_through() -> None:
    t = FakeTime()
    limiter = RateLimiter(3, 60.0, clock=t.clock, sleep=t.sleep)
    assert [limiter.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert t.sleeps == []


def test_the_call_over_the_limit_waits_until_the_window_frees_a_slot() -> None:
    t = FakeTime()
    limiter = RateLimiter(2, 60.0, clock=t.clock, sleep=t.sleep)
    limiter.acquire()
    t.now += 10
    limiter.acquire()
    waited = limiter.acquire()  # first slot frees 60 s after the first call
    assert waited == pytest.approx(50.0)
    assert t.now == pytest.approx(1060.0)
    waited = limiter.acquire()  # second slot frees 60 s after the second call
    assert waited == pytest.approx(10.0)
    assert limiter.waited == pytest.approx(60.0)


def test_never_more_than_the_limit_in_any_window() -> None:
    t = FakeTime()
    limiter = RateLimiter(5, 1.0, clock=t.clock, sleep=t.sleep)
    stamps = []
    for _ in range(23):
        limiter.acquire()
        stamps.append(t.clock())
    for i, s in enumerate(stamps):
        in_window = [x for x in stamps if s <= x < s + 1.0]
        assert len(in_window) <= 5, (i, in_window)


def test_try_acquire_refuses_without_waiting() -> None:
    t = FakeTime()
    limiter = RateLimiter(1, 5.0, clock=t.clock, sleep=t.sleep)
    assert limiter.try_acquire() is True
    assert limiter.try_acquire() is False
    assert t.sleeps == []
    t.now += 5.0
    assert limiter.try_acquire() is True


def test_threads_share_one_budget() -> None:
    t = FakeTime()
    limiter = RateLimiter(4, 60.0, clock=t.clock, sleep=t.sleep)
    threads = [threading.Thread(target=limiter.acquire) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    # 8 calls at 4/min: at least one full window had to pass.
    assert t.now - 1000.0 >= 60.0


def test_rejects_nonsense_limits() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0, 1.0)
    with pytest.raises(ValueError):
        RateLimiter(1, 0)
