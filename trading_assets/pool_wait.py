"""A wait for a pool slot that is bounded, says what it waits for, and stops on a signal.

How Dagster 1.13's in-process executor waits (`execute_in_process`, and every run of an
`in_process_executor` job): `inner_plan_execution_iterator` loops `get_next_step()` ->
`InstanceConcurrencyContext.claim()` -> `ActiveExecution.sleep_til_ready()`. Three faults:

- 100% CPU: `sleep_til_ready` sleeps `interval_to_next_pending_claim_check()`, which is
  `min([0, *(ready_at - now)])`, never positive, so the loop never sleeps.
- Signals ignored: the run executes inside `capture_interrupts()`, whose SIGINT/SIGTERM
  handler only sets a flag; the flag is checked inside steps, never in this loop.
- No bound: it waits as long as the holder keeps its slot (forever for a dead holder).

`bounded_pool_waits(PoolWait(...))` replaces the context class the in-process executor
instantiates (`dagster._core.executor.in_process.InstanceConcurrencyContext`) with a
subclass, for the duration of the `with`. While a step is blocked it sleeps between
checks, reports the pool and who holds it, reaps dead holders (`run_health`), retries at
once when one was freed, and gives up on the deadline (`PoolWaitTimeout`) or on SIGINT /
SIGTERM (`DagsterExecutionInterruptedError`, Dagster's own interrupt). Either way the run
fails with that error and its pending claim is removed, so it holds no slot.

This touches a Dagster internal; `bounded_pool_waits` refuses to start if it has moved.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import dagster as dg
import dagster._core.executor.in_process as _in_process
from dagster import DagsterInstance
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.execution.retries import RetryMode, get_retries_config
from dagster._core.executor.in_process import InProcessExecutor
from dagster._utils.interrupts import check_captured_interrupt

from trading_assets import run_health

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_SLEEP_SECONDS = 0.25


class PoolWaitTimeout(Exception):
    """A step waited longer than allowed for a pool slot held by another run."""


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class PoolWait:
    """How long a step may wait for a pool slot, and what happened (read after the run).

    `timeout` seconds (0: do not wait); `report` receives one-line progress messages;
    `reap` is called every `check_every` seconds while blocked and returns how many dead
    holders it cleaned up; the slot is tried for every `claim_every` seconds (a freed slot
    goes to the oldest waiting step, which finds out only when it asks: two alert workers
    waited ~1 s a step at `check_every`'s pace).
    """

    timeout: float
    report: Callable[[str], None] = _stderr
    reap: Callable[[DagsterInstance], int] | None = None
    check_every: float = 1.0
    claim_every: float = 0.05
    report_every: float = 15.0
    outcome: str | None = None  # None | "timeout" | "SIGINT" | "SIGTERM"
    detail: str = ""  # the last holder description, for the caller's message
    waited: float = 0.0

    def reset(self) -> None:
        self.outcome, self.detail, self.waited = None, "", 0.0


@dataclass
class _Blocked:
    pool: str
    since: float
    last_report: float
    last_reap: float = 0.0


@dataclass
class _SignalRecorder:
    """Notes which signal arrived while blocked, then passes it to Dagster's handler."""

    received: int | None = None
    saved: dict[int, Any] = field(default_factory=dict)

    def install(self) -> None:
        if self.saved or threading.current_thread() is not threading.main_thread():
            return
        for sig in _SIGNALS:
            previous = signal.getsignal(sig)
            self.saved[sig] = previous

            def handler(signo: int, frame: Any, previous: Any = previous) -> None:
                self.received = signo
                if callable(previous):
                    previous(signo, frame)

            signal.signal(sig, handler)

    def restore(self) -> None:
        for sig, previous in self.saved.items():
            signal.signal(sig, previous)
        self.saved.clear()


class _BoundedConcurrencyContext(InstanceConcurrencyContext):
    """Dagster's per-run slot claims with a wait that sleeps, reports, reaps and ends."""

    policy: ClassVar[PoolWait]

    def __enter__(self) -> _BoundedConcurrencyContext:
        super().__enter__()
        self._blocked: dict[str, _Blocked] = {}
        self._signals = _SignalRecorder()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._signals.restore()
        super().__exit__(*exc)

    def claim(self, concurrency_key: str, step_key: str, step_priority: int = 0) -> bool:
        claimed = super().claim(concurrency_key, step_key, step_priority)
        blocked = self._blocked.get(step_key)
        if claimed:
            if blocked is not None:
                del self._blocked[step_key]
                self.policy.report(f"  got pool {blocked.pool} after {time.monotonic() - blocked.since:.0f} s")
                if not self._blocked:
                    self._signals.restore()
            return True
        now = time.monotonic()
        if blocked is None:
            self._blocked[step_key] = _Blocked(concurrency_key, now, now)
            self._signals.install()
            limit = f"up to {self.policy.timeout:.0f} s" if self.policy.timeout else "not waiting"
            self.policy.report(f"  waiting for pool {concurrency_key} (step {step_key}), held by "
                               f"{self._holders(concurrency_key)}; {limit}, Ctrl-C to stop")
        # Dagster backs off up to 15 s between attempts; a freed slot should not wait that long.
        self._pending_timeouts[step_key] = min(self._pending_timeouts[step_key], time.time() + self.policy.claim_every)
        return False

    def interval_to_next_pending_claim_check(self) -> float:
        self._check_blocked()
        if not self._pending_claims:
            return 0.0
        now = time.time()
        ready = min((self._pending_timeouts.get(k, now) for k in self._pending_claims), default=now)
        # Dagster's own is never > 0 (a busy loop); short sleeps keep a signal's effect prompt.
        return max(0.01, min(_SLEEP_SECONDS, ready - now))

    def _check_blocked(self) -> None:
        now = time.monotonic()
        for step_key, blocked in list(self._blocked.items()):
            self.policy.waited = now - blocked.since
            signo = self._signals.received
            if signo is not None or check_captured_interrupt():
                name = signal.Signals(signo).name if signo is not None else "an interrupt"
                self.policy.outcome, self.policy.detail = name, self._holders(blocked.pool)
                raise DagsterExecutionInterruptedError(
                    f"stopped by {name} after waiting {self.policy.waited:.0f} s for pool {blocked.pool}")
            if self.policy.reap is not None and now - blocked.last_reap >= self.policy.check_every:
                blocked.last_reap = now
                if self.policy.reap(self._instance):
                    self._pending_timeouts[step_key] = 0.0  # a dead holder was freed: claim now
                    continue
            if self.policy.waited >= self.policy.timeout:
                self.policy.outcome, self.policy.detail = "timeout", self._holders(blocked.pool)
                raise PoolWaitTimeout(
                    f"gave up after {self.policy.waited:.0f} s waiting for pool {blocked.pool}, held by "
                    f"{self.policy.detail}")
            if now - blocked.last_report >= self.policy.report_every:
                blocked.last_report = now
                self.policy.report(f"  still waiting for pool {blocked.pool}: {self.policy.waited:.0f} of "
                                   f"{self.policy.timeout:.0f} s, held by {self._holders(blocked.pool)}")

    def _holders(self, pool: str) -> str:
        info = self._instance.event_log_storage.get_concurrency_info(pool)
        run_ids = list(dict.fromkeys(s.run_id for s in info.claimed_slots if s.run_id != self._run_id))
        if not run_ids:
            return "no run (a slot is being handed over)"
        return "; ".join(run_health.describe_run(self._instance, run_id) for run_id in run_ids)


@contextmanager
def bounded_pool_waits(policy: PoolWait) -> Iterator[PoolWait]:
    """Make the in-process executor's pool waits follow `policy` inside the `with`."""
    original = getattr(_in_process, "InstanceConcurrencyContext", None)
    if original is not InstanceConcurrencyContext or not hasattr(original, "interval_to_next_pending_claim_check"):
        raise RuntimeError("dagster's in-process executor no longer uses InstanceConcurrencyContext as "
                           "trading_assets.pool_wait expects; check it against this dagster version")
    bound = type("BoundedConcurrencyContext", (_BoundedConcurrencyContext,), {"policy": policy})
    _in_process.InstanceConcurrencyContext = bound  # type: ignore[misc]
    try:
        yield policy
    finally:
        _in_process.InstanceConcurrencyContext = original  # type: ignore[misc]


class BoundedInProcessExecutor(InProcessExecutor):
    """The in-process executor with bounded, reported, interruptible pool waits, for runs
    the daemon or `dagster dev` launches (execute_in_process uses its own executor; the
    CLI wraps that one itself)."""

    def __init__(self, pool_wait_seconds: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pool_wait_seconds = pool_wait_seconds

    def execute(self, plan_context: Any, execution_plan: Any) -> Iterator[Any]:
        def reap(instance: DagsterInstance) -> int:
            reaped = run_health.reap_dead_runs(instance, by="run worker")
            for r in reaped:
                plan_context.log.warning(f"run {r.run_id[:8]} ({r.owner.describe()}) is gone; freed its slots")
            return len(reaped)

        policy = PoolWait(timeout=self.pool_wait_seconds, reap=reap, report=plan_context.log.warning)
        with bounded_pool_waits(policy):
            yield from super().execute(plan_context, execution_plan)


@dg.executor(
    name="bounded_in_process",
    config_schema={
        "pool_wait_seconds": dg.Field(float, default_value=300.0,
                                      description="longest wait for a pool slot (e.g. broker_api) before the "
                                                  "run fails naming the holder"),
        "retries": get_retries_config(),
    },
)
def bounded_in_process_executor(init_context: dg.InitExecutorContext) -> BoundedInProcessExecutor:
    """Steps in one process, as `in_process_executor`, but a blocked pool wait is bounded."""
    config = init_context.executor_config
    return BoundedInProcessExecutor(pool_wait_seconds=float(config["pool_wait_seconds"]),
                                    retries=RetryMode.from_config(config["retries"]))
