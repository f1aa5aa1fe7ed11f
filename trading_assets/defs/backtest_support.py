"""What every flow's backtest asset shares, so each one is a few lines.

A backtest asset is: a config (`BacktestRunConfig`: the New York session dates, the
starting cash and the costs, plus the flow's own parameters), bars fetched from the
`market_data` resource with the warm-up the strategy needs (`fetch_bars`, the one
warm-up rule), the strategy's `backtest_signals` simulated by `core.backtest.run_backtest`,
and the same output for every flow (`backtest_output`): the trades as the value, and
metadata a person can read (a stats table with notes, a labelled equity chart in New York
time, the last trades as a table). Not partitioned: a backtest is one run over a range.
"""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from trading_assets.core import calendar
from trading_assets.core.backtest import (
    MIN_ANNUALISED_DAYS,
    BacktestResult,
    CashAndCosts,
    annualised_warning,
    config_dict,
    stats_markdown,
)
from trading_assets.defs.conventions import OWNERS, flow_tags
from trading_assets.defs.reports import frame_markdown
from trading_assets.resources.base import MarketDataResource

CURRENCY = "USD"  # every flow trades US-listed symbols; the backtester does no FX
PREVIEW_ROWS = 20
TRADE_COLUMNS = ["symbol", "direction", "qty", "entry_time", "entry_price", "exit_time",
                 "exit_price", "commission", "pnl", "exit_reason", "bars_held"]

# What each column of the trades means, for the UI (the preview table and the value's schema).
COLUMN_NOTES = {
    "symbol": "the symbol traded",
    "direction": "long or short",
    "qty": "shares",
    "entry_time": "the bar the trade entered on (its start); the fill is at that bar's close",
    "entry_price": f"entry fill, {CURRENCY}, slippage included",
    "exit_time": "the bar it left on (for a trade still open: the last bar)",
    "exit_price": f"exit fill, {CURRENCY} (for a trade still open: the last close)",
    "commission": f"{CURRENCY}, entry and exit",
    "pnl": f"profit or loss after costs, {CURRENCY}",
    "exit_reason": "signal, take_profit, stop_loss, time (holding period) or open (still held)",
    "bars_held": "bars from entry to exit",
    "model_id": "the model whose forecast opened the trade",
    "predicted_return": "the forecast return that opened it",
}
_MONEY_COLUMNS = {"entry_price", "exit_price", "commission", "pnl"}
_TIME_COLUMNS = {"entry_time", "exit_time"}


class BacktestRunConfig(dg.Config):
    """The part of every backtest's config that is the same for all flows."""

    start: str = Field(description="first New York session date, YYYY-MM-DD")
    end: str = Field(description="last New York session date (included), YYYY-MM-DD")
    init_cash: float = Field(default=100_000.0, description=f"starting cash, {CURRENCY}")
    slippage_bps: float = Field(default=0.0, description="paid on every market fill, in basis points")
    commission_bps: float = Field(default=0.0, description="commission, basis points of each fill's value")
    commission_per_share: float = Field(default=0.0, description=f"commission, {CURRENCY} per share")

    def costs(self) -> CashAndCosts:
        return CashAndCosts(init_cash=self.init_cash, slippage_bps=self.slippage_bps,
                            commission_bps=self.commission_bps,
                            commission_per_share=self.commission_per_share)


def backtest_asset(flow: str, *, description: str) -> Callable[[Callable[..., Any]], dg.AssetsDefinition]:
    """`@dg.asset` for a flow's backtest: key [flow, "backtest"], the flow's group, its
    tags and owners (code references are added for every asset in `definitions.py`)."""

    def decorate(fn: Callable[..., Any]) -> dg.AssetsDefinition:
        return dg.asset(
            key=[flow, "backtest"],
            group_name=flow,
            kinds={"pandas"},
            tags=flow_tags(flow, "backtest"),
            owners=OWNERS,
            description=description,
        )(fn)

    return decorate


@contextmanager
def bad_params_fail(flow: str) -> Iterator[None]:
    """Parameters a strategy refuses (its ValueError) fail the run with the reason."""
    try:
        yield
    except ValueError as exc:
        raise dg.Failure(f"bad {flow} backtest parameters: {exc}") from exc


