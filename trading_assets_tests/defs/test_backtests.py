"""The backtest assets through Dagster: config, resources, output and what the UI shows."""

import base64
import re

import dagster as dg
import pandas as pd
import pytest

from trading_assets.adapters.replay.market_data import ReplayMarketData
from trading_assets.core.strategies import fib_retracement as fib
from trading_assets.defs.ema_concentration.backtest import ema_concentration_backtest_asset
from trading_assets.defs.ema_concentration.settings import EmaConcentrationSettings
from trading_assets.defs.fib_retracement.backtest import fib_retracement_backtest_asset
from trading_assets.defs.ma_crossover.backtest import ma_crossover_backtest_asset
from trading_assets.defs.resources import local_resources

# replay data: TQQQ turns bullish and bearish several times in this week (see test_backtest)
RANGE = {"start": "2025-02-10", "end": "2025-02-14"}


def _materialise(asset, tmp_path, config: dict, **resource_overrides) -> dg.ExecuteInProcessResult:
    resources = local_resources(tmp_path, **resource_overrides)
    return dg.materialize(
        [asset], resources=resources, raise_on_error=False,
        run_config=dg.RunConfig(ops={asset.node_def.name: {"config": config}}),
    )


def _metadata(result: dg.ExecuteInProcessResult, asset) -> dict:
    [mat] = result.asset_materializations_for_node(asset.node_def.name)
    return {k: v.value for k, v in mat.metadata.items()}


def _png(markdown: str) -> bytes:
    match = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert match, "no embedded PNG"
    return base64.b64decode(match.group(1))


def test_ema_concentration_backtest_shows_stats_table_and_equity_png(tmp_path):
    result = _materialise(ema_concentration_backtest_asset, tmp_path,
                          {**RANGE, "slippage_bps": 5.0, "commission_per_share": 0.005})
    assert result.success
    meta = _metadata(result, ema_concentration_backtest_asset)
    for stat in ("total_return", "cagr", "sharpe", "max_drawdown", "win_rate", "exposure",
                 "trade_count"):
        assert f"| {stat} |" in meta["stats"]
    assert _png(meta["equity_curve"]).startswith(b"\x89PNG\r\n\x1a\n")
    trades = result.output_for_node(ema_concentration_backtest_asset.node_def.name)
    closed = trades[trades["exit_reason"] != "open"]
    assert meta["trade_count"] == len(closed) > 0
    assert set(trades["symbol"]) == {"TQQQ"} and (trades["direction"] == 1).all()
    # every trade lies inside the configured sessions (New York dates)
    days = trades["entry_time"].dt.tz_convert("America/New_York").dt.date.astype(str)
    assert days.between(RANGE["start"], RANGE["end"]).all()
    assert meta["end_value"] == pytest.approx(100_000 + trades["pnl"].sum())
    assert meta["config"]["slippage_bps"] == 5.0


def test_ema_concentration_backtest_takes_live_settings_unless_overridden(tmp_path):
    live = EmaConcentrationSettings(fast=6, slow=15, lookback_sessions=5)
    result = _materialise(ema_concentration_backtest_asset, tmp_path, RANGE,
                          ema_concentration=live)
    params = _metadata(result, ema_concentration_backtest_asset)["params"]
    assert (params["fast"], params["slow"], params["lookback_sessions"]) == (6, 15, 5)
    result = _materialise(ema_concentration_backtest_asset, tmp_path, {**RANGE, "fast": 8},
                          ema_concentration=live)
    assert _metadata(result, ema_concentration_backtest_asset)["params"]["fast"] == 8


def test_backtest_range_must_run_forwards(tmp_path):
    result = _materialise(ema_concentration_backtest_asset, tmp_path,
                          {"start": "2025-02-14", "end": "2025-02-10"})
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "before its start" in str(failure.event_specific_data.error.message)


def test_ma_crossover_backtest_over_a_watchlist(tmp_path):
    config = {"start": "2025-01-02", "end": "2025-02-28", "symbols": ["AAPL", "MSFT"],
              "commission_bps": 1.0}
    result = _materialise(ma_crossover_backtest_asset, tmp_path, config)
    assert result.success
    meta = _metadata(result, ma_crossover_backtest_asset)
    trades = result.output_for_node(ma_crossover_backtest_asset.node_def.name)
    assert set(trades["symbol"]) == {"AAPL", "MSFT"}
    assert (trades["direction"] == 1).all()  # long only unless allow_short
    assert meta["end_value"] == pytest.approx(100_000 + trades["pnl"].sum())
    assert _png(meta["equity_curve"]).startswith(b"\x89PNG")


def test_fib_backtest_enters_on_signals_and_exits_at_their_own_brackets(tmp_path):
    config = {"start": "2025-01-02", "end": "2025-03-31", "symbols": ["SPY"]}
    result = _materialise(fib_retracement_backtest_asset, tmp_path, config)
    assert result.success
    trades = result.output_for_node(fib_retracement_backtest_asset.node_def.name)
    bars = ReplayMarketData().get_bars(["SPY"], pd.Timestamp("2025-01-02 14:30", tz="UTC"),
                                       pd.Timestamp("2025-04-01", tz="UTC"), "1h")
    history = fib.signal_history(bars, fib.Params())
    assert len(trades) >= 2
    for tr in trades.itertuples():
        row = history.loc[tr.entry_time]
        assert row["signal"] == ("buy" if tr.direction > 0 else "sell")
        assert tr.entry_price == pytest.approx(row["entry"])  # the signal bar's close
        if tr.exit_reason == "take_profit":  # at the level, or better on a gap open
            assert tr.direction * (tr.exit_price - row["take_profit"]) >= -1e-9
        if tr.exit_reason == "stop_loss":  # at the level, or worse on a gap open
            assert tr.direction * (tr.exit_price - row["stop_loss"]) <= 1e-9
    assert {"take_profit", "stop_loss"} & set(trades["exit_reason"])


def test_backtest_assets_are_in_their_flow_groups():
    assets = (ema_concentration_backtest_asset, ma_crossover_backtest_asset,
              fib_retracement_backtest_asset)
    groups = {key.to_user_string(): group
              for asset in assets for key, group in asset.group_names_by_key.items()}
    assert groups == {"ema_concentration/backtest": "ema_concentration",
                      "ma_crossover/backtest": "ma_crossover",
                      "fib_retracement/backtest": "fib_retracement"}


def test_the_code_location_loads_the_backtest_assets():
    from trading_assets.definitions import defs

    keys = {k.to_user_string() for k in defs().resolve_asset_graph().get_all_asset_keys()}
    assert {"ema_concentration/backtest", "ma_crossover/backtest",
            "fib_retracement/backtest"} <= keys
