"""The compiled simulation loop behind `core.backtest` (the rules are documented there).

One pass over the panel, bars outer and symbols inner, so the C-ordered timestamp x symbol
arrays are read sequentially and the per-symbol state stays in cache. Each symbol is its
own sleeve of cash, so symbols never interact and the order of the inner loop cannot
change a result. Arithmetic is written in the same order as the paper broker's
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

# ----------------------------------------------------------------- per-symbol state columns
_DIR = 0  # -1 short, 0 flat, +1 long
_QTY = 1  # unsigned
_CASH = 2
_ENTRY_BAR = 3
_ENTRY_REF = 4
_ENTRY_FILL = 5
_ENTRY_COMM = 6
_HELD = 7  # completed bars since the entry fill
_BLOCK = 8  # direction a forced exit blocks until the signal leaves it
_PENDING = 9  # next_open mode: last bar's signal, to fill at this bar's open
_LAST = 10  # last valid close
_TP = 11
_SL = 12
_N_STATE = 13


@njit(cache=True)
def _grow(trades: np.ndarray) -> np.ndarray:
    bigger = np.empty((trades.shape[0] * 2, N_TRADE_FIELDS))
    bigger[: trades.shape[0]] = trades
    return bigger


@njit(cache=True)
def _exit(st, s, t, ref, slipped, reason, slip, comm_share, comm_rate, trades, nt):
    direction = st[s, _DIR]
    qty = st[s, _QTY]
    fill = ref
    if slipped:
        fill = ref * (1 - slip) if direction > 0 else ref * (1 + slip)
    commission = comm_share * qty + qty * fill * comm_rate
    if direction > 0:
        st[s, _CASH] = st[s, _CASH] + qty * fill - commission
    else:
        st[s, _CASH] = st[s, _CASH] - (qty * fill + commission)
    if nt == trades.shape[0]:
        trades = _grow(trades)
    entry_fill = st[s, _ENTRY_FILL]
    entry_ref = st[s, _ENTRY_REF]
    total_comm = st[s, _ENTRY_COMM] + commission
    rec = trades[nt]
    rec[TR_SYMBOL] = s
    rec[TR_DIRECTION] = direction
    rec[TR_QTY] = qty
    rec[TR_ENTRY_BAR] = st[s, _ENTRY_BAR]
    rec[TR_ENTRY_REF] = entry_ref
    rec[TR_ENTRY_FILL] = entry_fill
    rec[TR_EXIT_BAR] = t
    rec[TR_EXIT_REF] = ref
    rec[TR_EXIT_FILL] = fill
    rec[TR_COMMISSION] = total_comm
    rec[TR_SLIPPAGE] = qty * abs(entry_fill - entry_ref) + qty * abs(fill - ref)
    rec[TR_GROSS_PNL] = direction * qty * (ref - entry_ref)
    rec[TR_PNL] = direction * qty * (fill - entry_fill) - total_comm
    rec[TR_REASON] = reason
    rec[TR_BARS_HELD] = st[s, _HELD]
    st[s, _DIR] = 0.0
    st[s, _QTY] = 0.0
    return trades, nt + 1


@njit(cache=True)
def _enter(st, s, t, ref, direction, size, size_is_shares, whole_shares, slip, comm_share,
           comm_rate, tp, sl):
    qty = size if size_is_shares else size * st[s, _CASH] / ref
    if whole_shares:
        qty = np.floor(qty)
    if not qty > 0 or not np.isfinite(qty):
        return
    fill = ref * (1 + slip) if direction > 0 else ref * (1 - slip)
    commission = comm_share * qty + qty * fill * comm_rate
    if direction > 0:
        st[s, _CASH] = st[s, _CASH] - (qty * fill + commission)
        st[s, _TP] = fill * (1 + tp)
        st[s, _SL] = fill * (1 - sl)
    else:
        st[s, _CASH] = st[s, _CASH] + qty * fill - commission
        st[s, _TP] = fill * (1 - tp)
        st[s, _SL] = fill * (1 + sl)
    st[s, _DIR] = direction
    st[s, _QTY] = qty
    st[s, _ENTRY_BAR] = t
    st[s, _ENTRY_REF] = ref
    st[s, _ENTRY_FILL] = fill
    st[s, _ENTRY_COMM] = commission
    st[s, _HELD] = 0.0


@njit(cache=True)
def _stops(st, s, t, o, h, lo, use_range, use_tp, use_sl, slip, comm_share, comm_rate,
           trades, nt):
    """Take-profit / stop-loss for an open position: an open beyond a level fills at the
    open; otherwise, if the bar's range reaches both levels, the stop wins."""
    direction = st[s, _DIR]
    sl_level = st[s, _SL]
    tp_level = st[s, _TP]
    reason = -1
    ref = 0.0
    if direction > 0:
        if use_sl and o <= sl_level:
            reason, ref = REASON_STOP_LOSS, o
        elif use_tp and o >= tp_level:
            reason, ref = REASON_TAKE_PROFIT, o
        elif use_range and use_sl and lo <= sl_level:
            reason, ref = REASON_STOP_LOSS, sl_level
        elif use_range and use_tp and h >= tp_level:
            reason, ref = REASON_TAKE_PROFIT, tp_level
    else:
        if use_sl and o >= sl_level:
            reason, ref = REASON_STOP_LOSS, o
        elif use_tp and o <= tp_level:
            reason, ref = REASON_TAKE_PROFIT, o
        elif use_range and use_sl and h >= sl_level:
            reason, ref = REASON_STOP_LOSS, sl_level
        elif use_range and use_tp and lo <= tp_level:
            reason, ref = REASON_TAKE_PROFIT, tp_level
    if reason >= 0:
        # a stop is a market order (pays slippage); a take-profit is a limit order
        trades, nt = _exit(st, s, t, ref, reason == REASON_STOP_LOSS, reason, slip,
                           comm_share, comm_rate, trades, nt)
        st[s, _BLOCK] = direction
    return trades, nt


