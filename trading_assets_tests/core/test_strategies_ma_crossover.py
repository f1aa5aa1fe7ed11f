"""ma_crossover: crossover detection, and the strategy traded by the shared backtester
(`backtest_signals` + `core.backtest.run_backtest`, the path its backtest asset takes)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading_assets.core.backtest import BacktestConfig, BacktestResult, CashAndCosts, run_backtest
from trading_assets.core.strategies.ma_crossover import (
    Params,
    Signal,
    backtest_signals,
    crossovers,
    latest_signal,
    positions,
    signal_panel,
    summary_frame,
)

# fast=2, slow=3 by hand:
#   sma2  .  10 10 11    14     18 22 23    20     16
#   sma3  .  .  10 10.67 12.67  16 20 22    21.33  18
#   up-cross at i=3 (fast leaves the tie), down-cross at i=8.
PRICES = [10, 10, 10, 12, 16, 20, 24, 22, 18, 14]
P = Params(fast=2, slow=3)
CASH = 10_000.0


def series(values) -> pd.Series:
    index = pd.date_range("2025-01-02 14:30", periods=len(values), freq="1min", tz="UTC")
    return pd.Series(np.asarray(values, dtype="float64"), index=index, name="close")


def bars(values, symbol: str = "X") -> pd.DataFrame:
    """One symbol's bar frame whose open, high, low and close are all `values`."""
    closes = series(values).rename_axis("timestamp")
    return pd.DataFrame({"symbol": symbol, "open": closes, "high": closes, "low": closes,
                         "close": closes, "volume": 1.0})


def run(values, params: Params = P, commission_bps: float = 0.0) -> BacktestResult:
    """The strategy over `values` through the one backtester, from 10,000 of cash."""
    costs = CashAndCosts(init_cash=CASH, commission_bps=commission_bps)
    return run_backtest(backtest_signals(bars(values), params), costs)


def test_crossovers_by_hand():
    assert crossovers(series(PRICES), P).tolist() == [0, 0, 0, 1, 0, 0, 0, 0, -1, 0]


def test_touching_is_not_a_cross_but_leaving_the_tie_is():
    # diff: . . 0 .5 1.5 0 -3 -2 -> up at 3; the tie at 5 is no cross; down at 6.
    assert crossovers(series([10, 10, 10, 13, 16, 10, 4, 4]), P).tolist() == [
        0, 0, 0, 1, 0, 0, -1, 0,
    ]


def test_long_only_round_trip():
    result = run(PRICES)
    [trade] = result.trades.to_dict("records")
    assert (trade["direction"], trade["entry_price"], trade["exit_price"]) == (1, 12.0, 18.0)
    assert trade["bars_held"] == 5 and trade["exit_reason"] == "signal"
    assert trade["pnl"] / CASH == pytest.approx(0.5)  # the trade's return on the equity it took
    stats = result.stats
    assert stats["end_value"] == pytest.approx(15_000)
    assert stats["total_return"] == pytest.approx(0.5)
    assert stats["win_rate"] == 1.0
    # Equity peaks at 20 000 (price 24) and ends the trade at 15 000: a 25% drawdown
    # (the backtester reports drawdowns as negative fractions).
    assert stats["max_drawdown"] == pytest.approx(-0.25)
    assert result.equity.iloc[:3].tolist() == [CASH] * 3  # flat before the first cross
    assert result.equity.iloc[-1] == pytest.approx(15_000)  # flat again after the exit


def test_no_trade_without_a_cross_even_if_fast_starts_above_slow():
    result = run(np.linspace(10, 20, 30))
    assert result.trades.empty
    assert result.stats["trade_count"] == 0 and math.isnan(result.stats["win_rate"])
    assert result.stats["total_return"] == 0.0


