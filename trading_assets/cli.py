"""Command line: `python -m trading_assets run` (what `make run` calls).

Runs the main job, the EMA concentration flow, over every 30-minute tick of the most
recent completed NYSE session on the embedded default (replay data, paper broker, SQLite
ledger), through the real Dagster job and the local instance, so the runs appear in the
UI afterwards (`make dev`).

Before each tick it cleans up runs whose process is gone (a killed `make run`): they are
marked failed and their `broker_api` slot is freed, so the tick does not wait for a slot
nobody will release (see run_health.py). A wait for a slot held by a live run is bounded
by `--pool-wait`, reported, and stopped by Ctrl-C or SIGTERM (see pool_wait.py).

Exit codes: 0 every tick succeeded; 1 a tick failed; 2 bad arguments or settings (nothing
ran, nothing written); 3 gave up waiting for a pool slot; 128+N stopped by signal N (130
Ctrl-C, 143 SIGTERM).
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import time
from collections.abc import Callable
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, NoReturn

from trading_assets.core import calendar
from trading_assets.settings import FLOWS

if TYPE_CHECKING:
    import dagster as dg
    import pandas as pd
    from dagster._utils.error import SerializableErrorInfo

JOB = "ema_concentration_job"
# flow -> its tick job; the other flows go live with their issues (trend_dmi runs per alert: `worker`)
LIVE_JOBS = {"ema_concentration": JOB, "fib_retracement": "fib_retracement_job"}
# Failures are summarised one line per tick; --verbose shows Dagster's log with tracebacks.
QUIET_LOGS = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
VERBOSE_LOGS = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_POOL_WAIT = 0, 1, 2, 3
DEFAULT_POOL_WAIT_SECONDS = 120.0  # a healthy run holds broker_api for seconds; calls time out at 10 s
TICK_EXAMPLE = "2025-11-18-12:30"
_INTERRUPTS = ("DagsterExecutionInterruptedError", "KeyboardInterrupt")


class UsageError(Exception):
    """A bad argument or setting: one line on stderr, exit 2, nothing run."""


class Stopped(BaseException):
    """SIGINT or SIGTERM outside a Dagster run (inside one, Dagster handles them)."""

    def __init__(self, signo: int) -> None:
        super().__init__(signal.Signals(signo).name)
        self.signo = signo


def _raise_stopped(signo: int, _frame: object) -> NoReturn:
    raise Stopped(signo)


def _note(line: str) -> None:
    print(f"trading_assets: {line}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- input


def _previous_session(day: date) -> date | None:
    first, _ = calendar.calendar_bounds()
    earlier = calendar.sessions_between(max(first, date.fromordinal(day.toordinal() - 10)),
                                        date.fromordinal(day.toordinal() - 1))
    return earlier[-1] if earlier else None


def _check_day(day: date, what: str, clock: str | None = None) -> None:
    """UsageError unless `day` is an NYSE session inside the exchange calendar; the hint
    names the previous session (its bar at `clock` for a tick, if it has one)."""
    first, last = calendar.calendar_bounds()
    if not first <= day <= last:
        raise UsageError(f"{what}: {day} is beyond the exchange calendar ({first}..{last}); "
                         "pick a session date in that range")
    reason = calendar.closed_reason(day)
    if reason:
        previous = _previous_session(day)
        hint = ""
        if previous is not None and clock is None:
            hint = f", e.g. the previous session --day {previous}"
        elif previous is not None:
            clocks = [s.strftime("%H:%M") for s in calendar.session_bar_starts(previous)]
            hint = f", e.g. the previous session's --tick {previous}-{clock if clock in clocks else clocks[0]}"
        raise UsageError(f"{what}: {reason}, the market is closed; pick a trading day{hint}")


def _check_tick(key: str) -> date:
    """The session day of tick `key`; UsageError naming the problem unless it is one of
    the flow's partitions (a regular-hours NYSE bar that has closed)."""
    from trading_assets.defs.partitions import PARTITION_FMT, PARTITIONS_START, market_bars_30m

    what = f"--tick {key}"
    try:
        moment = datetime.strptime(key, PARTITION_FMT)
    except ValueError:
        raise UsageError(f"{what}: not a tick; write the bar's start in New York time as YYYY-MM-DD-HH:MM, "
                         f"e.g. --tick {TICK_EXAMPLE}") from None
    _check_day(moment.date(), what, f"{moment:%H:%M}")
    starts = calendar.session_bar_starts(moment.date())
    if moment.strftime("%H:%M") not in {s.strftime("%H:%M") for s in starts}:
        _, close = calendar.session_open_close(moment.date())
        raise UsageError(f"{what}: no bar starts at {moment:%H:%M} on {moment.date()}; its bars start at "
                         f"{starts[0]:%H:%M}..{starts[-1]:%H:%M} every {calendar.BAR_MINUTES} minutes "
                         f"(close {close:%H:%M} New York)")
    if not market_bars_30m.has_partition_key(key):
        if key < PARTITIONS_START:
            raise UsageError(f"{what}: before the flow's first tick {PARTITIONS_START}; pick a later bar")
        latest = market_bars_30m.get_last_partition_key()
        raise UsageError(f"{what}: this bar has not closed yet; the latest closed bar is {latest}")
    return moment.date()


