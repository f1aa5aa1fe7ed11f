"""ma_crossover (seed 003): crossover detection and the trade simulation."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading_assets.core.strategies.ma_crossover import (
    Params,
    Signal,
    crossovers,
    latest_signal,
    positions,
    signal_panel,
    simulate,
    summary_frame,
)

# fast=2, slow=3 by hand:
#   sma2  .  10 10 11    14     18 22 23    20     16
#   sma3  .  .  10 10.67 12.67  16 20 22    21.33  18
#   up-cross at i=3 (fast leaves the tie), down-cross at i=8.
PRICES = [10, 10, 10, 12, 16, 20, 24, 22, 18, 14]
P = Params(fast=2, slow=3)


def series(values) -> pd.Series:
    index = pd.date_range("2025-01-02 14:30", periods=len(values), freq="1min", tz="UTC")
    return pd.Series(np.asarray(values, dtype="float64"), index=index, name="close")


def test_crossovers_by_hand():
    assert crossovers(series(PRICES), P).tolist() == [0, 0, 0, 1, 0, 0, 0, 0, -1, 0]


def test_touching_is_not_a_cross_but_leaving_the_tie_is():
    # diff: . . 0 .5 1.5 0 -3 -2 -> up at 3; the tie at 5 is no cross; down at 6.
    assert crossovers(series([10, 10, 10, 13, 16, 10, 4, 4]), P).tolist() == [
        0, 0, 0, 1, 0, 0, -1, 0,
    ]


def test_long_only_round_trip():
    sim = simulate(series(PRICES), P)
    [trade] = sim.trades.to_dict("records")
    assert (trade["side"], trade["entry_price"], trade["exit_price"]) == ("long", 12.0, 18.0)
    assert trade["bars_held"] == 5 and trade["closed"]
    assert trade["return"] == pytest.approx(0.5)
    assert sim.stats["final_equity"] == pytest.approx(15_000)
    assert sim.stats["total_return"] == pytest.approx(0.5)
    assert sim.stats["win_rate"] == 1.0
    # Equity peaks at 20 000 (price 24) and ends the trade at 15 000: a 25% drawdown.
    assert sim.stats["max_drawdown"] == pytest.approx(0.25)
    assert sim.equity.iloc[:3].tolist() == [10_000] * 3  # flat before the first cross
    assert sim.equity.iloc[-1] == pytest.approx(15_000)  # flat again after the exit


def test_no_trade_without_a_cross_even_if_fast_starts_above_slow():
    sim = simulate(series(np.linspace(10, 20, 30)), P)
    assert sim.trades.empty
    assert sim.stats["trades"] == 0 and math.isnan(sim.stats["win_rate"])
    assert sim.stats["total_return"] == 0.0


def test_shorts_reverse_and_open_trade_is_marked_not_counted():
    sim = simulate(series(PRICES), Params(fast=2, slow=3, allow_short=True))
    assert sim.trades["side"].tolist() == ["long", "short"]
    assert sim.trades["closed"].tolist() == [True, False]
    short = sim.trades.iloc[1]
    assert (short["entry_price"], short["exit_price"]) == (18.0, 14.0)
    # Short from 18 to 14 gains 4/18 on 15 000.
    assert sim.stats["final_equity"] == pytest.approx(15_000 * (1 + 4 / 18))
    assert sim.stats["trades"] == 1  # only the closed long counts in win/loss stats


def test_commission_is_charged_on_entry_and_exit():
    sim = simulate(series(PRICES), Params(fast=2, slow=3, commission=0.01))
    assert sim.stats["final_equity"] == pytest.approx(10_000 * 0.99 * 1.5 * 0.99)
    assert sim.trades.iloc[0]["return"] == pytest.approx(0.99 * 1.5 * 0.99 - 1)


def test_positions_are_what_the_simulation_holds():
    # Long from the up-cross at bar 3 through bar 7, flat from the down-cross at bar 8.
    assert positions(series(PRICES), P).tolist() == [0, 0, 0, 1, 1, 1, 1, 1, 0, 0]
    shorts = Params(fast=2, slow=3, allow_short=True)
    assert positions(series(PRICES), shorts).tolist() == [0, 0, 0, 1, 1, 1, 1, 1, -1, -1]


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
    with pytest.raises(ValueError, match="finite and positive"):
        simulate(series(bad), P)


@pytest.mark.parametrize("kw", [{"fast": 5, "slow": 5}, {"fast": 0}, {"commission": 1.0}])
def test_bad_params_raise(kw):
    with pytest.raises(ValueError):
        Params(**kw)


def test_summary_frame_has_one_row_per_symbol():
    a, b = series(PRICES), series(np.linspace(10, 20, 10))
    bars = pd.concat(
        [pd.DataFrame({"symbol": s, "close": v}) for s, v in (("AAA", a), ("BBB", b))]
    )
    out = summary_frame(bars, P)
    assert out.index.tolist() == ["AAA", "BBB"]
    assert out.loc["AAA", "total_return"] == pytest.approx(0.5)
    assert out.loc["BBB", "trades"] == 0


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


@settings(max_examples=60, deadline=None)
@given(random_walks, st.booleans(), st.sampled_from([0.0, 0.001]))
def test_trades_never_overlap_and_compound_to_the_final_equity(prices, allow_short, cost):
    params = Params(fast=3, slow=7, allow_short=allow_short, commission=cost)
    sim = simulate(series(prices), params)
    trades = sim.trades
    if not allow_short:
        assert set(trades["side"]) <= {"long"}
    # One position at a time: each trade starts where (or after) the previous one ended.
    entries, exits = trades["entry_time"].to_numpy(), trades["exit_time"].to_numpy()
    assert (entries[1:] >= exits[:-1]).all()
    assert trades["closed"].iloc[:-1].all()  # only the last trade may still be open
    growth = float(np.prod(1 + trades["return"].to_numpy())) if len(trades) else 1.0
    assert sim.stats["final_equity"] == pytest.approx(params.initial_equity * growth, rel=1e-9)
    assert sim.stats["max_drawdown"] >= 0
    # The backtester's signal (`positions`) holds a position on exactly the trades' bars.
    held = np.count_nonzero(positions(prices, params))
    open_trade = len(trades) and not trades["closed"].iloc[-1]
    assert held == trades["bars_held"].sum() + (1 if open_trade else 0)
