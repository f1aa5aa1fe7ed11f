"""The vectorised backtester: hand-worked examples of each rule, equality with a plain
reference loop, and P&L conservation."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trading_assets.core.backtest import (
    TRADE_FIELDS,
    BacktestConfig,
    PricePanels,
    backtest,
    compute_stats,
    crossover_signal,
    simulate_arrays,
    stats_markdown,
)

NAN = float("nan")
COL = {name: i for i, name in enumerate(TRADE_FIELDS)}
REASONS = ("signal", "take_profit", "stop_loss", "time", "open")


# ----------------------------------------------------------------------------- reference


@dataclass
class _Pos:
    direction: int
    qty: float
    entry_bar: int
    entry_ref: float
    entry_fill: float
    entry_comm: float
    tp: float
    sl: float
    held: int = 0


class _SymbolReference:
    """One symbol's sleeve, driven bar by bar through the documented rules."""

    def __init__(self, symbol: int, cash: float, cfg: BacktestConfig, trades: list[dict]):
        self.symbol = symbol
        self.cash = cash
        self.cfg = cfg
        self.trades = trades
        self.slip = cfg.slippage_bps / 10_000.0
        self.tp = cfg.take_profit or 0.0
        self.sl = cfg.stop_loss or 0.0
        self.rate = cfg.commission_bps / 10_000.0
        self.pos: _Pos | None = None
        self.blocked = 0

    def commission(self, qty: float, fill: float) -> float:
        return self.cfg.commission_per_share * qty + qty * fill * self.rate

    def record(self, p: _Pos, t: int, ref: float, fill: float, exit_comm: float, reason: str):
        self.trades.append({
            "symbol": self.symbol, "direction": p.direction, "qty": p.qty,
            "entry_bar": p.entry_bar, "entry_ref": p.entry_ref, "entry_price": p.entry_fill,
            "exit_bar": t, "exit_ref": ref, "exit_price": fill,
            "commission": p.entry_comm + exit_comm,
            "slippage": p.qty * abs(p.entry_fill - p.entry_ref) + p.qty * abs(fill - ref),
            "gross_pnl": p.direction * p.qty * (ref - p.entry_ref),
            "pnl": p.direction * p.qty * (fill - p.entry_fill) - (p.entry_comm + exit_comm),
            "exit_reason": REASONS.index(reason), "bars_held": p.held,
        })

    def close_position(self, t: int, ref: float, reason: str, pay_slippage: bool) -> None:
        p = self.pos
        fill = ref
        if pay_slippage:
            fill = ref * (1 - self.slip) if p.direction > 0 else ref * (1 + self.slip)
        comm = self.commission(p.qty, fill)
        if p.direction > 0:
            self.cash = self.cash + p.qty * fill - comm
        else:
            self.cash = self.cash - (p.qty * fill + comm)
        self.record(p, t, ref, fill, comm, reason)
        self.pos = None

    def open_position(self, t: int, ref: float, direction: int, tp_price: float,
                      sl_price: float) -> None:
        cfg = self.cfg
        qty = cfg.size if cfg.size_mode == "shares" else cfg.size * self.cash / ref
        if cfg.whole_shares:
            qty = math.floor(qty)
        if not qty > 0 or not math.isfinite(qty):
            return
        fill = ref * (1 + self.slip) if direction > 0 else ref * (1 - self.slip)
        comm = self.commission(qty, fill)
        inf = math.inf
        if direction > 0:
            self.cash = self.cash - (qty * fill + comm)
            take = fill * (1 + self.tp) if self.tp else inf  # no level: never reached
            stop = fill * (1 - self.sl) if self.sl else -inf
        else:
            self.cash = self.cash + qty * fill - comm
            take = fill * (1 - self.tp) if self.tp else -inf
            stop = fill * (1 + self.sl) if self.sl else inf
        take = tp_price if math.isfinite(tp_price) else take  # the strategy's own levels
        stop = sl_price if math.isfinite(sl_price) else stop
        self.pos = _Pos(direction, qty, t, ref, fill, comm, take, stop)

    def check_stops(self, t: int, o: float, h: float, lo: float, intrabar: bool) -> None:
        p = self.pos
        if p is None:
            return
        sign = p.direction
        # "beyond the level" in the position's losing / winning direction (a missing
        # level is infinitely far away)
        stop_at_open = sign * (o - p.sl) <= 0
        take_at_open = sign * (o - p.tp) >= 0
        stop_in_bar = (lo <= p.sl) if sign > 0 else (h >= p.sl)
        take_in_bar = (h >= p.tp) if sign > 0 else (lo <= p.tp)
        if stop_at_open:
            self.close_position(t, o, "stop_loss", True)
        elif take_at_open:
            self.close_position(t, o, "take_profit", False)
        elif intrabar and stop_in_bar:
            self.close_position(t, p.sl, "stop_loss", True)
        elif intrabar and take_in_bar:
            self.close_position(t, p.tp, "take_profit", False)
        else:
            return
        if self.cfg.block_reentry:
            self.blocked = sign

    def act(self, t: int, ref: float, wanted: float, tp_price: float, sl_price: float) -> None:
        cfg = self.cfg
        if self.pos is not None and cfg.max_bars and self.pos.held >= cfg.max_bars:
            if cfg.block_reentry:
                self.blocked = self.pos.direction
            self.close_position(t, ref, "time", True)
        if math.isnan(wanted):
            return
        wanted = int(np.sign(wanted))
        if wanted < 0 and not cfg.allow_short:
            wanted = 0
        if wanted != self.blocked:
            self.blocked = 0
        if self.blocked:
            return
        current = 0 if self.pos is None else self.pos.direction
        if wanted == current:
            return
        if self.pos is not None:
            self.close_position(t, ref, "signal", True)
        if wanted != 0:
            self.open_position(t, ref, wanted, tp_price, sl_price)


