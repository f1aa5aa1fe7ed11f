"""The compiled simulation loop behind `core.backtest` (the rules are documented there).

Each symbol is its own sleeve of cash, so symbols never interact: the loop runs symbol by
symbol with the whole state in local scalars (registers), down each column of the
timestamp x symbol panels. Column-major (Fortran-ordered) panels make that a sequential
read; they are also what a bar frame sorted by (symbol, timestamp) reshapes into for free.
Arithmetic is written in the same order as the paper broker's
(`cash - (qty * fill + commission)`), which is what lets backtest and live agree to the cent.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# ----------------------------------------------------------------- trade record columns
TR_SYMBOL = 0
TR_DIRECTION = 1
TR_QTY = 2
TR_ENTRY_BAR = 3
TR_ENTRY_REF = 4
TR_ENTRY_FILL = 5
TR_EXIT_BAR = 6
TR_EXIT_REF = 7
TR_EXIT_FILL = 8
TR_COMMISSION = 9
TR_SLIPPAGE = 10
TR_GROSS_PNL = 11
TR_PNL = 12
TR_REASON = 13
TR_BARS_HELD = 14
TRADE_FIELDS = (
    "symbol", "direction", "qty", "entry_bar", "entry_ref", "entry_price", "exit_bar",
    "exit_ref", "exit_price", "commission", "slippage", "gross_pnl", "pnl", "exit_reason",
    "bars_held",
)
N_TRADE_FIELDS = 15

# ----------------------------------------------------------------- exit reasons
REASON_SIGNAL = 0
REASON_TAKE_PROFIT = 1
REASON_STOP_LOSS = 2
REASON_TIME = 3
REASON_OPEN = 4  # still open at the last bar, marked at its last close
REASONS = ("signal", "take_profit", "stop_loss", "time", "open")


@njit(cache=True)
def _grow(trades: np.ndarray) -> np.ndarray:
    bigger = np.empty((trades.shape[0] * 2, N_TRADE_FIELDS))
    bigger[: trades.shape[0]] = trades
    return bigger


@njit(cache=True)
def _record(out, nt, s, direction, qty, entry_bar, entry_ref, entry_fill, commission,
            t, exit_ref, exit_fill, reason, held):
    rec = out[nt]
    rec[TR_SYMBOL] = s
    rec[TR_DIRECTION] = direction
    rec[TR_QTY] = qty
    rec[TR_ENTRY_BAR] = entry_bar
    rec[TR_ENTRY_REF] = entry_ref
    rec[TR_ENTRY_FILL] = entry_fill
    rec[TR_EXIT_BAR] = t
    rec[TR_EXIT_REF] = exit_ref
    rec[TR_EXIT_FILL] = exit_fill
    rec[TR_COMMISSION] = commission
    rec[TR_SLIPPAGE] = qty * abs(entry_fill - entry_ref) + qty * abs(exit_fill - exit_ref)
    rec[TR_GROSS_PNL] = direction * qty * (exit_ref - entry_ref)
    rec[TR_PNL] = direction * qty * (exit_fill - entry_fill) - commission
    rec[TR_REASON] = reason
    rec[TR_BARS_HELD] = held


@njit(cache=True)
def _close_trade(out, nt, s, t, direction, qty, entry_bar, entry_ref, entry_fill,
                 entry_comm, held, ref, slipped, reason, cash, slip, comm_share, comm_rate):
    """Exit the whole position at `ref` (moved by slippage if `slipped`); new cash."""
    fill = ref
    if slipped:
        fill = ref * (1 - slip) if direction > 0 else ref * (1 + slip)
    commission = comm_share * qty + qty * fill * comm_rate
    # same operation order as the paper broker: sells add proceeds, buys subtract cost
    cash = cash + qty * fill - commission if direction > 0 else cash - (qty * fill + commission)
    _record(out, nt, s, direction, qty, entry_bar, entry_ref, entry_fill,
            entry_comm + commission, t, ref, fill, reason, held)
    return nt + 1, cash


@njit(cache=True)
def _open_trade(cash, ref, direction, size, size_is_shares, whole_shares, slip, comm_share,
                comm_rate, tp, sl, tp_price, sl_price):
    """Size and fill an entry: (qty, fill, commission, cash, tp level, sl level); qty 0
    means no trade. A finite `tp_price`/`sl_price` is the level itself; otherwise a
    positive `tp`/`sl` is a fraction of the fill; otherwise the level can never be hit."""
    qty = size if size_is_shares else size * cash / ref
    if whole_shares:
        qty = np.floor(qty)
    if not qty > 0 or not np.isfinite(qty):
        return 0.0, 0.0, 0.0, cash, 0.0, 0.0
    fill = ref * (1 + slip) if direction > 0 else ref * (1 - slip)
    commission = comm_share * qty + qty * fill * comm_rate
    if direction > 0:
        cash = cash - (qty * fill + commission)
        tp_level = fill * (1 + tp) if tp > 0 else np.inf
        sl_level = fill * (1 - sl) if sl > 0 else -np.inf
    else:
        cash = cash + qty * fill - commission
        tp_level = fill * (1 - tp) if tp > 0 else -np.inf
        sl_level = fill * (1 + sl) if sl > 0 else np.inf
    if np.isfinite(tp_price):
        tp_level = tp_price
    if np.isfinite(sl_price):
        sl_level = sl_price
    return qty, fill, commission, cash, tp_level, sl_level


@njit(cache=True)
def _stop_hit(direction, o, h, lo, tp_level, sl_level, use_range, use_tp, use_sl):
    """(reason, price) of a take-profit/stop-loss exit, reason -1 if none. An open beyond
    a level fills at the open; if the bar's range reaches both levels the stop wins."""
    if direction > 0:
        if use_sl and o <= sl_level:
            return REASON_STOP_LOSS, o
        if use_tp and o >= tp_level:
            return REASON_TAKE_PROFIT, o
        if use_range and use_sl and lo <= sl_level:
            return REASON_STOP_LOSS, sl_level
        if use_range and use_tp and h >= tp_level:
            return REASON_TAKE_PROFIT, tp_level
    else:
        if use_sl and o >= sl_level:
            return REASON_STOP_LOSS, o
        if use_tp and o <= tp_level:
            return REASON_TAKE_PROFIT, o
        if use_range and use_sl and h >= sl_level:
            return REASON_STOP_LOSS, sl_level
        if use_range and use_tp and lo <= tp_level:
            return REASON_TAKE_PROFIT, tp_level
    return -1, 0.0