# ----------------------------------------------------------------------------- range and bars


def session_range(start: str, end: str) -> tuple[pd.Timestamp, pd.Timestamp]:
    """UTC bounds of the sessions from `start` to `end` (New York dates, inclusive)."""
    try:
        first, last = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError as exc:
        raise dg.Failure(f"backtest dates must look like 2025-02-03: {exc}") from exc
    if last < first:
        raise dg.Failure(f"backtest end {end} is before its start {start}")
    sessions = calendar.sessions_between(first, last)
    if not sessions:
        raise dg.Failure(f"no NYSE sessions between {start} and {end}")
    open_, _ = calendar.session_open_close(sessions[0])
    _, close = calendar.session_open_close(sessions[-1])
    return open_.tz_convert("UTC"), close.tz_convert("UTC")


def warmup_start(start: pd.Timestamp, sessions: int) -> pd.Timestamp:
    """Open (UTC) of the session `sessions` sessions before the one opening at `start`:
    where a backtest starts fetching so indicators and models are warm at `start`
    (0: `start` itself)."""
    if sessions < 0:
        raise dg.Failure(f"warm-up sessions must be >= 0, got {sessions}")
    day = start.tz_convert(calendar.TZ).date()
    try:
        first = calendar.previous_sessions(day, sessions + 1)[0]
    except calendar.MarketClosedError as exc:
        raise dg.Failure(f"cannot warm up {sessions} sessions before {day}: {exc}") from exc
    return calendar.session_open_close(first)[0].tz_convert("UTC")


@dataclass(frozen=True)
class BacktestBars:
    """The bars of a backtest: warm-up from `fetch_from`, trading over [start, end)."""

    bars: pd.DataFrame
    start: pd.Timestamp
    end: pd.Timestamp
    fetch_from: pd.Timestamp


def fetch_bars(
    context: dg.AssetExecutionContext,
    market_data: MarketDataResource,
    config: BacktestRunConfig,
    symbols: Sequence[str],
    interval: str,
    warmup_sessions: int = 0,
) -> BacktestBars:
    """The configured sessions' bars plus `warmup_sessions` sessions before them; a run
    with no bars in the range fails saying so."""
    start, end = session_range(config.start, config.end)
    fetch_from = warmup_start(start, warmup_sessions)
    bars = market_data.get().get_bars(list(symbols), fetch_from, end, interval)
    if bars.empty or not ((bars.index >= start) & (bars.index < end)).any():
        raise dg.Failure(f"no {interval} bars for {list(symbols)} between {config.start} and {config.end}")
    context.log.info(
        f"{len(bars)} {interval} bars of {len(symbols)} symbols from "
        f"{_ny(fetch_from)} ({warmup_sessions} warm-up sessions) to {_ny(end)}")
    return BacktestBars(bars, start, end, fetch_from)


# ----------------------------------------------------------------------------- output


def backtest_output(
    result: BacktestResult,
    config: BacktestRunConfig,
    *,
    flow: str,
    t0: float,
    columns: Sequence[str] = TRADE_COLUMNS,
    **extra: Any,
) -> dg.Output[pd.DataFrame]:
    """Trades as the value; as metadata the stats (money to the cent, notes, a warning on
    annualised figures from a short window), the equity chart, the last trades as a table
    and the headline numbers as plottable values. `extra` is the flow's own metadata."""
    trades = result.trades.loc[:, list(columns)]
    stats = result.stats
    closed, still_open = int(stats["trade_count"]), int(stats["open_positions_at_end"])
    warning = annualised_warning(pd.DatetimeIndex(result.equity.index))
    title = f"{flow} backtest, {config.start} to {config.end}"
    metadata: dict[str, Any] = {
        "stats": dg.MetadataValue.md(stats_markdown(stats, currency=CURRENCY,
                                                    notes=_stat_notes(closed, still_open, warning))),
    }
    if warning:
        metadata["annualised_warning"] = dg.MetadataValue.text(warning)
    metadata.update({
        "equity_curve": dg.MetadataValue.md(
            equity_chart_markdown(result.equity, title=title, init_cash=result.config.init_cash)),
        "trades_shown": dg.MetadataValue.text(trades_shown(len(trades), still_open)),
        "trades": trades_table(trades),
        "dagster/row_count": len(trades),
        "dagster/column_schema": _value_schema(trades),
        "currency": CURRENCY,
        "start_value": dg.MetadataValue.float(round(stats["start_value"], 2)),
        "end_value": dg.MetadataValue.float(round(stats["end_value"], 2)),
        "total_return": dg.MetadataValue.float(round(stats["total_return"], 6)),
        "trade_count": closed,
        "open_trade_count": still_open,
        "bars": len(result.equity),
        "config": dg.MetadataValue.json(config_dict(result.config)),
        "work_ms": dg.MetadataValue.float(round((time.perf_counter() - t0) * 1000, 1)),
        **extra,
    })
    return dg.Output(trades, metadata=metadata)