def reference_backtest(open_, high, low, close, signal, cfg: BacktestConfig,
                       tp_price=None, sl_price=None):
    """The documented rules as a plain per-symbol Python loop (no numba, no vectorising).

    Returns (trades as a list of dicts keyed like TRADE_FIELDS, equity[T], open_count[T]).
    """
    n_bars, n_sym = close.shape
    tp_price = np.full(close.shape, NAN) if tp_price is None else tp_price
    sl_price = np.full(close.shape, NAN) if sl_price is None else sl_price
    stops_on = bool(cfg.take_profit or cfg.stop_loss) or not (
        np.isnan(tp_price).all() and np.isnan(sl_price).all())
    equity = np.zeros((n_bars, n_sym))
    holding = np.zeros((n_bars, n_sym), dtype=bool)
    trades: list[dict] = []
    for s in range(n_sym):
        sim = _SymbolReference(s, cfg.init_cash / n_sym, cfg, trades)
        pending = (NAN, NAN, NAN)  # signal, take-profit price, stop-loss price
        last = NAN
        for t in range(n_bars):
            o, h, lo, c = open_[t, s], high[t, s], low[t, s], close[t, s]
            if all(math.isfinite(v) for v in (o, h, lo, c)):
                now = (signal[t, s], tp_price[t, s], sl_price[t, s])
                if cfg.fill == "close":
                    if sim.pos is not None:
                        sim.pos.held += 1
                        if stops_on:
                            sim.check_stops(t, o, h, lo, intrabar=True)
                    sim.act(t, c, *now)
                else:
                    if stops_on:
                        sim.check_stops(t, o, h, lo, intrabar=False)
                    sim.act(t, o, *pending)
                    if stops_on:
                        sim.check_stops(t, o, h, lo, intrabar=True)
                    pending = now
                    if sim.pos is not None:
                        sim.pos.held += 1
                last = c
            pos = sim.pos
            equity[t, s] = sim.cash if pos is None else sim.cash + pos.direction * pos.qty * last
            holding[t, s] = pos is not None
        if sim.pos is not None:  # still open: marked at the last close, no exit costs
            sim.record(sim.pos, n_bars - 1, last, last, 0.0, "open")
    return trades, equity.sum(axis=1), holding.sum(axis=1)