def plan_ticks(day: date | None, ticks: list[str] | None) -> tuple[list[date], list[str]]:
    """The session days and partition keys to run, validated (UsageError otherwise).

    No arguments: the most recent completed session. `--tick` alone: those ticks, on
    their own days. `--day` with `--tick`: the ticks must be on that day."""
    from trading_assets.defs.partitions import PARTITIONS_START, session_partition_keys

    if ticks:
        day_of = {k: _check_tick(k) for k in dict.fromkeys(ticks)}
        other = next((k for k, d in day_of.items() if day is not None and d != day), None)
        if other is not None:
            raise UsageError(f"--tick {other} is not on --day {day}; drop --day or pick ticks of that day")
        return sorted(set(day_of.values())), list(day_of)
    day = day or calendar.last_completed_session()
    _check_day(day, f"--day {day}")
    keys = session_partition_keys(day)
    if keys[0] < PARTITIONS_START:
        raise UsageError(f"--day {day}: before the flow's first tick {PARTITIONS_START}; pick a later day")
    try:
        _check_tick(keys[-1])  # a session that has not closed yet has no partition for its last bar
    except UsageError:
        raise UsageError(f"--day {day}: this session has not closed yet; pick an earlier day, or --tick "
                         "for the bars that have closed") from None
    return [day], keys


def _trading_env() -> str:
    from trading_assets.settings import trading_env

    try:
        return trading_env()
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _parse_day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2025-11-18") from None


def _parse_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds >= 0")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (its default prints the usage block first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {message}; see `python -m trading_assets run --help`\n")


# ----------------------------------------------------------------------------- output


def _metadata(result: dg.ExecuteInProcessResult, node: str, key: str) -> Any:
    mats = result.asset_materializations_for_node(node)
    return mats[0].metadata[key].value if mats and key in mats[0].metadata else None


def _one_line(error: SerializableErrorInfo) -> str:
    cls = error.cls_name or "Error"
    text = " ".join(error.message.split())
    head, sep, rest = text.partition(": ")
    if sep and head.rsplit(".", 1)[-1] == cls:
        text = rest  # SerializableErrorInfo.message is "module.Class: message"
    elif text.rsplit(".", 1)[-1] == cls:
        text = ""
    if cls == "Failure" and text:
        return text  # dg.Failure: the asset's own description
    return f"{cls}: {text}" if text else cls


def root_cause(error: SerializableErrorInfo) -> str:
    """What went wrong, on one line: the first exception in the chain that is not one of
    Dagster's wrappers (DagsterExecutionStepExecutionError wraps a step's exception with
    `raise ... from`), plus the innermost cause when that message does not name it.

    `cause` is followed all the way; `context` only out of Dagster's wrappers, since an
    implicit context is usually what the code was handling, not why it failed."""
    chain = [error]
    while True:
        last = chain[-1]
        inner = last.cause or (last.context if (last.cls_name or "").startswith("Dagster") else None)
        if inner is None:
            break
        chain.append(inner)
    own = next((e for e in chain if not (e.cls_name or "").startswith("Dagster")), chain[-1])
    line = _one_line(own)
    innermost = chain[-1]
    if innermost is not own and (innermost.cls_name or "") not in line:
        line += f" (caused by {_one_line(innermost)})"
    return line


