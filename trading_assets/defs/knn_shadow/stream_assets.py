"""The knn_shadow flow's 1-minute bars in Dagster: one daily partition (UTC day) read from
the price stream's day file (`python -m trading_assets stream` writes it; see
adapters/stream/store.py), so the bars' lineage, freshness and gaps show in the UI.

A run materialises the day so far; the schedule refreshes today's partition every 15
minutes (and, at 00:00, the day that has just ended). The check `minute_bars_complete`
is not blocking: bars with NaN/inf, out of order or duplicated are an error, a day whose
minutes are missing beyond `max_gap_share` of its trading span a warning.
"""

import time
import warnings
from collections.abc import Iterator
from datetime import date

import dagster as dg
import pandas as pd

from trading_assets.core import fx_hours
from trading_assets.core.bars import bar_problems
from trading_assets.core.strategies import knn_forecast as knn
from trading_assets.defs.conventions import OWNERS, flow_tags
from trading_assets.defs.knn_shadow.partitions import KNN_PARTITIONS_START, day_minutes, day_of, knn_days
from trading_assets.defs.tick_assets import elapsed_ms
from trading_assets.pool_wait import bounded_in_process_executor
from trading_assets.resources.stream import StreamStoreResource

FLOW = knn.FLOW
MINUTE_BARS = dg.AssetKey([FLOW, "minute_bars"])
COMPLETE_CHECK = "minute_bars_complete"
MINUTE = pd.Timedelta(minutes=1)


class MinuteBarsConfig(dg.Config):
    """`max_gap_share`: the share of an epic's trading span (its first to its last bar of
    the day, FX hours only) that may be missing minutes before the check warns."""

    max_gap_share: float = 0.05


def _open_minutes(first: pd.Timestamp, last: pd.Timestamp) -> pd.DatetimeIndex:
    """Every minute from `first` to `last` (UTC) in an hour the FX market is open."""
    span = pd.date_range(first, last, freq="min", tz="UTC")
    hours = span.floor("h")
    closed = {h: fx_hours.closed_reason(h.to_pydatetime()) is not None for h in hours.unique()}
    return span[[not closed[h] for h in hours]]


def gap_stats(minutes: pd.DatetimeIndex) -> dict[str, object]:
    """One epic's gaps: minutes of its trading span with no bar, in how many holes, the
    longest hole (minutes, and where it starts) and the missing share of the span."""
    if len(minutes) == 0:
        return {"span_minutes": 0, "missing_minutes": 0, "gaps": 0, "longest_gap_minutes": 0,
                "longest_gap_start": None, "missing_share": 0.0}
    expected = _open_minutes(minutes.min(), minutes.max())
    missing = expected.difference(minutes)
    longest, longest_start, gaps = 0, None, 0
    if len(missing):
        breaks = (missing[1:] - missing[:-1]) != MINUTE
        run_starts = [0, *[i + 1 for i, b in enumerate(breaks) if b]]
        run_ends = [*run_starts[1:], len(missing)]
        gaps = len(run_starts)
        for s, e in zip(run_starts, run_ends, strict=True):
            if e - s > longest:
                longest, longest_start = e - s, missing[s].isoformat()
    return {"span_minutes": len(expected), "missing_minutes": len(missing), "gaps": gaps,
            "longest_gap_minutes": longest, "longest_gap_start": longest_start,
            "missing_share": round(len(missing) / len(expected), 4) if len(expected) else 0.0}


def _fx_open_hours(day: date) -> int:
    start, _ = day_minutes(day)
    return sum(fx_hours.closed_reason(start + pd.Timedelta(hours=h)) is None for h in range(24))


def _check(frame: pd.DataFrame, day: date, gaps: dict[str, dict], max_gap_share: float) -> dg.AssetCheckResult:
    if frame.empty:
        open_hours = _fx_open_hours(day)
        if open_hours == 0:
            return dg.AssetCheckResult(passed=True, description=f"no bars: the FX market was closed all of {day}",
                                       metadata={"fx_open_hours": 0})
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN,
                                   description=f"no bars stored for {day} ({open_hours} FX hours open that day): "
                                               "was the stream running?",
                                   metadata={"fx_open_hours": open_hours})
    problems = bar_problems(frame)
    metadata = {"problems": dg.MetadataValue.json(problems), "gaps": dg.MetadataValue.json(gaps),
                "max_gap_share": max_gap_share}
    if problems:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.ERROR,
                                   description="; ".join(problems), metadata=metadata)
    too_gappy = [f"{e}: {g['missing_minutes']} of {g['span_minutes']} minutes missing "
                 f"({g['missing_share']:.1%} > {max_gap_share:.1%}), longest gap {g['longest_gap_minutes']} "
                 f"minutes from {g['longest_gap_start']}"
                 for e, g in gaps.items() if g["missing_share"] > max_gap_share]
    if too_gappy:
        return dg.AssetCheckResult(passed=False, severity=dg.AssetCheckSeverity.WARN,
                                   description="; ".join(too_gappy), metadata=metadata)
    missing = sum(g["missing_minutes"] for g in gaps.values())
    return dg.AssetCheckResult(passed=True, metadata=metadata,
                               description=f"finite, ordered, one bar per minute; {missing} minutes missing, "
                                           f"within {max_gap_share:.1%} of each epic's span")