def _canonical(records: np.ndarray) -> np.ndarray:
    """Trade records in a stable order (symbol, entry bar, exit bar)."""
    if len(records) == 0:
        return records.reshape(0, len(TRADE_FIELDS))
    order = np.lexsort((records[:, COL["exit_bar"]], records[:, COL["entry_bar"]],
                        records[:, COL["symbol"]]))
    return records[order]


# ----------------------------------------------------------------------------- helpers


def bars_1(open_, high, low, close):
    """One symbol's OHLC as (T, 1) panels."""
    return tuple(np.asarray(v, dtype="float64")[:, None] for v in (open_, high, low, close))


def run(cfg, o, h, lo, c, sig):
    return simulate_arrays(c, np.asarray(sig, dtype="float64")[:, None] if np.ndim(sig) == 1
                           else sig, cfg, open=o, high=h, low=lo)


def trade(result, i=0):
    return dict(zip(TRADE_FIELDS, result.trades[i], strict=True))


# ----------------------------------------------------------------------------- rules, by hand


def test_next_open_fill_buys_at_next_open_with_slippage_and_commission():
    o, h, lo, c = bars_1([10, 11, 12, 13], [10, 11, 12, 13], [10, 11, 12, 13], [10, 11, 12, 13])
    cfg = BacktestConfig(init_cash=1000, size_mode="shares", size=10, slippage_bps=100,
                         commission_per_share=0.5)
    res = run(cfg, o, h, lo, c, [1, NAN, 0, NAN])
    tr = trade(res)
    # signal at bar 0 -> buy 10 at bar 1's open 11 * 1.01; signal 0 at bar 2 -> sell at 13 * 0.99
    assert tr["entry_bar"] == 1 and tr["entry_price"] == pytest.approx(11.11)
    assert tr["exit_bar"] == 3 and tr["exit_price"] == pytest.approx(12.87)
    assert tr["commission"] == pytest.approx(10.0)
    assert tr["pnl"] == pytest.approx(10 * (12.87 - 11.11) - 10)
    assert tr["exit_reason"] == REASONS.index("signal")
    # equity marks the position at each close: after bar 1: cash 1000 - 111.1 - 5 + 10 * 11
    assert res.equity[1] == pytest.approx(1000 - 111.1 - 5 + 110)
    assert res.equity[-1] == pytest.approx(1000 + tr["pnl"])


def test_close_fill_fills_at_the_signal_bar_close():
    o, h, lo, c = bars_1([10, 11, 12], [10, 11, 12], [10, 11, 12], [10.5, 11.5, 12.5])
    cfg = BacktestConfig(fill="close", init_cash=1000, size_mode="shares", size=1)
    res = run(cfg, o, h, lo, c, [1, NAN, 0])
    tr = trade(res)
    assert (tr["entry_bar"], tr["entry_price"]) == (0, 10.5)
    assert (tr["exit_bar"], tr["exit_price"]) == (2, 12.5)


def test_last_signal_has_no_next_bar_to_fill_in_next_open_mode():
    o, h, lo, c = bars_1([10, 10], [10, 10], [10, 10], [10, 10])
    res = run(BacktestConfig(), o, h, lo, c, [NAN, 1])
    assert len(res.trades) == 0


def test_reversal_exits_and_enters_in_the_same_fill_and_short_profits_when_price_falls():
    o, h, lo, c = bars_1([100, 100, 90, 90], [100, 100, 90, 90], [100, 100, 90, 90],
                         [100, 100, 90, 90])
    cfg = BacktestConfig(fill="close", init_cash=1000, size_mode="shares", size=2)
    res = run(cfg, o, h, lo, c, [1, -1, NAN, 0])
    long_, short = trade(res, 0), trade(res, 1)
    assert long_["direction"] == 1 and long_["exit_bar"] == 1 and long_["pnl"] == 0
    assert short["direction"] == -1 and short["entry_bar"] == 1 and short["exit_bar"] == 3
    assert short["pnl"] == pytest.approx(2 * 10)
    assert res.equity[-1] == pytest.approx(1020)


