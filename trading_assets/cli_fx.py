"""`python -m trading_assets run --flow fib_retracement`: which hourly FX ticks to run, and
the table row each tick prints (signals, deals with their brackets, brackets that fired).

A `--day` is an FX trade date: its 24 hourly bars run from 17:00 New York the evening
before to 16:00 (how the FX day rolls over, and IG's daily bars). No `--day`: the latest
trade date whose bars have all closed. `--tick` names single bars, e.g. 2025-11-18-10:00.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pandas as pd

from trading_assets.core import fx_hours
from trading_assets.core.calendar import MarketClosedError
from trading_assets.core.execution import parse_bracket_leg_id

if TYPE_CHECKING:
    import dagster as dg

FX_TICK_EXAMPLE = "2025-11-18-10:00"
NODE = "fib_retracement__{}"


class FxUsageError(ValueError):
    """A --day or --tick that names no FX bar the flow can run (the CLI exits 2)."""


def _keys_module():
    from trading_assets.defs.fib_retracement import partitions

    return partitions


def _previous_open_day(day: date) -> date:
    earlier = day - timedelta(days=1)
    while not fx_hours.bar_starts(earlier):
        earlier -= timedelta(days=1)
    return earlier


def _check_fx_tick(key: str) -> date:
    from trading_assets.defs.partitions import PARTITION_FMT

    parts = _keys_module()
    what = f"--tick {key}"
    try:
        moment = datetime.strptime(key, PARTITION_FMT)
    except ValueError:
        raise FxUsageError(f"{what}: not a tick; write the hourly bar's start in New York time as "
                           f"YYYY-MM-DD-HH:MM, e.g. --tick {FX_TICK_EXAMPLE}") from None
    try:
        fx_hours.check_bar_start(moment)
    except MarketClosedError as exc:
        raise FxUsageError(f"{what}: {exc}; pick an hour of the FX week (Sunday 17:00 to Friday 16:00 "
                           "New York)") from None
    if not parts.fx_bars_1h.has_partition_key(key):
        if key < parts.FX_PARTITIONS_START:
            raise FxUsageError(f"{what}: before the flow's first tick {parts.FX_PARTITIONS_START}; pick a later bar")
        latest = parts.fx_bars_1h.get_last_partition_key()
        raise FxUsageError(f"{what}: this bar has not closed yet; the latest closed bar is {latest}")
    return fx_hours.trade_date_of(moment)


def plan_fx_ticks(day: date | None, ticks: list[str] | None, today: date | None = None
                  ) -> tuple[list[date], list[str]]:
    """The trade dates and partition keys to run, validated (FxUsageError otherwise)."""
    parts = _keys_module()
    if ticks:
        day_of = {k: _check_fx_tick(k) for k in dict.fromkeys(ticks)}
        other = next((k for k, d in day_of.items() if day is not None and d != day), None)
        if other is not None:
            raise FxUsageError(f"--tick {other} is not in FX trade date {day} (17:00 New York the evening before "
                               "to 16:00); drop --day or pick ticks of that day")
        return sorted(set(day_of.values())), list(day_of)
    latest = parts.fx_bars_1h.get_last_partition_key()
    if day is None:
        day = today or pd.Timestamp.now(tz=fx_hours.TZ).date()
        while not (keys := parts.trade_date_keys(day)) or latest is None or keys[-1] > latest:
            day -= timedelta(days=1)
    keys = parts.trade_date_keys(day)
    if not keys:
        reason = fx_hours.closed_reason(datetime.combine(day, datetime.min.time()).replace(hour=12))
        raise FxUsageError(f"--day {day}: {reason or 'no FX bars'}; the FX market is closed, pick a weekday, e.g. "
                           f"--day {_previous_open_day(day)}")
    if keys[0] < parts.FX_PARTITIONS_START:
        raise FxUsageError(f"--day {day}: before the flow's first tick {parts.FX_PARTITIONS_START}; pick a later day")
    if latest is None or keys[-1] > latest:
        raise FxUsageError(f"--day {day}: this FX day has not closed yet (it ends 17:00 New York); pick an earlier "
                           "day, or --tick for the bars that have closed")
    return [day], keys


# ----------------------------------------------------------------------------- the table

HEADER = f"{'tick (New York)':<18} {'market':<8} {'signal':<6} {'deals':<62} {'equity':>12}"


def market(epic: str) -> str:
    """EURUSD for CS.D.EURUSD.MINI.IP: the part of an IG epic people say."""
    parts = epic.split(".")
    return parts[2] if len(parts) > 2 else epic


def _events(orders: pd.DataFrame, fills: pd.DataFrame) -> dict[str, list[str]]:
    """Per epic, what this tick did: entries with their brackets, exits, brackets that fired."""
    out: dict[str, list[str]] = {}
    legs = {r.leg: r for r in orders.itertuples() if ":" in r.leg}
    for r in orders.itertuples():
        if ":" in r.leg:
            continue
        price = f" @{r.filled_avg_price:.5g}" if r.filled_avg_price == r.filled_avg_price else ""
        text = f"{r.side} {r.qty:g}{price} {r.leg} {r.status}"
        tp, sl = legs.get(f"{r.leg}:take_profit"), legs.get(f"{r.leg}:stop_loss")
        if tp is not None and sl is not None:
            text += f", tp {tp.reference_price:.5g} sl {sl.reference_price:.5g}"
        if r.status == "rejected":
            text += f" ({r.reason or 'no reason given'})"
        out.setdefault(r.symbol, []).append(text)
    for f in fills.itertuples():
        leg = parse_bracket_leg_id(str(f.client_order_id))
        if leg is not None:
            kind = leg[1].replace("_", "-")
            out.setdefault(f.symbol, []).append(f"{kind} hit: {f.side} {f.qty:g} @{f.price:.5g}")
    return out


def rows(key: str, result: dg.ExecuteInProcessResult, metadata: Any) -> list[str]:
    """The lines one successful tick prints: a line per market that did something (else
    one line saying why not), the equity on the first."""
    signals = result.output_for_node(NODE.format("signals"))
    orders = result.output_for_node(NODE.format("orders"))
    fills = result.output_for_node(NODE.format("transactions"))
    equity = metadata(result, NODE.format("equity"), "equity")
    shown = f"{equity:>12,.2f}" if equity == equity else f"{'-':>12}"  # NaN: an old tick, never recorded
    events = _events(orders, fills)
    active = [e for e in signals.index if events.get(e) or signals.loc[e, "signal"] != "none"]
    if not active:
        gated = metadata(result, NODE.format("orders"), "no_orders_because") or ""
        if gated.startswith(("older", "closed too long")):
            why = gated
        elif len(signals) == 1:
            why = str(signals["reason"].iloc[0]).split(": ", 1)[-1]  # "<pattern>: <why>"
        else:
            why = f"no setup in {len(signals)} markets"
        name = market(str(signals.index[0])) if len(signals) == 1 else "-"
        return [f"{key:<18} {name:<8} {'none':<6} {why[:62]:<62} {shown}"]
    lines = []
    for n, epic in enumerate(active):
        deals = "; ".join(events.get(epic, [])) or "-"
        signal = str(signals.loc[epic, "signal"])
        lines.append(f"{key if n == 0 else '':<18} {market(str(epic)):<8} {signal:<6} {deals[:62]:<62} "
                     f"{shown if n == 0 else '':>12}")
    return lines