@njit(cache=True)
def _simulate_symbol(s, open_, high, low, close, signal, tp_prices, sl_prices, has_levels,
                     equity, open_count, out, nt, fill_at_close, cash, size, size_is_shares,
                     whole_shares, slip, comm_share, comm_rate, tp, sl, max_bars, allow_short,
                     block_after_exit):
    """One symbol's sleeve down its column; its trades go to `out` from row `nt` on
    (needs room for one per bar: every trade has its own entry bar). Returns the new
    trade count."""
    n_bars = close.shape[0]
    use_tp = tp > 0 or has_levels
    use_sl = sl > 0 or has_levels
    use_stops = use_tp or use_sl
    direction = 0.0
    qty = 0.0
    entry_bar = 0
    entry_ref = 0.0
    entry_fill = 0.0
    entry_comm = 0.0
    tp_level = 0.0
    sl_level = 0.0
    held = 0
    block = 0.0  # direction a forced exit blocks until the signal leaves it
    pending = np.nan  # next_open: the last bar's signal, filled at this bar's open
    pending_tp = np.nan  # ... and its take-profit / stop-loss prices
    pending_sl = np.nan
    last = np.nan
    for t in range(n_bars):
        c = close[t, s]
        o = open_[t, s]
        h = high[t, s]
        lo = low[t, s]
        if np.isfinite(c) and np.isfinite(o) and np.isfinite(h) and np.isfinite(lo):
            if fill_at_close and direction != 0:
                held += 1
            # stops before the fill: for next-open fills only a gap at the open can hit
            # before the open's fill; for close fills the whole bar comes first
            if use_stops and direction != 0:
                reason, px = _stop_hit(direction, o, h, lo, tp_level, sl_level, fill_at_close,
                                       use_tp, use_sl)
                if reason >= 0:
                    # a stop is a market order (pays slippage); a take-profit a limit order
                    nt, cash = _close_trade(
                        out, nt, s, t, direction, qty, entry_bar, entry_ref, entry_fill,
                        entry_comm, held, px, reason == REASON_STOP_LOSS, reason, cash,
                        slip, comm_share, comm_rate)
                    if block_after_exit:
                        block = direction
                    direction = 0.0
            # the fill moment: holding-period exit, then the signal
            if fill_at_close:
                ref = c
                g = signal[t, s]
                tp_price = tp_prices[t, s] if has_levels else np.nan
                sl_price = sl_prices[t, s] if has_levels else np.nan
            else:
                ref = o
                g, tp_price, sl_price = pending, pending_tp, pending_sl
                pending = signal[t, s]
                if has_levels:
                    pending_tp, pending_sl = tp_prices[t, s], sl_prices[t, s]
            if direction != 0 and max_bars > 0 and held >= max_bars:
                nt, cash = _close_trade(
                    out, nt, s, t, direction, qty, entry_bar, entry_ref, entry_fill,
                    entry_comm, held, ref, True, REASON_TIME, cash, slip, comm_share,
                    comm_rate)
                if block_after_exit:
                    block = direction
                direction = 0.0
            if g == g:  # not NaN: the signal has an opinion
                g = 1.0 if g > 0 else (-1.0 if g < 0 else 0.0)
                if g < 0 and not allow_short:
                    g = 0.0
                if g != block:
                    block = 0.0
                if block == 0 and g != direction:
                    if direction != 0:
                        nt, cash = _close_trade(
                            out, nt, s, t, direction, qty, entry_bar, entry_ref, entry_fill,
                            entry_comm, held, ref, True, REASON_SIGNAL, cash, slip,
                            comm_share, comm_rate)
                        direction = 0.0
                    if g != 0:
                        q, f, cm, cash2, tpl, sll = _open_trade(
                            cash, ref, g, size, size_is_shares, whole_shares, slip,
                            comm_share, comm_rate, tp, sl, tp_price, sl_price)
                        if q > 0:
                            direction, qty, entry_fill, entry_comm = g, q, f, cm
                            cash, tp_level, sl_level = cash2, tpl, sll
                            entry_bar, entry_ref, held = t, ref, 0
            if not fill_at_close:
                # after an open fill the rest of the bar can reach the levels
                if use_stops and direction != 0:
                    reason, px = _stop_hit(direction, o, h, lo, tp_level, sl_level, True,
                                           use_tp, use_sl)
                    if reason >= 0:
                        nt, cash = _close_trade(
                            out, nt, s, t, direction, qty, entry_bar, entry_ref, entry_fill,
                            entry_comm, held, px, reason == REASON_STOP_LOSS, reason, cash,
                            slip, comm_share, comm_rate)
                        if block_after_exit:
                            block = direction
                        direction = 0.0
                if direction != 0:
                    held += 1
            last = c
        if direction != 0:
            equity[t] += cash + direction * qty * last
            open_count[t] += 1
        else:
            equity[t] += cash
    if direction != 0:  # still open: a record marked at the last close, no exit costs
        _record(out, nt, s, direction, qty, entry_bar, entry_ref, entry_fill, entry_comm,
                n_bars - 1, last, last, REASON_OPEN, held)
        nt += 1
    return nt