def trades_shown(rows: int, still_open: int, shown: int = PREVIEW_ROWS) -> str:
    """What the trades table shows, e.g. "last 20 of 52 trades (51 closed, 1 still open)"."""
    if rows == 0:
        return "no trades"
    part = f"all {rows}" if rows <= shown else f"last {shown} of {rows}"
    return f"{part} trades ({rows - still_open} closed, {still_open} still open)"


def trades_table(trades: pd.DataFrame, rows: int = PREVIEW_ROWS) -> dg.TableMetadataValue:
    """The last `rows` trades as a native table: long/short, New York times, money in cents."""
    shown = trades.tail(rows)
    schema = dg.TableSchema(columns=[
        dg.TableColumn(str(c), _preview_type(c, shown[c]), description=_note(c, local=True))
        for c in shown.columns])
    records = [dg.TableRecord({str(c): _cell(c, v) for c, v in row.items()})
               for _, row in shown.iterrows()]
    return dg.MetadataValue.table(records=records, schema=schema)


def preview_markdown(frame: pd.DataFrame, what: str, rows: int = PREVIEW_ROWS,
                     time_columns: Sequence[str] = ()) -> str:
    """The last `rows` of a frame as a markdown table headed "last 20 of N <what>", with
    `time_columns` in New York time (for tables the UI must show as markdown)."""
    if frame.empty:
        return f"no {what}"
    shown = frame.tail(rows).copy()
    for col in time_columns:
        shown[col] = [_ny(t) for t in shown[col]]
    part = f"all {len(frame)}" if len(frame) <= rows else f"last {rows} of {len(frame)}"
    return f"{part} {what} (times in New York)\n\n" + frame_markdown(shown, max_rows=rows)


def equity_chart_markdown(equity: pd.Series, *, title: str, init_cash: float,
                          currency: str = CURRENCY) -> str:
    """The equity curve as a PNG inside markdown (Dagster has no image type): bars in
    order along the x axis labelled in New York time, with nights and weekends left out
    (they would flatten the trading hours to slivers), a line at each session break, equity
    in `currency` on the y axis and the starting cash as a dashed line."""
    from matplotlib import ticker
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6), dpi=100)  # no pyplot: no global state between runs
    ax = fig.subplots()
    local = pd.DatetimeIndex(equity.index).tz_convert(calendar.TZ)
    x = np.arange(len(local))
    ax.plot(x, equity.to_numpy(dtype="float64"), lw=1.4, color="tab:blue",
            label="equity at each bar's close")
    ax.axhline(init_cash, color="grey", ls="--", lw=1,
               label=f"starting cash {init_cash:,.0f} {currency}")
    ticks, labels, breaks = _session_axis(local)
    for at in breaks:
        ax.axvline(at - 0.5, color="grey", lw=0.6, alpha=0.35)
    ax.set_xticks(ticks, labels, fontsize=8)
    ax.yaxis.set_major_formatter(ticker.StrMethodFormatter("{x:,.0f}"))
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(f"New York time ({calendar.TZ}), trading hours only")
    ax.set_ylabel(f"equity ({currency})")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    encoded = base64.b64encode(buf.getvalue()).decode()
    return f"![{title}](data:image/png;base64,{encoded})"


