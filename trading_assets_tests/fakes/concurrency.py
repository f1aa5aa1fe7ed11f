"""Racing writers for the concurrency tests: n threads released together by a barrier."""

from __future__ import annotations

import threading
from collections.abc import Callable


def run_threads(n: int, work: Callable[[int], object], timeout: float = 120) -> list:
    """`work(i)` in n threads started at once; their results in order. Any error in a
    thread fails the caller, and so does a thread still running after `timeout`."""
    barrier, results, errors = threading.Barrier(n), [None] * n, []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = work(i)
        except BaseException as exc:  # pragma: no cover - surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads), "a writer hung"
    return results