@njit(cache=True)
def _decide(st, s, t, ref, g, allow_short, max_bars, size, size_is_shares, whole_shares,
            slip, comm_share, comm_rate, tp, sl, trades, nt):
    """One fill moment: holding-period exit, then the signal (exit and/or entry)."""
    direction = st[s, _DIR]
    if direction != 0 and max_bars > 0 and st[s, _HELD] >= max_bars:
        trades, nt = _exit(st, s, t, ref, True, REASON_TIME, slip, comm_share, comm_rate,
                           trades, nt)
        st[s, _BLOCK] = direction
        direction = 0.0
    if g == g:  # not NaN: the signal has an opinion
        if g < 0 and not allow_short:
            g = 0.0
        if g != st[s, _BLOCK]:
            st[s, _BLOCK] = 0.0
        if st[s, _BLOCK] == 0 and g != direction:
            if direction != 0:
                trades, nt = _exit(st, s, t, ref, True, REASON_SIGNAL, slip, comm_share,
                                   comm_rate, trades, nt)
            if g != 0:
                _enter(st, s, t, ref, g, size, size_is_shares, whole_shares, slip,
                       comm_share, comm_rate, tp, sl)
    return trades, nt


@njit(cache=True)
def simulate(open_, high, low, close, signal, fill_at_close, cash_per_symbol, size,
             size_is_shares, whole_shares, slip, comm_share, comm_rate, tp, sl, max_bars,
             allow_short):
    """Run the whole panel. Returns (trades[n, N_TRADE_FIELDS], equity[T], open_count[T]).

    `tp`/`sl` are fractions of the entry fill (<= 0 or NaN: off); `max_bars` <= 0: off;
    `signal` is +1/-1/0 or NaN (no opinion).
    """
    n_bars, n_sym = close.shape
    st = np.zeros((n_sym, _N_STATE))
    for s in range(n_sym):
        st[s, _CASH] = cash_per_symbol
        st[s, _PENDING] = np.nan
        st[s, _LAST] = np.nan
    use_tp = tp > 0
    use_sl = sl > 0
    use_stops = use_tp or use_sl
    equity = np.empty(n_bars)
    open_count = np.zeros(n_bars, dtype=np.int64)
    trades = np.empty((max(64, n_sym * 4), N_TRADE_FIELDS))
    nt = 0
    for t in range(n_bars):
        total = 0.0
        count = 0
        for s in range(n_sym):
            c = close[t, s]
            o = open_[t, s]
            h = high[t, s]
            lo = low[t, s]
            if np.isfinite(c) and np.isfinite(o) and np.isfinite(h) and np.isfinite(lo):
                if fill_at_close:
                    if st[s, _DIR] != 0:
                        st[s, _HELD] += 1.0
                        if use_stops:
                            trades, nt = _stops(st, s, t, o, h, lo, True, use_tp, use_sl,
                                                slip, comm_share, comm_rate, trades, nt)
                    trades, nt = _decide(st, s, t, c, signal[t, s], allow_short, max_bars,
                                         size, size_is_shares, whole_shares, slip,
                                         comm_share, comm_rate, tp, sl, trades, nt)
                else:
                    if use_stops and st[s, _DIR] != 0:
                        trades, nt = _stops(st, s, t, o, h, lo, False, use_tp, use_sl,
                                            slip, comm_share, comm_rate, trades, nt)
                    trades, nt = _decide(st, s, t, o, st[s, _PENDING], allow_short,
                                         max_bars, size, size_is_shares, whole_shares, slip,
                                         comm_share, comm_rate, tp, sl, trades, nt)
                    if use_stops and st[s, _DIR] != 0:
                        trades, nt = _stops(st, s, t, o, h, lo, True, use_tp, use_sl,
                                            slip, comm_share, comm_rate, trades, nt)
                    st[s, _PENDING] = signal[t, s]
                    if st[s, _DIR] != 0:
                        st[s, _HELD] += 1.0
                st[s, _LAST] = c
            direction = st[s, _DIR]
            if direction != 0:
                total += st[s, _CASH] + direction * st[s, _QTY] * st[s, _LAST]
                count += 1
            else:
                total += st[s, _CASH]
        equity[t] = total
        open_count[t] = count
    # positions still open: a record marked at the last close, no exit costs
    for s in range(n_sym):
        direction = st[s, _DIR]
        if direction != 0:
            if nt == trades.shape[0]:
                trades = _grow(trades)
            qty = st[s, _QTY]
            last = st[s, _LAST]
            rec = trades[nt]
            rec[TR_SYMBOL] = s
            rec[TR_DIRECTION] = direction
            rec[TR_QTY] = qty
            rec[TR_ENTRY_BAR] = st[s, _ENTRY_BAR]
            rec[TR_ENTRY_REF] = st[s, _ENTRY_REF]
            rec[TR_ENTRY_FILL] = st[s, _ENTRY_FILL]
            rec[TR_EXIT_BAR] = n_bars - 1
            rec[TR_EXIT_REF] = last
            rec[TR_EXIT_FILL] = last
            rec[TR_COMMISSION] = st[s, _ENTRY_COMM]
            rec[TR_SLIPPAGE] = qty * abs(st[s, _ENTRY_FILL] - st[s, _ENTRY_REF])
            rec[TR_GROSS_PNL] = direction * qty * (last - st[s, _ENTRY_REF])
            rec[TR_PNL] = direction * qty * (last - st[s, _ENTRY_FILL]) - st[s, _ENTRY_COMM]
            rec[TR_REASON] = REASON_OPEN
            rec[TR_BARS_HELD] = st[s, _HELD]
            nt += 1
    return trades[:nt].copy(), equity, open_count