def test_long_only_treats_short_signals_as_flat():
    o, h, lo, c = bars_1([100, 100, 90], [100, 100, 90], [100, 100, 90], [100, 100, 90])
    cfg = BacktestConfig(fill="close", size_mode="shares", size=1, allow_short=False)
    res = run(cfg, o, h, lo, c, [1, -1, -1])
    assert len(res.trades) == 1 and trade(res)["direction"] == 1
    assert trade(res)["exit_bar"] == 1


def test_stop_wins_when_one_bar_reaches_both_levels():
    # entry at 100 (bar 1 open); bar 1 reaches 110 and 95: both a 5% TP and a 5% SL hit
    o, h, lo, c = bars_1([100, 100, 101], [100, 110, 101], [100, 95, 101], [100, 101, 101])
    cfg = BacktestConfig(init_cash=1000, size_mode="shares", size=1, take_profit=0.05,
                         stop_loss=0.05)
    tr = trade(run(cfg, o, h, lo, c, [1, NAN, NAN]))
    assert tr["exit_reason"] == REASONS.index("stop_loss")
    assert tr["exit_bar"] == 1 and tr["exit_price"] == pytest.approx(95)


def test_gap_through_the_stop_fills_at_the_open():
    o, h, lo, c = bars_1([100, 100, 90], [100, 100, 92], [100, 100, 88], [100, 100, 91])
    cfg = BacktestConfig(fill="close", init_cash=1000, size_mode="shares", size=1,
                         stop_loss=0.05, slippage_bps=10)
    tr = trade(run(cfg, o, h, lo, c, [1, NAN, NAN]))
    assert tr["exit_reason"] == REASONS.index("stop_loss")
    assert tr["exit_ref"] == 90 and tr["exit_price"] == pytest.approx(90 * 0.999)


def test_take_profit_fills_at_its_level_without_slippage():
    o, h, lo, c = bars_1([100, 100, 101], [100, 100, 106], [100, 100, 100], [100, 100, 102])
    cfg = BacktestConfig(fill="close", init_cash=1000, size_mode="shares", size=1,
                         take_profit=0.05, slippage_bps=10)
    tr = trade(run(cfg, o, h, lo, c, [1, NAN, NAN]))
    assert tr["exit_reason"] == REASONS.index("take_profit")
    assert tr["exit_price"] == pytest.approx(100 * 1.001 * 1.05)


def test_short_stop_is_above_and_take_profit_below():
    o, h, lo, c = bars_1([100, 100, 100], [100, 100, 103], [100, 100, 99], [100, 100, 100])
    cfg = BacktestConfig(fill="close", size_mode="shares", size=1, stop_loss=0.02,
                         take_profit=0.02)
    tr = trade(run(cfg, o, h, lo, c, [-1, NAN, NAN]))
    assert tr["exit_reason"] == REASONS.index("stop_loss")
    assert tr["exit_price"] == pytest.approx(102)


def test_holding_period_exit_then_no_reentry_until_signal_changes():
    n = 8
    px = [100.0] * n
    o, h, lo, c = bars_1(px, px, px, px)
    cfg = BacktestConfig(fill="close", size_mode="shares", size=1, max_bars=2)
    # long signal held for 5 bars, then flat, then long again
    res = run(cfg, o, h, lo, c, [1, 1, 1, 1, 1, 0, 1, NAN])
    first, second = trade(res, 0), trade(res, 1)
    assert (first["entry_bar"], first["exit_bar"], first["bars_held"]) == (0, 2, 2)
    assert first["exit_reason"] == REASONS.index("time")
    assert second["entry_bar"] == 6  # not 2..4, where the signal still said long
    assert second["exit_reason"] == REASONS.index("open")