def _failure_errors(result: dg.ExecuteInProcessResult) -> list[SerializableErrorInfo]:
    """Step failures first, then the run's own failure (e.g. a pool wait that gave up)."""
    errors = [e.step_failure_data.error for e in result.all_events if e.is_step_failure]
    errors += [e.job_failure_data.error for e in result.all_events if e.is_run_failure]
    return [e for e in errors if e is not None]


def _chain(error: SerializableErrorInfo | None) -> list[str]:
    names = []
    while error is not None:
        names.append(error.cls_name or "")
        error = error.cause or error.context
    return names


def _describe_orders(orders: pd.DataFrame, result: dg.ExecuteInProcessResult) -> tuple[str, list[str]]:
    """The orders cell, and one line per rejected order with the broker's reason."""
    cells, rejections = [], []
    for r in orders.itertuples():
        cells.append(f"{r.side} {r.qty:g} {r.symbol} {r.status}")
        if r.status == "rejected":
            rejections.append(f"rejected by the broker: {r.side} {r.qty:g} {r.symbol}: "
                              f"{r.reason or 'no reason given'}")
    described = ", ".join(cells)
    if not described:  # say why nothing was ordered
        why = _metadata(result, "ema_concentration__orders", "no_orders_because")
        described = f"- {why}" if why else "-"
    placed = _metadata(result, "ema_concentration__orders", "placed_this_run") or 0
    at_broker = _metadata(result, "ema_concentration__orders", "already_at_broker") or 0
    if not placed and at_broker and any(r.status != "rejected" for r in orders.itertuples()):
        described += " (already placed)"
    return described, rejections


# ----------------------------------------------------------------------------- run


def _tick_job(flow: str, env: str):
    """The flow's tick job with its own assets and the environment's resources: the same
    definitions the code location serves, without loading all of it (the UI's component
    catalogue and the other flows cost ~0.4 s of every `make run`)."""
    import dagster as dg

    from trading_assets.defs.resources import resources_for

    module = importlib.import_module(f"trading_assets.defs.{flow}.assets")
    job = getattr(module, LIVE_JOBS[flow])
    return dg.Definitions(assets=module.FLOW_ASSETS, jobs=[job], resources=resources_for(env)).resolve_job_def(job.name)


def _ema_rows(key: str, result: dg.ExecuteInProcessResult) -> list[str]:
    signal_name = _metadata(result, "ema_concentration__signals", "target_signal")
    price = _metadata(result, "ema_concentration__indicators", "target_price")
    described, rejections = _describe_orders(result.output_for_node("ema_concentration__orders"), result)
    equity = _metadata(result, "ema_concentration__equity", "equity")
    shown = f"{equity:>12,.2f}" if equity == equity else f"{'-':>12}"  # NaN: an old tick, never recorded
    return [f"{key:<18} {signal_name:<9} {price:>9.2f}  {described[:44]:<44} {shown}",
            *(f"{'':<18} {line}" for line in rejections)]


def _table(flow: str) -> tuple[str, Callable[[str, dg.ExecuteInProcessResult], list[str]]]:
    """The flow's table header and the lines a successful tick prints."""
    if flow == "fib_retracement":
        from trading_assets import cli_fx

        return cli_fx.HEADER, lambda key, result: cli_fx.rows(key, result, _metadata)
    return f"{'tick (New York)':<18} {'signal':<9} {'price':>9}  {'orders':<44} {'equity':>12}", _ema_rows