@dg.asset(
    key=MINUTE_BARS, group_name=FLOW, partitions_def=knn_days, tags=flow_tags(FLOW, "tick"), owners=OWNERS,
    kinds={"pandas", "sqlite"},
    check_specs=[dg.AssetCheckSpec(COMPLETE_CHECK, asset=MINUTE_BARS,
                                   description="no NaN/inf, ordered, one bar per (epic, minute); warns when minutes "
                                               "are missing beyond `max_gap_share` of an epic's trading span")],
    description="The price stream's closed 1-minute bars (mid price; volume = ticks) of one UTC day, every epic "
                "the consumer stored, read from TRADING_DATA_DIR/stream/<day>.sqlite; a minute without ticks has "
                "no bar (never forward-filled).",
)
def minute_bars(context: dg.AssetExecutionContext, config: MinuteBarsConfig,
                stream_store: StreamStoreResource) -> Iterator[dg.Output | dg.AssetCheckResult]:
    t0 = time.perf_counter()
    day = day_of(context.partition_key)
    store = stream_store.get()
    frame = store.bars(day)
    by_epic = {str(e): g for e, g in frame.groupby("symbol", sort=True)} if len(frame) else {}
    gaps = {e: gap_stats(pd.DatetimeIndex(g.index).unique()) for e, g in by_epic.items()}
    context.log.info(f"{day}: {len(frame)} bars of {len(by_epic)} epics from {store.day_path(day)}")
    yield dg.Output(frame, metadata={
        "dagster/row_count": len(frame),
        "bars_per_epic": dg.MetadataValue.json({e: len(g) for e, g in by_epic.items()}),
        "first_minute": dg.MetadataValue.json({e: g.index.min().isoformat() for e, g in by_epic.items()}),
        "last_minute": dg.MetadataValue.json({e: g.index.max().isoformat() for e, g in by_epic.items()}),
        "gaps": dg.MetadataValue.json(gaps),
        "missing_minutes": sum(g["missing_minutes"] for g in gaps.values()),
        "longest_gap_minutes": max((g["longest_gap_minutes"] for g in gaps.values()), default=0),
        "ticks_per_bar": dg.MetadataValue.json({e: round(float(g["volume"].mean()), 2) for e, g in by_epic.items()}),
        "source": dg.MetadataValue.path(str(store.day_path(day))),
        "work_ms": elapsed_ms(t0),
    })
    yield _check(frame, day, gaps, config.max_gap_share)


knn_shadow_bars_job = dg.define_asset_job(
    name="knn_shadow_bars_job",
    selection=dg.AssetSelection.assets(minute_bars),
    executor_def=bounded_in_process_executor,
    description="The knn_shadow flow's 1-minute bars of one UTC day, from the price stream's day file.",
)


def refresh_request(moment: pd.Timestamp) -> dg.RunRequest | dg.SkipReason:
    """The run a 15-minute tick at `moment` starts: the UTC day of the minute just ended
    (so the 00:00 tick completes the day before), skipped when that minute's FX hour is
    closed (no new bars)."""
    tick = pd.Timestamp(moment).tz_convert("UTC").floor("min")
    last = tick - MINUTE
    reason = fx_hours.closed_reason(last.floor("h").to_pydatetime())
    if reason:
        return dg.SkipReason(f"no new minute bars: {reason}")
    key = last.date().isoformat()
    return dg.RunRequest(run_key=f"{FLOW}:minute_bars:{tick.isoformat()}", partition_key=key)


def _refresh(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
    return refresh_request(pd.Timestamp(context.scheduled_execution_time))


with warnings.catch_warnings():  # schedule owners are a beta parameter; it would warn on every load
    warnings.simplefilter("ignore", dg.BetaWarning)
    knn_shadow_bars_schedule = dg.schedule(
        job=knn_shadow_bars_job, cron_schedule="*/15 * * * *", execution_timezone="UTC",
        name="knn_shadow_bars_every_15_minutes", tags=flow_tags(FLOW, "tick"), owners=OWNERS,
        description="Every 15 minutes, refreshes today's (UTC) minute bars from the stream's day file; the "
                    "00:00 tick completes the day before; skips while the FX market is closed.",
        metadata={"partitions": "one per UTC day (knn_shadow/minute_bars), today's included while it runs",
                  "requests": "the UTC day of the minute just ended (the 00:00 tick requests yesterday)",
                  "run_key": f"{FLOW}:minute_bars:<tick time> (each tick one refresh)",
                  "first_partition": KNN_PARTITIONS_START},
    )(_refresh)