def test_fraction_sizing_uses_sleeve_cash_and_whole_shares_floor():
    c = np.array([[30.0], [30.0], [30.0]])
    two = np.column_stack([c[:, 0], c[:, 0]])
    cfg = BacktestConfig(fill="close", init_cash=2000, size=0.95, whole_shares=True)
    res = simulate_arrays(two, np.array([[1, 1], [NAN, NAN], [NAN, NAN]]), cfg)
    # each sleeve has 1000; 950 / 30 = 31.67 -> 31 shares
    assert list(res.trades[:, COL["qty"]]) == [31, 31]
    tiny = BacktestConfig(fill="close", init_cash=20, size=1.0, whole_shares=True)
    assert len(simulate_arrays(c, np.array([1.0, NAN, NAN]), tiny).trades) == 0


def test_nan_bar_is_not_traded_and_the_order_waits_for_the_next_real_bar():
    o, h, lo, c = bars_1([10, NAN, 12, 13], [10, NAN, 12, 13], [10, NAN, 12, 13],
                         [10, NAN, 12, 13])
    cfg = BacktestConfig(init_cash=1000, size_mode="shares", size=1)
    res = run(cfg, o, h, lo, c, [1, NAN, NAN, NAN])
    tr = trade(res)
    assert tr["entry_bar"] == 2 and tr["entry_price"] == 12
    assert res.equity[1] == 1000  # flat over the missing bar


def test_open_positions_are_reported_and_marked_at_the_last_close():
    o, h, lo, c = bars_1([10, 10, 10], [10, 10, 10], [10, 10, 10], [10, 10, 14])
    res = run(BacktestConfig(fill="close", size_mode="shares", size=3), o, h, lo, c,
              [1, NAN, NAN])
    tr = trade(res)
    assert tr["exit_reason"] == REASONS.index("open") and tr["pnl"] == pytest.approx(12)
    assert list(res.open_count) == [1, 1, 1]


def test_config_rejects_nonsense():
    with pytest.raises(ValueError):
        BacktestConfig(fill="tomorrow")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        BacktestConfig(stop_loss=1.5)
    with pytest.raises(ValueError):
        BacktestConfig(max_bars=0)
    with pytest.raises(ValueError, match="open panel"):
        simulate_arrays(np.ones((3, 1)), np.ones((3, 1)))
    with pytest.raises(ValueError, match="high and low"):
        simulate_arrays(np.ones((3, 1)), np.ones((3, 1)),
                        BacktestConfig(fill="close", stop_loss=0.1))


# ----------------------------------------------------------------------------- pandas level


def _bar_frame(closes: dict[str, list[float]], start="2025-01-06 14:30") -> pd.DataFrame:
    frames = []
    for symbol, values in closes.items():
        idx = pd.date_range(start, periods=len(values), freq="30min", tz="UTC", name="timestamp")
        v = np.asarray(values, dtype="float64")
        frames.append(pd.DataFrame({"symbol": symbol, "open": v, "high": v * 1.001,
                                    "low": v * 0.999, "close": v, "volume": 1.0}, index=idx))
    return pd.concat(frames).sort_values(["symbol", "timestamp"])


def test_backtest_from_bar_frame_labels_trades_with_symbols_and_times():
    bars = _bar_frame({"AAA": [10, 11, 12, 13], "BBB": [20, 19, 18, 17]})
    prices = PricePanels.from_bars(bars)
    signal = pd.DataFrame({"AAA": [1, NAN, NAN, 0], "BBB": [-1, NAN, NAN, NAN]},
                          index=prices.close.index)
    res = backtest(prices, signal, BacktestConfig(fill="close", init_cash=2000, size=0.5))
    assert list(res.trades["symbol"]) == ["AAA", "BBB"]
    assert res.trades.loc[0, "entry_time"] == prices.close.index[0]
    assert res.trades.loc[0, "exit_time"] == prices.close.index[3]
    assert list(res.trades["exit_reason"]) == ["signal", "open"]
    # AAA: 50 shares 10 -> 13; BBB: short 25 shares 20 -> 17
    assert res.equity.iloc[-1] == pytest.approx(2000 + 50 * 3 + 25 * 3)
    assert res.stats["trade_count"] == 1 and res.stats["win_rate"] == 1.0


