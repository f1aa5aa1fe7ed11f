"""Walk-forward backtest of the knn_shadow flow: rolling retraining, gated forecasts, no look-ahead."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from trading_assets.adapters.replay.market_data import ReplayMarketData
from trading_assets.core.backtest import CashAndCosts, run_backtest
from trading_assets.core.bars import normalise_bars
from trading_assets.core.strategies import knn_forecast as knn
from trading_assets.core.strategies.knn_backtest import (
    NO_MODEL,
    PREDICTION_COLUMNS,
    WalkForwardParams,
    backtest_signals,
    walk_forward,
    walk_forward_panel,
    with_costs,
)

UTC = "UTC"
# Mon 2025-02-10 .. Wed 2025-02-12: three full sessions of replay minutes
FROM, TO = pd.Timestamp("2025-02-10", tz=UTC), pd.Timestamp("2025-02-13", tz=UTC)
TRADE_FROM = pd.Timestamp("2025-02-11 14:30", tz=UTC)  # Tuesday's open; Monday only trains
PARAMS = WalkForwardParams(train_bars=390)


@pytest.fixture(scope="module")
def minute_bars() -> pd.DataFrame:
    return ReplayMarketData().get_bars(["SPY", "TQQQ"], FROM, TO, "1min")


@pytest.fixture(scope="module")
def spy(minute_bars) -> pd.Series:
    return minute_bars.loc[minute_bars["symbol"] == "SPY", "close"]


@pytest.fixture(scope="module")
def walked(spy):
    return walk_forward(spy, PARAMS, TRADE_FROM)


def test_rows_from_start_with_model_ids_and_a_gate(walked, spy):
    preds, models = walked
    assert list(preds.columns) == PREDICTION_COLUMNS
    assert preds.index[0] == TRADE_FROM and len(preds) == (spy.index >= TRADE_FROM).sum() == 780
    # Monday trains the first model, so every traded bar has one
    assert preds["model_id"].notna().all() and (preds["reason"] != NO_MODEL).all()
    coverage = (~preds["abstained"]).mean()
    assert 0.3 < coverage < 1.0  # the gate refuses some bars, not most
    assert preds.loc[preds["abstained"], "predicted_return"].isna().all()
    assert preds.loc[~preds["abstained"], "predicted_return"].notna().all()
    # one model per 30-minute block, constant inside it, changing at :00 and :30 UTC
    assert len(models) == 26 and models["model_id"].is_unique
    per_block = preds.groupby(preds.index.floor("30min"))["model_id"]
    assert (per_block.nunique() == 1).all()
    assert list(per_block.first()) == list(models["model_id"])
    assert models["bars"].sum() == len(preds)
    assert models["predictions"].sum() == (~preds["abstained"]).sum()


def test_a_model_learns_only_from_before_its_block(walked):
    _, models = walked
    horizon = pd.Timedelta(minutes=3)
    # its last training row's target (3 minutes on) ends before the block's first bar
    assert (pd.to_datetime(models["trained_to"]) + horizon < models["trained_at"]).all()
    # rolling window: 390 bars back (Monday's close to Tuesday's first block spans the night)
    first = models.iloc[0]
    assert pd.Timestamp(first["trained_from"]) >= FROM
    assert first["n_train"] <= 390


def test_truncating_or_changing_the_future_leaves_earlier_rows_unchanged(spy, walked):
    full, _ = walked
    for cut in (pd.Timestamp("2025-02-11 17:13", tz=UTC), pd.Timestamp("2025-02-12 15:00", tz=UTC)):
        short, _ = walk_forward(spy[spy.index < cut], PARAMS, TRADE_FROM)
        pd.testing.assert_frame_equal(short, full[full.index < cut], check_exact=True)
        # a wildly different future changes nothing before it either
        shock = spy.where(spy.index < cut, spy * 1.07)
        other, _ = walk_forward(shock, PARAMS, TRADE_FROM)
        pd.testing.assert_frame_equal(other[other.index < cut], full[full.index < cut], check_exact=True)


def test_signals_follow_the_edge_and_the_session_close(walked):
    preds, _ = walked
    edge = PARAMS.edge
    r = preds["predicted_return"]
    local = preds.index.tz_convert("America/New_York")
    late = (local.hour == 15) & (local.minute >= 57)  # a 3-minute life would pass 16:00
    sig = preds["signal"]
    assert (sig[(r > edge) & ~late] == 1).all() and (sig[(r < -edge) & ~late] == -1).all()
    assert sig[(r.abs() <= edge) | r.isna() | late].isna().all()
    assert (sig == 1).sum() > 10 and (sig == -1).sum() > 10


def test_without_shorts_a_bearish_forecast_is_flat(spy, walked):
    preds, _ = walked
    longs, _ = walk_forward(spy, WalkForwardParams(train_bars=390, allow_short=False), TRADE_FROM)
    both = preds["signal"]
    assert (longs["signal"][both == -1] == 0).all()
    assert longs["signal"][both != -1].equals(both[both != -1])
    assert longs[["take_profit_price", "stop_loss_price"]][both == -1].isna().all().all()


def test_costs_raise_the_edge_a_trade_needs(spy, walked):
    preds, _ = walked
    costly, _ = walk_forward(spy, WalkForwardParams(train_bars=390, round_trip_cost=0.0004), TRADE_FROM)
    assert costly["signal"].notna().sum() < preds["signal"].notna().sum()
    traded = costly["signal"].isin([1.0, -1.0])
    assert (costly.loc[traded, "predicted_return"].abs() > 0.0006).all()


def test_brackets_are_plan_trades_levels(walked):
    preds, _ = walked
    rows = preds[preds["signal"].isin([1.0, -1.0])]
    assert len(rows) > 20
    for at, row in rows.iloc[::7].iterrows():
        prediction = knn.Prediction(row["model_id"], at, row["predicted_return"],
                                    row["mean_distance"], row["threshold"], row["reason"])
        plan = knn.plan_trade(prediction, row["price"], datetime.fromisoformat(at.isoformat()),
                              pd.Timedelta(minutes=3), PARAMS.trade)
        assert plan is not None
        assert (plan.side == knn.TradeSide.BUY) == (row["signal"] == 1)
        assert plan.limit == pytest.approx(row["take_profit_price"], rel=1e-12)
        assert plan.stop == pytest.approx(row["stop_loss_price"], rel=1e-12)


def test_expanding_window_trains_on_all_history(spy):
    preds, models = walk_forward(spy, WalkForwardParams(train_bars=390, expanding=True), TRADE_FROM)
    assert (pd.to_datetime(models["trained_from"]) == pd.to_datetime(models["trained_from"]).iloc[0]).all()
    assert models["n_train"].is_monotonic_increasing
    assert preds["model_id"].notna().all()


def test_no_model_before_enough_history(spy):
    preds, models = walk_forward(spy.iloc[:200], PARAMS)
    assert (preds["reason"].iloc[:30] == NO_MODEL).all()  # the first block has no past
    assert preds["model_id"].iloc[:30].isna().all() and preds["signal"].iloc[:30].isna().all()
    assert models["trained_at"].min() > spy.index[0]


def test_bad_params_are_refused():
    with pytest.raises(ValueError, match="train_bars"):
        WalkForwardParams(train_bars=12)
    with pytest.raises(ValueError, match="retrain_every"):
        WalkForwardParams(retrain_every=0)
    with pytest.raises(ValueError, match="min_edge"):
        WalkForwardParams(min_edge=-1.0)


@pytest.fixture(scope="module")
def backtested(minute_bars):
    costs = CashAndCosts(slippage_bps=0.5, commission_bps=0.1)  # cost-aware edge, as the asset's default
    return run_backtest(backtest_signals(minute_bars, with_costs(PARAMS, costs), start=TRADE_FROM), costs)


def test_panel_walk_covers_every_symbol(backtested):
    walk = backtested.extra["walk"]
    assert list(walk.signal.columns) == ["SPY", "TQQQ"] and len(walk.signal) == 780
    assert set(walk.predictions["symbol"]) == {"SPY", "TQQQ"}
    assert set(walk.models["symbol"]) == {"SPY", "TQQQ"} and len(walk.models) == 52
    assert 0 < walk.coverage < 1 and set(walk.coverage_by_symbol()) == {"SPY", "TQQQ"}
    levels = walk.take_profit.notna()
    assert levels.equals(walk.signal.isin([1.0, -1.0])) and levels.equals(walk.stop_loss.notna())


def test_backtest_ties_every_trade_to_its_model(backtested):
    result = backtested
    trades = result.trades
    assert len(trades) > 50
    assert trades["model_id"].str.startswith("knn-").all()
    assert np.sign(trades["predicted_return"]).eq(trades["direction"]).all()
    assert (trades["entry_time"] >= TRADE_FROM).all()
    closed = trades[trades["exit_reason"] != "open"]
    assert (closed["bars_held"] <= 3).all()
    assert set(closed["exit_reason"]) <= {"take_profit", "stop_loss", "time", "signal"}
    assert {"take_profit", "stop_loss", "time"} <= set(closed["exit_reason"])
    # the model of a trade is the one that predicted at its entry bar
    preds = result.extra["predictions"].reset_index(names="entry_time")
    joined = trades.merge(preds, on=["entry_time", "symbol"], suffixes=("", "_p"))
    assert (joined["model_id"] == joined["model_id_p"]).all()
    assert result.extra["params"].round_trip_cost == pytest.approx(2 * 0.6 / 1e4)
    assert result.stats["end_value"] == pytest.approx(100_000 + trades["pnl"].sum())
    # nothing is held into the night: entries end their 3-minute life by the close
    local_exit = closed["exit_time"].dt.tz_convert("America/New_York")
    assert (local_exit.dt.strftime("%H:%M") <= "15:59").all()


def _cycle_bars(n: int) -> pd.DataFrame:
    """Three minutes up 1%, three down 1%, repeated (a pattern a KNN can learn)."""
    i = np.arange(1, n)
    close = 100.0 * np.cumprod(np.concatenate([[1.0], np.where(np.isin(i % 6, (1, 2, 3)), 1.01, 0.99)]))
    open_ = np.concatenate([[close[0]], close[:-1]])
    index = pd.date_range("2025-04-01 08:00", periods=n, freq="1min", tz=UTC, name="timestamp")
    frame = pd.DataFrame({"symbol": "CYC", "open": open_, "high": np.maximum(open_, close),
                          "low": np.minimum(open_, close), "close": close, "volume": 1.0}, index=index)
    return normalise_bars(frame)


def test_a_learnable_pattern_makes_money():
    bars = _cycle_bars(600)
    # the STOP sits 3x the forecast away: this path dips 1% before a 1% forecast comes true
    params = WalkForwardParams(model=knn.Params(max_mean_distance=0.5), train_bars=240,
                               stop_multiple=3.0, session_exits=False)
    result = run_backtest(backtest_signals(bars, params, start=bars.index[300], size=0.01))
    stats = result.stats
    assert stats["trade_count"] > 30 and stats["win_rate"] > 0.95 and stats["total_return"] > 0.01
    assert result.extra["coverage"] == 1.0
    assert set(result.trades["exit_reason"]) <= {"take_profit", "time", "signal", "open"}


def test_panel_walk_is_the_per_symbol_walk(spy, walked):
    preds, _ = walked
    walk = walk_forward_panel(spy.to_frame("SPY"), PARAMS, TRADE_FROM)
    pd.testing.assert_series_equal(walk.signal["SPY"], preds["signal"], check_names=False)
    pd.testing.assert_series_equal(walk.take_profit["SPY"], preds["take_profit_price"], check_names=False)
    assert walk.coverage == pytest.approx((~preds["abstained"]).mean())