def run(days: list[date], keys: list[str], env: str, pool_wait: float = DEFAULT_POOL_WAIT_SECONDS,
        verbose: bool = False, flow: str = "ema_concentration") -> int:
    import dagster as dg

    from trading_assets.pool_wait import PoolWait, bounded_pool_waits
    from trading_assets.run_health import owner_tag, reap_dead_runs
    from trading_assets.settings import broker_for_flow, dagster_home, data_dir

    try:
        job = _tick_job(flow, env)
    except Exception as exc:
        setting = exc
        while setting.__cause__ is not None and isinstance(setting.__cause__, Exception):
            setting = setting.__cause__
        if not isinstance(setting, ValueError):
            raise  # a bug, not a setting: keep the traceback
        # A bad setting read while building the resources (TRADING_BROKER_<FLOW>, *_BASE_URL).
        raise UsageError(f"cannot load the flows: {' '.join(str(setting).split())}") from None
    home = dagster_home()
    instance = dg.DagsterInstance.get() if home else dg.DagsterInstance.ephemeral()

    def reap(inst: dg.DagsterInstance) -> int:
        reaped = reap_dead_runs(inst, by="python -m trading_assets run")
        for r in reaped:
            tick = f"tick {r.partition} " if r.partition else ""
            done = "marked it failed and freed its slots" if r.marked_failed else "freed its slots"
            _note(f"the process of {tick}run {r.run_id[:8]} ({r.owner.describe()}) is gone (killed or "
                  f"crashed); {done}. Rerun that tick to finish it.")
        return len(reaped)

    on = ", ".join(str(d) for d in days)
    header, tick_rows = _table(flow)
    print(f"trading_assets: {LIVE_JOBS[flow]} on {on} ({len(keys)} ticks), TRADING_ENV={env}")
    print(header)
    started = time.perf_counter()
    failures, done, code = 0, 0, EXIT_OK
    policy = PoolWait(timeout=pool_wait, reap=reap, report=_note)
    with bounded_pool_waits(policy):
        for key in keys:
            reap(instance)
            policy.reset()
            result = job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False,
                                            run_config=VERBOSE_LOGS if verbose else QUIET_LOGS, tags=owner_tag())
            done += 1
            if not result.success:
                failures += 1
                errors = _failure_errors(result)
                cause = root_cause(errors[0]) if errors else f"see run {result.run_id[:8]} in the UI (make dev)"
                interrupted = policy.outcome not in (None, "timeout") or any(
                    name in _INTERRUPTS for e in errors for name in _chain(e))
                print(f"{key:<18} {'STOPPED' if interrupted else 'FAILED'}: {cause}", flush=True)
                if policy.outcome == "timeout":
                    _note(f"error: tick {key} gave up after {policy.waited:.0f} s waiting for pool broker_api, "
                          f"held by {policy.detail}. That run is alive: let it finish and rerun this tick, or "
                          "stop its process (a dead holder is cleaned up automatically); --pool-wait SECONDS "
                          "waits longer. Its run is marked failed and holds no slot.")
                    code = EXIT_POOL_WAIT
                    break
                if interrupted:
                    name = policy.outcome if policy.outcome not in (None, "timeout") else "an interrupt"
                    _note(f"stopped by {name} during tick {key}; its run is marked failed and holds no slot. "
                          "Rerun the tick to finish it (orders are never placed twice).")
                    signo = signal.Signals[name] if name in signal.Signals.__members__ else signal.SIGINT
                    code = 128 + int(signo)
                    break
                continue
            for line in tick_rows(key, result):
                print(line, flush=True)
    elapsed = time.perf_counter() - started
    base = data_dir()
    skipped = f" ({len(keys) - done} not run)" if done < len(keys) else ""
    print(f"\n{done - failures}/{len(keys)} ticks succeeded in {elapsed:.1f}s{skipped}.")
    if failures and not verbose:
        print("Tracebacks: the failed runs in the UI (make dev), or rerun with --verbose.")
    print("Results:")
    if env == "aws":
        from trading_assets.cli_aws import results_lines
        from trading_assets.settings import aws

        for line in results_lines(aws()):
            print(line)
    else:
        print(f"  ledger (intents, transactions, equity): {base / 'ledger.sqlite'}")
        print(f"  asset files (Parquet per tick):          {base / 'assets'}")
    if broker_for_flow(flow, env) == "paper":
        print(f"  paper broker account:                   {base / f'paper_{flow}.sqlite'}")
    print(f"  Dagster runs and events:                 {home or '(ephemeral instance)'}")
    if env == "local":
        print("  Browse lineage, runs and metadata:       make dev  ->  http://127.0.0.1:3000")
    if code != EXIT_OK:
        return code
    return EXIT_FAILED if failures else EXIT_OK