def test_stats_on_a_known_curve():
    idx = pd.date_range("2024-01-01", periods=5, freq="D", tz="UTC")
    equity = pd.Series([100.0, 120.0, 90.0, 110.0, 121.0], index=idx)
    trades = pd.DataFrame({"pnl": [5.0, -2.0, 3.0], "commission": [0.0, 0.0, 0.0],
                           "exit_reason": ["signal", "stop_loss", "open"]})
    open_positions = pd.Series([1, 0, 0, 1, 1], index=idx)
    stats = compute_stats(equity, trades, open_positions, init_cash=100.0)
    assert stats["total_return"] == pytest.approx(0.21)
    assert stats["max_drawdown"] == pytest.approx(90 / 120 - 1)
    assert stats["win_rate"] == 0.5 and stats["trade_count"] == 2
    assert stats["exposure"] == pytest.approx(0.6)
    years = 4 / 365.25
    assert stats["cagr"] == pytest.approx(1.21 ** (1 / years) - 1)
    table = stats_markdown(stats)
    assert "| total_return | 21.00% |" in table and "| trade_count | 2 |" in table


def test_crossover_signal_is_nan_during_warm_up():
    out = crossover_signal(np.array([NAN, 2.0, 1.0, 1.0]), np.array([NAN, 1.0, 2.0, 1.0]))
    assert np.isnan(out[0]) and list(out[1:]) == [1.0, -1.0, 0.0]


# ----------------------------------------------------------------------------- properties


@st.composite
def scenarios(draw):
    n_bars = draw(st.integers(2, 40))
    n_sym = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, (n_bars, n_sym)), axis=0))
    open_ = close * np.exp(rng.normal(0, 0.01, (n_bars, n_sym)))
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.03, (n_bars, n_sym)))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.03, (n_bars, n_sym)))
    signal = rng.choice([-1.0, 0.0, 1.0, NAN, NAN], size=(n_bars, n_sym))
    if draw(st.booleans()):  # some non-trading bars
        holes = rng.random((n_bars, n_sym)) < 0.15
        for arr in (open_, high, low, close):
            arr[holes] = NAN
    cfg = BacktestConfig(
        fill=draw(st.sampled_from(["next_open", "close"])),
        init_cash=draw(st.sampled_from([1_000.0, 100_000.0])),
        size_mode=draw(st.sampled_from(["fraction", "shares"])),
        size=draw(st.sampled_from([0.3, 0.95, 1.0, 7.0])),
        whole_shares=draw(st.booleans()),
        allow_short=draw(st.booleans()),
        slippage_bps=draw(st.sampled_from([0.0, 5.0, 25.0])),
        commission_per_share=draw(st.sampled_from([0.0, 0.01])),
        commission_bps=draw(st.sampled_from([0.0, 3.0])),
        take_profit=draw(st.sampled_from([None, 0.01, 0.04])),
        stop_loss=draw(st.sampled_from([None, 0.01, 0.03])),
        max_bars=draw(st.sampled_from([None, 1, 3])),
        block_reentry=draw(st.booleans()),
    )
    levels = None
    if draw(st.booleans()):  # a strategy's own bracket prices, some bars without
        levels = tuple(np.where(rng.random((n_bars, n_sym)) < 0.4, NAN,
                                close * np.exp(rng.normal(0, 0.03, (n_bars, n_sym))))
                       for _ in range(2))
    return open_, high, low, close, signal, cfg, levels


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_kernel_equals_reference_loop(scenario):
    open_, high, low, close, signal, cfg, levels = scenario
    tp_price, sl_price = levels or (None, None)
    got = simulate_arrays(close, signal, cfg, open=open_, high=high, low=low,
                          take_profit_price=tp_price, stop_loss_price=sl_price)
    ref_trades, ref_equity, ref_open = reference_backtest(open_, high, low, close, signal, cfg,
                                                          tp_price, sl_price)
    expected = np.array([[t[f] for f in TRADE_FIELDS] for t in ref_trades]).reshape(
        -1, len(TRADE_FIELDS))
    np.testing.assert_allclose(_canonical(got.trades), _canonical(expected), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got.equity, ref_equity, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(got.open_count, ref_open)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_trade_pnl_minus_costs_is_the_equity_change(scenario):
    open_, high, low, close, signal, cfg, levels = scenario
    tp_price, sl_price = levels or (None, None)
    got = simulate_arrays(close, signal, cfg, open=open_, high=high, low=low,
                          take_profit_price=tp_price, stop_loss_price=sl_price)
    tr = got.trades
    gross = tr[:, COL["gross_pnl"]].sum()
    costs = tr[:, COL["commission"]].sum() + tr[:, COL["slippage"]].sum()
    assert gross - costs == pytest.approx(got.equity[-1] - cfg.init_cash, rel=1e-9, abs=1e-6)
    assert tr[:, COL["pnl"]].sum() == pytest.approx(got.equity[-1] - cfg.init_cash, rel=1e-9,
                                                    abs=1e-6)
    assert (tr[:, COL["slippage"]] >= 0).all() and (tr[:, COL["commission"]] >= 0).all()


# ----------------------------------------------------------------------------- flows


def _session_bars(symbol: str, days: list[str], seed: int) -> pd.DataFrame:
    """30-minute bars over NYSE sessions (half days included), a seeded random walk."""
    from trading_assets.core import calendar

    starts = pd.DatetimeIndex([t for d in days for t in calendar.session_bar_starts(d)])
    starts = starts.tz_convert("UTC").rename("timestamp")
    rng = np.random.default_rng(seed)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.006, len(starts))))
    open_ = np.r_[close[0], close[:-1]]
    return pd.DataFrame({"symbol": symbol, "open": open_, "high": np.maximum(open_, close) * 1.001,
                         "low": np.minimum(open_, close) * 0.999, "close": close, "volume": 1.0},
                        index=starts)