def test_shorts_reverse_and_open_trade_is_marked_not_counted():
    result = run(PRICES, Params(fast=2, slow=3, allow_short=True))
    assert result.trades["direction"].tolist() == [1, -1]
    assert result.trades["exit_reason"].tolist() == ["signal", "open"]  # the short is still open
    long_, short = result.trades.iloc[0], result.trades.iloc[1]
    assert long_["exit_time"] == short["entry_time"]  # the reversal is one fill
    assert (short["entry_price"], short["exit_price"]) == (18.0, 14.0)
    # Short from 18 to 14 gains 4/18 on 15 000.
    assert result.stats["end_value"] == pytest.approx(15_000 * (1 + 4 / 18))
    assert result.stats["trade_count"] == 1  # only the closed long counts in win/loss stats
    assert result.stats["open_positions_at_end"] == 1


def test_commission_is_charged_on_entry_and_exit():
    # 100 bps of the notional on each fill: 10 000 / 12 shares bought at 12, sold at 18
    result = run(PRICES, commission_bps=100.0)
    [trade] = result.trades.to_dict("records")
    qty = CASH / 12
    assert trade["qty"] == pytest.approx(qty)
    assert trade["commission"] == pytest.approx(0.01 * qty * 12 + 0.01 * qty * 18)
    assert trade["pnl"] == pytest.approx(qty * (18 - 12) - trade["commission"])
    assert result.stats["end_value"] == pytest.approx(CASH * 1.5 - 0.01 * CASH - 0.01 * CASH * 1.5)
    assert result.stats["total_commission"] == pytest.approx(trade["commission"])


def test_positions_are_what_the_backtest_holds():
    # Long from the up-cross at bar 3 through bar 7, flat from the down-cross at bar 8.
    assert positions(series(PRICES), P).tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 0, 0]
    shorts = Params(fast=2, slow=3, allow_short=True)
    assert positions(series(PRICES), shorts).tolist() == [0, 0, 0, 1, 1, 1, 1, 1, -1, -1]
    for params in (P, shorts):
        held = positions(series(PRICES), params) != 0
        assert (run(PRICES, params).open_positions.to_numpy() == held).all()


def test_signal_panel_per_symbol_with_no_opinion_where_prices_are_missing():
    late = [np.nan, np.nan, *PRICES[:8]]  # starts trading two bars later
    closes = pd.DataFrame({"AAA": PRICES, "BBB": late}, index=series(PRICES).index)
    panel = signal_panel(closes, P)
    assert panel["AAA"].tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 0, 0]
    assert panel["BBB"].iloc[:2].isna().all()
    assert panel["BBB"].iloc[2:].tolist() == [0, 0, 0, 1, 1, 1, 1, 1]


def test_latest_signal_is_the_cross_on_the_newest_bar():
    s = series(PRICES)
    assert latest_signal(s.iloc[:4], P) is Signal.BUY
    assert latest_signal(s.iloc[:5], P) is Signal.NONE
    assert latest_signal(s.iloc[:9], P) is Signal.SELL
    assert latest_signal(s.iloc[:1], P) is Signal.NONE


@pytest.mark.parametrize("bad", [[10, 11, float("nan"), 12], [10, 0, 11], [10, -1, 12]])
def test_unusable_prices_raise(bad):
    # crossovers is what both the live signal and the backtest's positions are made of
    with pytest.raises(ValueError, match="finite and positive"):
        crossovers(series(bad), P)
    with pytest.raises(ValueError, match="finite and positive"):
        latest_signal(series(bad), P)


@pytest.mark.parametrize("kw", [{"fast": 5, "slow": 5}, {"fast": 0}])
def test_bad_params_raise(kw):
    with pytest.raises(ValueError):
        Params(**kw)


def test_the_backtest_refuses_a_negative_commission():
    # (the strategy no longer carries its own commission: costs are the backtester's)
    with pytest.raises(ValueError, match="commission_bps"):
        run_backtest(backtest_signals(bars(PRICES), P), CashAndCosts(commission_bps=-1.0))
    with pytest.raises(ValueError):
        BacktestConfig(commission_per_share=-0.01)