def _aws_setup(command: Callable[[], int]) -> int:
    """Run an AWS command; a missing setting or an AWS setup problem (no credentials, no
    region, access denied) is one line, exit 2, not a traceback."""
    from trading_assets.adapters.aws.clients import AwsSetupError, explain
    from trading_assets.settings import MissingSetting

    try:
        return command()
    except (MissingSetting, AwsSetupError) as exc:
        raise UsageError(str(exc)) from None
    except Exception as exc:
        setup = explain(exc, "the AWS world")
        if setup is None:
            raise
        raise UsageError(str(setup)) from None


# ----------------------------------------------------------------------------- gateway and alert


def _gateway_world(env: str) -> tuple[Any, Callable[[], str], str]:
    """The alert queue of `env` (the one the Dagster definitions read: resources.messaging)
    and where the webhook passphrase comes from: TRADINGVIEW_PASSPHRASE locally, the key of
    that name in the Secrets Manager secret in aws mode (the gateway caches and re-reads it)."""
    from trading_assets import settings
    from trading_assets.resources.messaging import AwsSecretsResource, alert_queue_resource

    queue = alert_queue_resource(env).get()
    if env == "aws":
        aws = settings.aws()
        # ttl 0: every fetch asks Secrets Manager; the gateway's own cache decides when to
        secrets = AwsSecretsResource(region=aws.region, secret_id=aws.secret_id, ttl_seconds=0).get()
        return (queue, lambda: secrets.get(settings.TRADINGVIEW_PASSPHRASE),
                f"Secrets Manager {aws.secret_id} key {settings.TRADINGVIEW_PASSPHRASE}")
    return queue, settings.tradingview_passphrase, settings.TRADINGVIEW_PASSPHRASE


def _is_loopback(host: str) -> bool:
    import ipaddress

    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def gateway(host: str, port: int) -> int:
    """`python -m trading_assets gateway`: check the queue and the passphrase, then serve
    until SIGINT/SIGTERM (0 after a clean stop)."""
    from trading_assets import settings
    from trading_assets.core.messaging import SecretError
    from trading_assets.gateway import create_app, serve
    from trading_assets.gateway.server import CannotListen

    env = _trading_env()

    def ready() -> tuple[Any, Callable[[], str], str]:
        queue, passphrase, source = _gateway_world(env)
        queue.depth()
        try:
            value = passphrase()
        except SecretError as exc:
            raise UsageError(f"the webhook passphrase: {exc}") from None
        if not value:
            raise UsageError(f"the webhook passphrase ({source}) is empty: set it")
        if env == "local" and value == settings.LOCAL_TRADINGVIEW_PASSPHRASE and not _is_loopback(host):
            raise UsageError(f"--host {host}: the built-in development passphrase is for 127.0.0.1 only; set "
                             f"{settings.TRADINGVIEW_PASSPHRASE} to a secret before listening on other addresses")
        return queue, passphrase, source

    queue, passphrase, source = _aws_setup(ready)
    app = create_app(queue, passphrase)

    def listening(url: str) -> None:
        _note(f"gateway listening on {url} (TRADING_ENV={env}; queue {queue!r}; passphrase from {source})")
        _note(f"  POST {url}/webhooks/tradingview   GET {url}/health   API docs {url}/docs   Ctrl-C stops it")

    try:
        signo = serve(app, host, port, on_listening=listening)
    except CannotListen as exc:
        raise UsageError(f"cannot listen on --host {host} --port {port}: {exc}") from None
    _note(f"gateway stopped{f' by {signal.Signals(signo).name}' if signo else ''}")
    return EXIT_OK


