"""The trend_dmi backtest proxy: alerts synthesised from bars, folded through the live machine."""

import itertools

import numpy as np
import pandas as pd
import pytest

from trading_assets.adapters.replay.market_data import ReplayMarketData
from trading_assets.core.backtest import BacktestConfig, PricePanels, backtest
from trading_assets.core.indicators import dmi
from trading_assets.core.strategies import trend_dmi_alerts as proxy
from trading_assets.core.strategies.trend_dmi import CrossDirection, DICross, TrendFlip

T0 = pd.Timestamp("2025-03-03 14:30", tz="UTC")


def _bars(closes, symbol="TEST", spread=0.5, freq="30min") -> pd.DataFrame:
    closes = np.asarray(closes, dtype="float64")
    index = pd.date_range(T0, periods=len(closes), freq=freq, name="timestamp")
    opens = np.concatenate([[closes[0]], closes[:-1]])
    return pd.DataFrame({
        "symbol": symbol, "open": opens,
        "high": np.maximum(opens, closes) + spread, "low": np.minimum(opens, closes) - spread,
        "close": closes, "volume": 1.0,
    }, index=index)


def _hand_ema(values, period):
    """TA-Lib EMA by hand: SMA seed at the period-th value, then alpha = 2/(period+1)."""
    out = [None] * len(values)
    out[period - 1] = sum(values[:period]) / period
    alpha = 2 / (period + 1)
    for i in range(period, len(values)):
        out[i] = out[i - 1] + alpha * (values[i] - out[i - 1])
    return out


# rise 30 bars, fall 30, rise 30: the close crosses its EMA once on the way down, once up
ZIGZAG = [100 + i for i in range(30)] + [129 - i for i in range(1, 31)] + \
         [99 + i for i in range(1, 31)]


def test_trend_flips_exactly_where_the_close_crosses_its_ema():
    period = 5
    bars = _bars(ZIGZAG)
    events = proxy.alerts_from_bars(bars, trend_period=period, dmi_period=14)
    flips = [e for e in events if isinstance(e, TrendFlip)]

    line = _hand_ema(ZIGZAG, period)
    colour = [None if m is None else ("BLUE" if c > m else "RED")
              for c, m in zip(ZIGZAG, line, strict=True)]
    expected = [i for i in range(period, len(ZIGZAG)) if colour[i] != colour[i - 1]]
    assert [bars.index.get_loc(f.bar_time) for f in flips] == expected
    # the first known colour (BLUE, rising) is no alert; the fall flips RED, the rise BLUE
    assert [f.color.value for f in flips] == ["RED", "BLUE"]
    # on a straight line the EMA lags by (period-1)/2 = 2 points: the close reaches it on
    # the 2nd bar of the fall (127 vs EMA ~127.0 -> "RED otherwise" at <=) or the 3rd
    assert expected[0] in (30, 31, 32) and expected[1] in (60, 61, 62)
    # the alert fires at the bar's close, with the bar's close as its price
    for f in flips:
        assert f.at == f.bar_time + pd.Timedelta("30min")
        assert f.price == bars.loc[f.bar_time, "close"]
        assert f.symbol == "TEST" and f.timeframe == "30min"


def test_di_crosses_where_the_di_difference_changes_sign():
    bars = _bars(ZIGZAG)
    events = proxy.alerts_from_bars(bars, trend_period=5, dmi_period=7)
    crosses = [e for e in events if isinstance(e, DICross)]

    plus, minus, _ = dmi(bars["high"], bars["low"], bars["close"], 7)
    diff = (plus - minus).to_numpy()
    sign = np.sign(diff)
    expected = [i for i in range(1, len(sign))
                if np.isfinite(sign[i - 1]) and sign[i] != sign[i - 1] and sign[i] != 0]
    assert [bars.index.get_loc(c.bar_time) for c in crosses] == expected
    for c in crosses:
        i = bars.index.get_loc(c.bar_time)
        want = (CrossDirection.PLUS_OVER_MINUS if diff[i] > 0 else CrossDirection.MINUS_OVER_PLUS)
        assert c.direction is want
    # hand check: DI+ leads on the first rise (no alert: first known side), DI- takes over
    # after the top, DI+ again after the bottom
    assert [c.direction for c in crosses] == [CrossDirection.MINUS_OVER_PLUS,
                                              CrossDirection.PLUS_OVER_MINUS]
    assert 30 <= bars.index.get_loc(crosses[0].bar_time) < 40
    assert 60 <= bars.index.get_loc(crosses[1].bar_time) < 70