@njit(cache=True, nogil=True)
def simulate(open_, high, low, close, signal, tp_prices, sl_prices, has_levels,
             fill_at_close, cash_per_symbol, size, size_is_shares, whole_shares, slip,
             comm_share, comm_rate, tp, sl, max_bars, allow_short, block_after_exit):
    """Run the whole panel. Returns (trades[n, N_TRADE_FIELDS], equity[T], open_count[T]).

    `tp`/`sl` are fractions of the entry fill (<= 0 or NaN: off); `tp_prices`/`sl_prices`
    (read only if `has_levels`) give absolute levels per signal bar, NaN: use the
    fraction; `max_bars` <= 0: off; `signal` > 0 long, < 0 short, 0 flat, NaN no opinion.
    """
    n_bars, n_sym = close.shape
    equity = np.zeros(n_bars)
    open_count = np.zeros(n_bars, dtype=np.int64)
    trades = np.empty((max(64, n_sym * 4, n_bars + 1), N_TRADE_FIELDS))
    nt = 0
    for s in range(n_sym):
        while trades.shape[0] - nt < n_bars + 1:  # room for this symbol's worst case
            trades = _grow(trades)
        nt = _simulate_symbol(s, open_, high, low, close, signal, tp_prices, sl_prices,
                              has_levels, equity, open_count, trades, nt, fill_at_close,
                              cash_per_symbol, size, size_is_shares, whole_shares, slip,
                              comm_share, comm_rate, tp, sl, max_bars, allow_short,
                              block_after_exit)
    return trades[:nt], equity, open_count


@njit(cache=True)
def crossover(fast, slow, out):
    """out = sign(fast - slow), NaN where either is NaN (in place, any layout)."""
    n_rows, n_cols = fast.shape
    for j in range(n_cols):
        for i in range(n_rows):
            d = fast[i, j] - slow[i, j]
            out[i, j] = 1.0 if d > 0 else (-1.0 if d < 0 else (0.0 if d == 0 else np.nan))
    return out