def alert(url: str, file: str | None, names: list[str] | None, content_type: str, now: bool) -> int:
    """`python -m trading_assets alert`: send the sample alerts (or a file's) and print the answers."""
    from pathlib import Path

    from trading_assets.gateway.client import CannotSend, choose, load_file, send, stamp_now
    from trading_assets.settings import tradingview_passphrase

    try:
        alerts = load_file(Path(file)) if file else choose(names)
        if now:
            alerts = stamp_now(alerts)
        return send(url, alerts, tradingview_passphrase(), content_type)
    except CannotSend as exc:
        _note(f"error: {exc}")
        return EXIT_FAILED


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535; 0 picks a free one)")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _tick_arguments() -> argparse.ArgumentParser:
    """--day, --tick, --pool-wait and --verbose, shared by `run` and `run-aws`."""
    ticks = argparse.ArgumentParser(add_help=False)
    ticks.add_argument("--day", type=_parse_day, default=None,
                       help="session date (default: the most recent completed NYSE session, "
                            "or the day of the --tick ticks); for --flow fib_retracement an FX trade "
                            "date: 17:00 New York the evening before to 16:00")
    ticks.add_argument("--tick", action="append", dest="ticks", default=None,
                       help=f"only these partition keys, e.g. {TICK_EXAMPLE} (repeatable)")
    ticks.add_argument("--pool-wait", type=_parse_seconds, default=DEFAULT_POOL_WAIT_SECONDS, metavar="SECONDS",
                       help="how long a tick may wait for the broker_api slot while another live run holds "
                            f"it, then exit 3 (default {DEFAULT_POOL_WAIT_SECONDS:.0f}; 0: do not wait). "
                            "A slot held by a dead run is freed at once.")
    ticks.add_argument("--verbose", action="store_true", help="show Dagster's warnings and errors with tracebacks")
    return ticks


