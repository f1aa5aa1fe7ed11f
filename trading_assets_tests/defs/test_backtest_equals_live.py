"""Backtest = live: the EMA concentration flow's Dagster assets, ticking through a day with
the paper broker, and the backtester over the same bars and parameters agree to the cent:
every fill (tick, side, quantity, price, commission) and the equity after every tick.

Replay data is deterministic; on 2025-02-12 between 11:00 and 14:00 New York TQQQ turns
bullish and bearish twice, so the comparison covers two round trips with costs.
"""

from datetime import date

import dagster as dg
import pandas as pd
import pytest

from trading_assets.core import calendar
from trading_assets.core.backtest import CashAndCosts, run_backtest
from trading_assets.core.strategies.ema_concentration import Params, backtest_signals
from trading_assets.defs.ema_concentration import assets as flow
from trading_assets.defs.partitions import PARTITION_FMT, bar_window, session_partition_keys
from trading_assets.defs.resources import local_resources
from trading_assets.resources.brokers import PaperBrokerResource

TICKS = session_partition_keys(date(2025, 2, 12))[3:10]  # 11:00 ... 14:00 New York
SLIPPAGE_BPS, COMMISSION_PER_SHARE, CASH = 5.0, 0.005, 100_000.0
CENT = 0.005


def _key(ts: pd.Timestamp) -> str:
    return ts.tz_convert(calendar.TZ).strftime(PARTITION_FMT)


@pytest.fixture(scope="module")
def live_and_backtest(tmp_path_factory):
    base = tmp_path_factory.mktemp("live")
    broker = PaperBrokerResource(state_path=str(base / "paper.sqlite"), starting_cash=CASH,
                                 slippage_bps=SLIPPAGE_BPS,
                                 commission_per_share=COMMISSION_PER_SHARE)
    resources = local_resources(base, ema_concentration_broker=broker)
    for key in TICKS:
        result = dg.materialize(flow.FLOW_ASSETS, resources=resources, partition_key=key)
        assert result.success, key
    ledger = resources["ledger"].get()
    fills = ledger.transactions(flow=flow.FLOW)
    fills = fills[fills["kind"] == "fill"].reset_index(drop=True)
    curve = ledger.equity_curve(flow.FLOW)

    settings = resources["ema_concentration"]
    params = Params(settings.target, settings.fast, settings.slow, settings.buying_power_fraction)
    start, _ = bar_window(TICKS[0])
    _, end = bar_window(TICKS[-1])
    first = calendar.previous_sessions(date(2025, 2, 12), settings.lookback_sessions)[0]
    fetch_from = calendar.session_open_close(first)[0].tz_convert("UTC")
    bars = resources["market_data"].get().get_bars([params.target], fetch_from, end, "30min")
    signals = backtest_signals(bars, params, start=start, end=end,
                               lookback_sessions=settings.lookback_sessions)
    result = run_backtest(signals, CashAndCosts(init_cash=CASH, slippage_bps=SLIPPAGE_BPS,
                                                commission_per_share=COMMISSION_PER_SHARE))
    return fills, curve, broker.get(), result


def _backtest_fills(result) -> pd.DataFrame:
    rows = []
    for tr in result.trades.itertuples():
        rows.append((_key(tr.entry_time), tr.symbol, "buy", tr.qty, tr.entry_price))
        if tr.exit_reason != "open":
            rows.append((_key(tr.exit_time), tr.symbol, "sell", tr.qty, tr.exit_price))
    return pd.DataFrame(rows, columns=["partition_key", "symbol", "side", "qty", "price"])


def test_the_window_has_round_trips_to_compare(live_and_backtest):
    fills, *_ = live_and_backtest
    assert list(fills["side"]).count("sell") >= 2


def test_every_fill_agrees_to_the_cent(live_and_backtest):
    fills, _, _, result = live_and_backtest
    expected = _backtest_fills(result)
    live = fills[["partition_key", "symbol", "side", "qty", "price"]]
    assert live[["partition_key", "symbol", "side", "qty"]].values.tolist() == \
        expected[["partition_key", "symbol", "side", "qty"]].values.tolist()
    assert (live["price"] - expected["price"]).abs().max() <= CENT
    # commission: per share on every fill, in both worlds
    live_commission = fills["commission"].sum()
    assert live_commission == pytest.approx(result.trades["commission"].sum(), abs=CENT)


def test_equity_after_every_tick_and_at_the_end_agrees_to_the_cent(live_and_backtest):
    _, curve, broker, result = live_and_backtest
    backtest_equity = pd.Series(result.equity.to_numpy(), index=[_key(t) for t in result.equity.index])
    live_equity = curve.set_index("partition_key")["equity"]
    assert list(live_equity.index) == TICKS == list(backtest_equity.index)
    assert (live_equity - backtest_equity).abs().max() <= CENT
    assert broker.account().equity == pytest.approx(result.equity.iloc[-1], abs=CENT)