def test_a_tie_is_no_side_and_leaving_it_to_the_same_side_is_no_cross():
    assert proxy._changes([None, 1, None, 1, None, -1, -1, 1]) == [5, 7]
    assert proxy._changes(["BLUE", "BLUE", "RED"]) == [2]
    assert proxy._changes([None, None]) == []


def test_alerts_are_in_time_order_and_a_shared_bar_puts_the_cross_before_the_flip():
    bars = ReplayMarketData().get_bars(["SPY"], T0, T0 + pd.Timedelta(days=30), "30min")
    events = proxy.alerts_from_bars(bars, trend_period=10, dmi_period=14)
    assert events
    assert [e.at for e in events] == sorted(e.at for e in events)
    assert len({e.event_id for e in events}) == len(events)
    shared = 0
    for a, b in itertools.pairwise(events):
        if a.bar_time == b.bar_time:
            shared += 1
            assert isinstance(a, DICross) and isinstance(b, TrendFlip) and a.at == b.at
    assert shared > 0  # the replay has such bars, so the tie rule is exercised


def test_alerts_from_bars_takes_one_symbol_and_valid_params():
    two = pd.concat([_bars(ZIGZAG, "A"), _bars(ZIGZAG, "B")])
    with pytest.raises(ValueError, match="one symbol"):
        proxy.alerts_from_bars(two)
    with pytest.raises(ValueError, match="dmi_period"):
        proxy.alerts_from_bars(_bars(ZIGZAG), dmi_period=1)
    with pytest.raises(ValueError, match="interval"):
        proxy.ProxyParams(interval="soon")
    # too few bars for the indicators: no alerts, no error
    assert proxy.alerts_from_bars(_bars(ZIGZAG[:5]), trend_period=20) == []


# ----------------------------------------------------------------------------- folding


def _seed_reference(events):
    """The seed's Lambda handlers, spelled out independently of `trend_dmi.apply`:
    the position after each event."""
    position, colour, waiting = "NONE", None, False
    out = []
    for e in events:
        if isinstance(e, TrendFlip):
            waiting = False
            colour = e.color.value
            position = "LONG" if colour == "BLUE" else "SHORT"
        elif position != "NONE":
            exit_on = "minus_over_plus" if position == "LONG" else "plus_over_minus"
            if e.direction.value == exit_on:
                position, waiting = "NONE", True
        elif waiting:
            if e.direction.value == "plus_over_minus" and colour == "BLUE":
                position, waiting = "LONG", False
            elif e.direction.value == "minus_over_plus" and colour == "RED":
                position, waiting = "SHORT", False
        out.append(position)
    return out


@pytest.fixture(scope="module")
def replay():
    start = pd.Timestamp("2025-02-03 14:30", tz="UTC")
    bars = ReplayMarketData().get_bars(["SPY", "QQQ", "AAPL"], start - pd.Timedelta(days=10),
                                       pd.Timestamp("2025-03-15", tz="UTC"), "30min")
    return bars, start