def worker(once: bool = False, processes: int = 1) -> int:
    """`python -m trading_assets worker`: the fast path for stored alerts (see
    defs/trend_dmi/processing.py); the sensor is the safety net when it is down.
    `processes` > 1: that many workers on the one queue (see worker_processes.py)."""
    if processes > 1 and not once:
        from trading_assets.worker_processes import supervise

        try:
            return supervise(processes, _note)
        except Stopped as exc:
            _note(f"alert workers stopped by {exc}")
            return EXIT_OK
    from trading_assets.defs.trend_dmi.processing import worker_for
    from trading_assets.settings import dagster_home

    env = _trading_env()

    def build():
        try:
            return worker_for(env)
        except ValueError as exc:  # a bad setting (TRADING_TREND_DMI_INSTRUMENTS, TRADING_BROKER_TREND_DMI)
            raise UsageError(f"cannot start the alert worker: {' '.join(str(exc).split())}") from None

    alert_worker = _aws_setup(build)
    where = dagster_home() or "an ephemeral instance (set DAGSTER_HOME to see the runs in the UI)"
    _note(f"alert worker: TRADING_ENV={env}, queue {alert_worker.queue!r}, runs on {where}")
    if once:
        while done := alert_worker.run_once(wait_seconds=0):
            for d in done:
                _note(f"  alert {d.alert_id}: {'ok' if d.success else 'FAILED'} in {d.seconds:.2f} s (run {d.run_id})")
        return EXIT_OK
    try:
        while True:
            for d in alert_worker.run_once(wait_seconds=1.0):
                _note(f"alert {d.alert_id}: {'ok' if d.success else 'FAILED'} in {d.seconds:.2f} s (run {d.run_id})")
    except Stopped as exc:
        _note(f"alert worker stopped by {exc}")
        return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m trading_assets")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", parents=[_tick_arguments()],
                           help="run a flow's ticks (default: the EMA concentration flow, one session)")
    p_run.add_argument("--flow", choices=FLOWS, default="ema_concentration",
                       help="which flow's job to run (default ema_concentration)")
    sub.add_parser("run-aws", parents=[_tick_arguments()],
                   help="the EMA flow's ticks in TRADING_ENV=aws against a moto server on 127.0.0.1 "
                        "(offline, no credentials), then where the results are")
    sub.add_parser("aws-bootstrap", help="create the AWS world (tables, bucket, queue, topic, secret) where "
                                         "missing; idempotent")
    p_gw = sub.add_parser("gateway", help="the TradingView webhook gateway (POST /webhooks/tradingview, GET "
                                          "/health) on uvicorn, storing alerts in TRADING_ENV's alert queue; "
                                          "stops cleanly on Ctrl-C or SIGTERM (exit 0)")
    p_gw.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p_gw.add_argument("--port", type=_port, default=8000, help="port (default 8000; 0 picks a free one)")
    p_alert = sub.add_parser("alert", help="send the sample TradingView alerts (or a file's) to a gateway and "
                                           "print each answer (the passphrase from TRADINGVIEW_PASSPHRASE)")
    p_alert.add_argument("--url", default="http://127.0.0.1:8000/webhooks/tradingview",
                         help="the webhook URL (default http://127.0.0.1:8000/webhooks/tradingview)")
    which = p_alert.add_mutually_exclusive_group()
    which.add_argument("--file", default=None, help="a JSON file: one alert, a list of alerts, or "
                                                    '{"alerts": {name: alert}}')
    which.add_argument("--sample", action="append", dest="samples", default=None, metavar="NAME",
                       help="only this bundled sample (repeatable): long_entry, di_minus_over_plus, "
                            "di_plus_over_minus, short_entry (default: all, in that order)")
    p_alert.add_argument("--content-type", choices=("json", "text"), default="json",
                         help="send as application/json (default) or text/plain, as TradingView may")
    p_alert.add_argument("--now", action="store_true",
                         help="stamp the alerts with the current time, so they are new alerts (without it a "
                              "second send is answered duplicate)")
    p_worker = sub.add_parser("worker", help="the warm alert worker: runs each stored TradingView alert's Dagster "
                                             "run at once, in process, against DAGSTER_HOME's instance; Ctrl-C "
                                             "or SIGTERM stops it after the alert in hand")
    p_worker.add_argument("--once", action="store_true", help="process what is waiting, then exit")
    p_worker.add_argument("--processes", type=_positive_int, default=1,
                          help="run this many workers on the one queue (default 1): alerts of different "
                               "symbols run side by side, each symbol's still in order")
    p_stream = sub.add_parser("stream", help="the price stream into 1-minute bars (knn_shadow): TRADING_KNN_EPICS "
                                             "from IG (TRADING_ENV=aws or TRADING_STREAM=ig) or the replay stream, "
                                             "stored under TRADING_DATA_DIR/stream; Ctrl-C or SIGTERM stops it "
                                             "(exit 0)")
    p_stream.add_argument("--day", type=_parse_day, default=None,
                          help="replay: the UTC day to replay (default: today, or the last weekday before it)")
    p_stream.add_argument("--speed", type=float, default=1.0, help="replay: times real time (default 1)")
    p_stream.add_argument("--minutes", type=_positive_int, default=None,
                          help="stop after this many minutes of the stream's clock (their bars written)")
    p_stream.add_argument("--once", action="store_const", const=1, dest="minutes", help="the same as --minutes 1")
    p_stream.add_argument("--silence", type=_parse_seconds, default=30.0,
                          help="reconnect when no tick came for this many seconds (default 30)")
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():  # signal handlers live there only
        for signo in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signo, _raise_stopped)
    try:
        if args.command == "run":
            if args.flow not in LIVE_JOBS:
                raise UsageError(f"--flow {args.flow}: not live yet (its ticks have no job); its backtest runs in "
                                 f"the UI: make dev, then materialise {args.flow}/backtest")
            env = _trading_env()
            if args.flow == "fib_retracement":
                from trading_assets.cli_fx import FxUsageError, plan_fx_ticks

                try:
                    days, keys = plan_fx_ticks(args.day, args.ticks)
                except FxUsageError as exc:
                    raise UsageError(str(exc)) from None
            else:
                days, keys = plan_ticks(args.day, args.ticks)
            return run(days, keys, env, args.pool_wait, args.verbose, flow=args.flow)
        if args.command == "aws-bootstrap":
            from trading_assets.cli_aws import aws_bootstrap

            return _aws_setup(aws_bootstrap)
        if args.command == "run-aws":
            from trading_assets.cli_aws import run_aws

            days, keys = plan_ticks(args.day, args.ticks)
            return run_aws(lambda: run(days, keys, "aws", args.pool_wait, args.verbose))
        if args.command == "worker":
            return worker(args.once, args.processes)
        if args.command == "gateway":
            try:
                return gateway(args.host, args.port)
            except Stopped as exc:
                _note(f"gateway stopped by {exc} before it was serving")
                return 128 + exc.signo
        if args.command == "stream":
            from trading_assets.stream_consumer import stream_cli

            return stream_cli(args.day, args.speed, args.minutes, args.silence, _note)
        if args.command == "alert":
            return alert(args.url, args.file, args.samples, args.content_type, args.now)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except Stopped as exc:
        _note(f"stopped by {exc} between ticks (no run was in progress)")
        return 128 + exc.signo