def test_summary_frame_has_one_row_per_symbol():
    a, b = series(PRICES), series(np.linspace(10, 20, 10))
    frame = pd.concat(
        [pd.DataFrame({"symbol": s, "close": v}) for s, v in (("AAA", a), ("BBB", b))]
    )
    out = summary_frame(frame, P)
    assert out.index.tolist() == ["AAA", "BBB"]
    assert out.loc["AAA", "total_return"] == pytest.approx(0.5)
    assert out.loc["BBB", "trade_count"] == 0


def test_the_backtest_trades_only_bars_in_its_range():
    frame = bars(PRICES)
    start = frame.index[2]
    signals = backtest_signals(frame, P, start=start, end=frame.index[9])
    assert list(signals.prices.close.index) == list(frame.index[2:9])
    # averages still see the bars before start, so the cross at bar 3 is the same one
    assert signals.signal["X"].tolist() == [0, 1, 1, 1, 1, 1, 0]


random_walks = st.lists(
    st.floats(min_value=-0.05, max_value=0.05, allow_nan=False), min_size=2, max_size=120
).map(lambda r: 100 * np.cumprod(1 + np.asarray(r)))


@settings(max_examples=60, deadline=None)
@given(random_walks, st.integers(min_value=1, max_value=119))
def test_no_look_ahead_live_signal_matches_backtest(prices, cut):
    """The signal on a prefix equals the backtest's signal at that bar: later prices
    never change an earlier decision, so backtest and live trade the same bars."""
    cut = min(cut, len(prices))
    params = Params(fast=3, slow=7)
    assert crossovers(prices[:cut], params).tolist() == crossovers(prices, params)[:cut].tolist()
    # and the backtest over the prefix is the full backtest up to the cut
    full, prefix = run(prices, params), run(prices[:cut], params)
    np.testing.assert_allclose(prefix.equity.to_numpy(), full.equity.to_numpy()[:cut], rtol=1e-12)


@settings(max_examples=60, deadline=None)
@given(random_walks, st.booleans(), st.sampled_from([0.0, 10.0]))
def test_trades_never_overlap_and_compound_to_the_final_equity(prices, allow_short, cost_bps):
    params = Params(fast=3, slow=7, allow_short=allow_short)
    result = run(prices, params, commission_bps=cost_bps)
    trades = result.trades
    if not allow_short:
        assert set(trades["direction"]) <= {1}
    # One position at a time: each trade starts where (or after) the previous one ended.
    entries, exits = trades["entry_time"].to_numpy(), trades["exit_time"].to_numpy()
    assert (entries[1:] >= exits[:-1]).all()
    assert (trades["exit_reason"].iloc[:-1] != "open").all()  # only the last may still be open
    # Compounding: each trade puts the whole equity the earlier ones left to work...
    pnl = trades["pnl"].to_numpy()
    before = CASH + np.concatenate([[0.0], np.cumsum(pnl)])[: len(pnl)]
    np.testing.assert_allclose(trades["qty"] * trades["entry_ref"], before, rtol=1e-9)
    # ...so the final equity is the product of the trades' returns.
    growth = float(np.prod(1 + pnl / before))
    assert result.stats["end_value"] == pytest.approx(CASH * growth, rel=1e-9)
    curve = np.concatenate([[CASH], result.equity.to_numpy()])
    assert result.stats["max_drawdown"] == pytest.approx(float((curve / np.maximum.accumulate(curve) - 1).min()))
    assert result.stats["max_drawdown"] <= 0
    # The backtester's signal (`positions`) holds a position on exactly the trades' bars.
    held = np.count_nonzero(positions(prices, params))
    open_trade = len(trades) and trades["exit_reason"].iloc[-1] == "open"
    assert held == trades["bars_held"].sum() + (1 if open_trade else 0)