def test_folded_positions_follow_the_seed_rules(replay):
    bars, start = replay
    params = proxy.ProxyParams(trend_period=20, dmi_period=14)
    log = proxy.alert_log(bars, params, start=start)
    assert (log["outcome"] != "rejected").all()
    re_entries = 0
    for symbol, rows in log.groupby("symbol", sort=False):
        group = bars[bars["symbol"] == symbol]
        events = [e for e in proxy.alerts_from_bars(group, 20, 14) if e.bar_time >= start]
        assert list(rows["position"]) == _seed_reference(events)
        # never long under RED or short under BLUE; waiting only while flat
        pos, colour, waiting = rows["position"], rows["trend_color"], rows["waiting_for_reentry"]
        assert not ((pos == "LONG") & (colour != "BLUE")).any()
        assert not ((pos == "SHORT") & (colour != "RED")).any()
        assert not (waiting & (pos != "NONE")).any()
        # a DI cross opens a position only out of waiting, in the trend's direction
        prev_waiting = waiting.shift(1, fill_value=False).to_numpy()
        opened_by_cross = (rows["kind"] == "dmi") & rows["actions"].str.startswith("OPEN")
        assert prev_waiting[opened_by_cross.to_numpy()].all()
        re_entries += int(opened_by_cross.sum())
    assert re_entries > 0  # the replay weeks do contain re-entries


def test_signal_panel_is_the_position_after_each_alert_bar(replay):
    bars, start = replay
    log = proxy.alert_log(bars, start=start)
    signal = proxy.trend_dmi_positions(bars, start=start)
    assert list(signal.columns) == ["AAPL", "QQQ", "SPY"]
    assert set(np.unique(signal.to_numpy()[~np.isnan(signal.to_numpy())])) <= {-1.0, 0.0, 1.0}
    assert signal.loc[signal.index < start].isna().all().all()  # not switched on yet
    last = log.groupby(["symbol", "bar_time"])["position"].last()
    assert int(signal.notna().sum().sum()) == len(last)
    for (symbol, bar_time), position in last.items():
        assert signal.loc[bar_time, symbol] == {"LONG": 1, "SHORT": -1, "NONE": 0}[position]
    # a fresh state: each symbol's first action is an entry from a trend flip
    for _, rows in log[log["actions"] != ""].groupby("symbol"):
        first = rows.iloc[0]
        assert first["kind"] == "trend" and first["actions"] in ("OPEN_LONG", "OPEN_SHORT")


def test_backtest_trades_are_the_position_changes(replay):
    bars, start = replay
    signal = proxy.trend_dmi_positions(bars, start=start)
    in_range = bars[bars.index >= start]
    prices = PricePanels.from_bars(in_range)
    result = backtest(prices, signal.loc[prices.close.index], BacktestConfig(fill="close"))
    held = signal.loc[prices.close.index].ffill().fillna(0.0)
    trades = result.trades
    assert len(trades) > 0
    for symbol in held.columns:
        pos = held[symbol]
        changed = pos.ne(pos.shift(1, fill_value=0.0))
        entries = pos.index[changed & pos.ne(0)]
        exits = pos.index[changed & pos.shift(1, fill_value=0.0).ne(0)]
        mine = trades[trades["symbol"] == symbol]
        assert list(mine["entry_time"]) == list(entries)
        assert list(mine["direction"]) == [int(pos[t]) for t in entries]
        closed = mine[mine["exit_reason"] != "open"]
        assert list(closed["exit_time"]) == list(exits)
        assert (closed["exit_reason"] == "signal").all()
        # fills at the alert bar's close
        close = prices.close[symbol]
        assert np.allclose(mine["entry_price"], close.loc[mine["entry_time"]].to_numpy())


def test_no_alerts_give_an_all_nan_signal():
    bars = _bars(ZIGZAG[:5])
    log = proxy.alert_log(bars, proxy.ProxyParams(trend_period=20))
    assert log.empty and list(log.columns) == proxy.LOG_COLUMNS
    signal = proxy.trend_dmi_positions(bars, proxy.ProxyParams(trend_period=20))
    assert signal.shape == (5, 1) and signal.isna().all().all()