def test_ema_concentration_tick_signals_equal_the_strategy_on_each_live_window():
    from trading_assets.core import calendar
    from trading_assets.core.strategies import ema_concentration as strategy

    # includes the 2024-11-29 half day (7 bars) and the Thanksgiving holiday
    days = [str(d) for d in calendar.sessions_between(pd.Timestamp("2024-11-15").date(),
                                                       pd.Timestamp("2024-12-06").date())]
    bars = _session_bars("TQQQ", days, seed=5)
    params = strategy.Params(fast=4, slow=9)
    lookback = 3
    ticks = bars.index[bars.index >= pd.Timestamp("2024-11-27", tz="UTC")]
    got = strategy.tick_signals(bars, params, ticks, lookback)
    expected = []
    for tick in ticks:  # what the live assets compute: the window, then the strategy
        first = calendar.previous_sessions(tick.tz_convert(calendar.TZ).date(), lookback)[0]
        window_open = calendar.session_open_close(first)[0].tz_convert("UTC")
        window = bars[(bars.index >= window_open) & (bars.index <= tick)]
        frame = strategy.signals_frame(strategy.indicator_frame(window, params))
        expected.append(str(frame.loc["TQQQ", "signal"]))
    assert list(got) == expected
    assert {"bullish", "bearish"} <= set(expected)  # the comparison saw both kinds


