"""Backtest = live for the IG Fibonacci flow: its Dagster assets ticking hour by hour with
the paper broker (brackets simulated at the broker on later bars) and the backtester over
the same bars agree to the cent: every entry, every take-profit, stop-loss and reversal
exit (tick, side, size, price, commission) and the equity after every tick.

Replay data is deterministic; over the FX trade dates 2025-11-13 and 2025-11-14 the four
markets enter several times, with take-profits, stop-losses and a reversal among the exits
(the first test says so, so the comparison never passes on an empty window).
"""

from datetime import date

import dagster as dg
import pandas as pd
import pytest

from trading_assets.core import fx_hours
from trading_assets.core.backtest import CashAndCosts, run_backtest
from trading_assets.core.execution import parse_bracket_leg_id
from trading_assets.core.strategies.fib_retracement import backtest_signals
from trading_assets.defs.fib_retracement import assets as flow
from trading_assets.defs.fib_retracement.partitions import fx_bar_window, trade_date_keys
from trading_assets.defs.fib_retracement.settings import FibInstrument, FibRetracementSettings
from trading_assets.defs.partitions import PARTITION_FMT
from trading_assets.defs.resources import local_resources
from trading_assets.resources.brokers import PaperBrokerResource

EPICS = ["CS.D.AUDUSD.MINI.IP", "CS.D.EURUSD.MINI.IP", "CS.D.GBPUSD.MINI.IP", "CS.D.USDJPY.MINI.IP"]
TICKS = trade_date_keys(date(2025, 11, 13)) + trade_date_keys(date(2025, 11, 14))
SIZE, SLIPPAGE_BPS, COMMISSION_PER_SHARE, CASH = 100.0, 2.0, 0.01, 100_000.0
CENT = 0.005


def _key(ts: pd.Timestamp) -> str:
    return ts.tz_convert(fx_hours.TZ).strftime(PARTITION_FMT)


@pytest.fixture(scope="module")
def live_and_backtest(tmp_path_factory):
    base = tmp_path_factory.mktemp("live")
    broker = PaperBrokerResource(state_path=str(base / "paper.sqlite"), starting_cash=CASH,
                                 slippage_bps=SLIPPAGE_BPS, commission_per_share=COMMISSION_PER_SHARE,
                                 allow_short=True)
    settings = FibRetracementSettings(instruments=[FibInstrument(epic=e, size=SIZE) for e in EPICS])
    resources = local_resources(base, fib_retracement_broker=broker, fib_retracement=settings)
    instance = dg.DagsterInstance.ephemeral()
    for key in TICKS:
        result = dg.materialize(flow.FLOW_ASSETS, resources=resources, partition_key=key, instance=instance)
        assert result.success, key
    ledger = resources["ledger"].get()
    fills = ledger.transactions(flow=flow.FLOW)
    fills = fills[fills["kind"] == "fill"].sort_values(["partition_key", "client_order_id"]).reset_index(drop=True)
    curve = ledger.equity_curve(flow.FLOW)

    start, _ = fx_bar_window(TICKS[0])
    _, end = fx_bar_window(TICKS[-1])
    bars = resources["fib_retracement_prices"].get().get_bars(EPICS, start - pd.Timedelta(days=7), end, "1h")
    signals = backtest_signals(bars, settings.params(), start=start, end=end, size=SIZE, size_mode="shares")
    result = run_backtest(signals, CashAndCosts(init_cash=CASH, slippage_bps=SLIPPAGE_BPS,
                                                commission_per_share=COMMISSION_PER_SHARE))
    return fills, curve, broker.get(), result


def _backtest_fills(result) -> pd.DataFrame:
    rows = []
    for tr in result.trades.itertuples():
        side, other = ("buy", "sell") if tr.direction > 0 else ("sell", "buy")
        rows.append((_key(tr.entry_time), tr.symbol, side, tr.qty, tr.entry_price, "entry"))
        if tr.exit_reason != "open":
            rows.append((_key(tr.exit_time), tr.symbol, other, tr.qty, tr.exit_price, tr.exit_reason))
    frame = pd.DataFrame(rows, columns=["partition_key", "symbol", "side", "qty", "price", "why"])
    return frame.sort_values(["partition_key", "symbol", "why"]).reset_index(drop=True)


def _live_fills(fills: pd.DataFrame) -> pd.DataFrame:
    def why(cid: str) -> str:
        leg = parse_bracket_leg_id(cid)
        return leg[1] if leg else "order"

    frame = fills.assign(why=fills["client_order_id"].map(why))
    return frame.sort_values(["partition_key", "symbol", "why"]).reset_index(drop=True)


def test_the_window_has_entries_and_every_kind_of_exit(live_and_backtest):
    _, _, _, result = live_and_backtest
    reasons = set(result.trades["exit_reason"])
    assert len(result.trades) >= 5 and {"take_profit", "stop_loss", "signal"} <= reasons


def test_every_fill_agrees_to_the_cent_brackets_included(live_and_backtest):
    fills, _, _, result = live_and_backtest
    expected = _backtest_fills(result)
    live = _live_fills(fills)
    columns = ["partition_key", "symbol", "side", "qty"]
    # same ticks, markets, sides and sizes, fill for fill ...
    assert sorted(map(tuple, live[columns].values.tolist())) == sorted(map(tuple, expected[columns].values.tolist()))
    # ... and the bracket exits are the legs that fired at the broker, at the tick the backtester exits
    live_brackets = live[live["why"] != "order"][[*columns, "why"]].values.tolist()
    expected_brackets = expected[expected["why"].isin(["take_profit", "stop_loss"])][[*columns, "why"]]
    assert sorted(map(tuple, live_brackets)) == sorted(map(tuple, expected_brackets.values.tolist()))
    order = [*columns, "price"]
    live_prices = live.sort_values(order)["price"].to_numpy()
    expected_prices = expected.sort_values(order)["price"].to_numpy()
    assert abs(live_prices - expected_prices).max() <= CENT
    assert fills["commission"].sum() == pytest.approx(result.trades["commission"].sum(), abs=CENT)


def test_equity_after_every_tick_and_at_the_end_agrees_to_the_cent(live_and_backtest):
    _, curve, broker, result = live_and_backtest
    backtest_equity = pd.Series(result.equity.to_numpy(), index=[_key(t) for t in result.equity.index])
    live_equity = curve.set_index("partition_key")["equity"]
    assert list(live_equity.index) == TICKS == list(backtest_equity.index)
    assert (live_equity - backtest_equity).abs().max() <= CENT
    assert broker.account().equity == pytest.approx(result.equity.iloc[-1], abs=CENT)