def _session_axis(local: pd.DatetimeIndex, most: int = 10) -> tuple[list[int], list[str], list[int]]:
    """Tick positions and labels for bars in order (at most `most`), and the first bar of
    every session after the first: days on a long run, hours on a run of one or two days."""
    if len(local) == 0:
        return [], [], []
    days = np.asarray(local.date)
    firsts = np.flatnonzero(np.r_[True, days[1:] != days[:-1]])
    if len(firsts) > 2:
        chosen = firsts[:: -(-len(firsts) // most)]
        return [int(i) for i in chosen], [local[i].strftime("%b %d") for i in chosen], [int(i) for i in firsts[1:]]
    hours = np.asarray(local.floor("h"))
    starts = np.flatnonzero(np.r_[True, hours[1:] != hours[:-1]])
    gap = len(local) / (most + 1)  # labels closer than this would overlap
    chosen: list[int] = []
    for i in np.union1d(starts[:: -(-len(starts) // most)], firsts):  # every session's open labelled
        if chosen and i - chosen[-1] < gap:
            if i not in firsts:
                continue
            chosen.pop()
        chosen.append(int(i))
    labels = [local[i].strftime("%b %d %H:%M" if i in firsts else "%H:%M") for i in chosen]
    return chosen, labels, [int(i) for i in firsts[1:]]


def _stat_notes(closed: int, still_open: int, warning: str | None) -> dict[str, str]:
    caution = (f" **Warning: from under {MIN_ANNUALISED_DAYS:g} days of bars, not a yearly figure.**"
               if warning else "")
    return {
        "start_value": "the starting cash (init_cash)",
        "end_value": "equity after the last bar, open trades marked at its close",
        "total_return": "end_value / start_value - 1",
        "cagr": "total return as a yearly rate" + caution,
        "sharpe": "per-bar returns, annualised, zero risk-free rate" + caution,
        "max_drawdown": "largest fall of equity from a peak",
        "win_rate": "share of closed trades with a profit",
        "exposure": "share of bars with a position open",
        "trade_count": f"closed trades; {still_open} more still open "
                       f"({closed + still_open} rows in trades)",
        "open_positions_at_end": "open trades, marked at the last close, not in win_rate",
        "total_commission": "all commissions (open trades: entry only)",
    }


def _ny(moment: Any) -> str:
    ts = pd.Timestamp(moment)
    return "" if pd.isna(ts) else ts.tz_convert(calendar.TZ).strftime("%Y-%m-%d %H:%M %Z")


def _note(column: Any, local: bool = False) -> str:
    note = COLUMN_NOTES.get(str(column), "")
    if str(column) in _TIME_COLUMNS:
        return f"{note}, {'New York time' if local else 'UTC'}"
    if str(column) == "direction" and not local:
        return "1 long, -1 short"
    return note


def _preview_type(column: Any, values: pd.Series) -> str:
    if str(column) in _TIME_COLUMNS or str(column) == "direction":
        return "string"
    return _dtype_name(values)


def _dtype_name(values: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(values):
        return "bool"
    if pd.api.types.is_integer_dtype(values):
        return "int"
    if pd.api.types.is_float_dtype(values):
        return "float"
    if pd.api.types.is_datetime64_any_dtype(values):
        return "timestamp"
    return "string"


def _cell(column: Any, value: Any) -> str | int | float | bool | None:
    name = str(column)
    if name in _TIME_COLUMNS:
        return _ny(value)
    if name == "direction":
        return "long" if value > 0 else "short"
    if value is None or (isinstance(value, float | np.floating) and not np.isfinite(value)):
        return None
    if isinstance(value, np.integer | int) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, np.floating | float):
        if name in _MONEY_COLUMNS:
            return round(float(value), 2)
        if name == "qty":
            return int(value) if float(value).is_integer() else round(float(value), 4)
        return round(float(value), 6)
    return str(value)


def _value_schema(trades: pd.DataFrame) -> dg.TableSchema:
    """The stored trades' columns and types (Dagster's standard column schema)."""
    return dg.TableSchema(columns=[
        dg.TableColumn(str(c), _dtype_name(trades[c]), description=_note(c)) for c in trades.columns])