def test_ema_concentration_backtest_buys_whole_shares_at_the_close_and_exits_when_bearish():
    from trading_assets.core import calendar
    from trading_assets.core.backtest import CashAndCosts, run_backtest
    from trading_assets.core.strategies import ema_concentration as strategy

    days = [str(d) for d in calendar.sessions_between(pd.Timestamp("2024-11-15").date(),
                                                       pd.Timestamp("2024-12-06").date())]
    bars = _session_bars("TQQQ", days, seed=5)
    params = strategy.Params(fast=4, slow=9)
    signals = strategy.backtest_signals(bars, params, start=pd.Timestamp("2024-11-27", tz="UTC"),
                                        lookback_sessions=3)
    res = run_backtest(signals, CashAndCosts(init_cash=10_000.0, slippage_bps=10,
                                             commission_per_share=0.01))
    signals = res.extra["signals"]
    first = res.trades.iloc[0]
    close_at_entry = bars.loc[first["entry_time"], "close"]
    assert signals[first["entry_time"]] == "bullish"
    assert first["qty"] == math.floor(0.95 * 10_000.0 / close_at_entry)
    assert first["entry_price"] == pytest.approx(close_at_entry * 1.001)
    closed = res.trades[res.trades["exit_reason"] != "open"]
    assert len(closed) > 0
    assert (signals[closed["exit_time"]] == "bearish").all()
    assert (res.trades["direction"] == 1).all()


def test_big_panels_run_in_column_chunks_with_the_same_results(monkeypatch):
    import trading_assets.core.backtest as bt

    rng = np.random.default_rng(8)
    n_bars, n_sym = 300, 7
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.02, (n_bars, n_sym)), axis=0))
    open_ = close * np.exp(rng.normal(0, 0.01, (n_bars, n_sym)))
    signal = rng.choice([-1.0, 0.0, 1.0, NAN], size=(n_bars, n_sym))
    cfg = BacktestConfig(slippage_bps=3, commission_bps=1, size=0.5)
    whole = simulate_arrays(close, signal, cfg, open=open_)
    monkeypatch.setattr(bt, "CELLS_PER_CHUNK", 500)
    assert len(bt._chunks(close.shape)) > 1
    chunked = simulate_arrays(close, signal, cfg, open=open_)
    np.testing.assert_array_equal(chunked.trades, whole.trades)  # symbols renumbered back
    np.testing.assert_allclose(chunked.equity, whole.equity, rtol=1e-12)
    np.testing.assert_array_equal(chunked.open_count, whole.open_count)


def test_absolute_bracket_levels_from_the_signal_bar_and_event_reentry():
    # a BUY event at bar 0 with its own take-profit at 104 and stop at 97
    o, h, lo, c = bars_1([100, 100, 101, 100, 100, 100], [100, 100, 105, 100, 100, 100],
                         [100, 100, 100, 100, 100, 100], [100, 100, 102, 100, 100, 100])
    signal = [1, NAN, NAN, 1, NAN, NAN]
    tp = np.array([104, NAN, NAN, NAN, NAN, NAN])[:, None]
    sl = np.array([97, NAN, NAN, NAN, NAN, NAN])[:, None]
    events = BacktestConfig(fill="close", size_mode="shares", size=1, block_reentry=False)
    res = simulate_arrays(c, np.array(signal, dtype=float)[:, None], events, open=o, high=h,
                          low=lo, take_profit_price=tp, stop_loss_price=sl)
    first, second = trade(res, 0), trade(res, 1)
    assert first["exit_reason"] == REASONS.index("take_profit") and first["exit_price"] == 104
    # the next BUY event enters again (no levels on it: held to the end)
    assert second["entry_bar"] == 3 and second["exit_reason"] == REASONS.index("open")
    levels = BacktestConfig(fill="close", size_mode="shares", size=1)  # level semantics
    res = simulate_arrays(c, np.array(signal, dtype=float)[:, None], levels, open=o, high=h,
                          low=lo, take_profit_price=tp, stop_loss_price=sl)
    assert len(res.trades) == 1  # the second +1 is still "long", blocked after the exit


def test_cagr_of_a_large_return_over_hours_does_not_overflow():
    from trading_assets.core.backtest import compute_stats

    idx = pd.date_range("2025-02-12 14:30", periods=11, freq="30min", tz="UTC")
    equity = pd.Series(np.linspace(100_000, 150_000, 11), index=idx)
    trades = pd.DataFrame({"pnl": pd.Series(dtype="float64")})
    stats = compute_stats(equity, trades, init_cash=100_000)
    assert stats["total_return"] == pytest.approx(0.5)
    assert stats["cagr"] == float("inf")
