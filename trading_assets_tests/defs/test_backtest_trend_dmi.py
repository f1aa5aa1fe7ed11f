"""The trend_dmi backtest asset through Dagster: config, resources, metadata, trades."""

import base64
import re

import dagster as dg
import pandas as pd
import pytest

from trading_assets.core.strategies import trend_dmi_alerts as proxy
from trading_assets.defs.trend_dmi.backtest import trend_dmi_backtest_asset
from trading_assets.resources.io_managers import LocalParquetIOManager
from trading_assets.resources.market_data import ReplayMarketDataResource

NODE = trend_dmi_backtest_asset.node_def.name
RANGE = {"start": "2025-02-03", "end": "2025-02-21"}


def _materialise(tmp_path, config: dict) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [trend_dmi_backtest_asset],
        resources={"market_data": ReplayMarketDataResource(),
                   "io_manager": LocalParquetIOManager(base_dir=str(tmp_path))},
        run_config=dg.RunConfig(ops={NODE: {"config": config}}),
        raise_on_error=False,
    )


def _metadata(result: dg.ExecuteInProcessResult) -> dict:
    [mat] = result.asset_materializations_for_node(NODE)
    return {k: v.value for k, v in mat.metadata.items()}


def test_trend_dmi_backtest_shows_stats_and_equity_png(tmp_path):
    config = {**RANGE, "symbols": ["SPY", "QQQ"], "slippage_bps": 2.0}
    result = _materialise(tmp_path, config)
    assert result.success
    meta = _metadata(result)
    for stat in ("total_return", "cagr", "sharpe", "max_drawdown", "win_rate", "exposure",
                 "trade_count"):
        assert f"| {stat} |" in meta["stats"]
    match = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)\)", meta["equity_curve"])
    assert match and base64.b64decode(match.group(1)).startswith(b"\x89PNG\r\n\x1a\n")

    trades = result.output_for_node(NODE)
    assert set(trades["symbol"]) == {"SPY", "QQQ"}
    closed = trades[trades["exit_reason"] != "open"]
    assert meta["trade_count"] == len(closed) > 0
    assert set(trades["direction"]) == {1, -1}  # long and short, as the seed trades
    days = trades["entry_time"].dt.tz_convert("America/New_York").dt.date.astype(str)
    assert days.between(RANGE["start"], RANGE["end"]).all()
    assert meta["end_value"] == pytest.approx(100_000 + trades["pnl"].sum())
    assert meta["config"]["fill"] == "close" and meta["config"]["slippage_bps"] == 2.0
    assert meta["params"] == {"trend_period": 20, "dmi_period": 14, "interval": "30min",
                              "warmup_sessions": 5}
    counts = meta["alert_counts"]
    assert counts["trend_flips"] > 0 and counts["di_crosses"] > 0
    # each entry comes from an OPEN action of the state machine (reversals included; two
    # OPENs on one bar, a re-entry then a flip, net to one fill)
    assert 0 < len(trades) <= counts.get("OPEN_LONG", 0) + counts.get("OPEN_SHORT", 0)
    assert "EMA(20)" in meta["proxy"]
    assert "| symbol | bar_time | kind |" in meta["alerts"]
    # the IO manager stored the trades
    stored = pd.read_parquet(tmp_path / "trend_dmi" / "backtest" / "__unpartitioned__.parquet")
    assert len(stored) == len(trades)


def test_trend_dmi_backtest_is_the_state_machine_over_the_proxy_alerts(tmp_path):
    config = {**RANGE, "symbols": ["AAPL"], "interval": "1h", "trend_period": 10,
              "dmi_period": 7}
    result = _materialise(tmp_path, config)
    assert result.success
    trades = result.output_for_node(NODE)
    assert len(trades) > 0
    bars = ReplayMarketDataResource().get().get_bars(
        ["AAPL"], pd.Timestamp("2025-01-27 14:30", tz="UTC"),
        pd.Timestamp("2025-02-21 21:00", tz="UTC"), "1h")
    start = pd.Timestamp("2025-02-03 14:30", tz="UTC")
    log = proxy.alert_log(bars, proxy.ProxyParams(10, 7, "1h"), start=start)
    opens = log[log["actions"].str.contains("OPEN")]
    assert list(trades["entry_time"]) == list(opens.groupby("bar_time").size().index)


def test_bad_parameters_fail_the_run_with_a_message(tmp_path):
    result = _materialise(tmp_path, {**RANGE, "dmi_period": 1})
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "dmi_period" in failure.event_specific_data.error.message


def test_trend_dmi_backtest_is_in_the_flow_group_and_the_code_location():
    assert {k.to_user_string(): g for k, g in trend_dmi_backtest_asset.group_names_by_key.items()} \
        == {"trend_dmi/backtest": "trend_dmi"}
    from trading_assets.definitions import defs

    keys = {k.to_user_string() for k in defs().resolve_asset_graph().get_all_asset_keys()}
    assert "trend_dmi/backtest" in keys
