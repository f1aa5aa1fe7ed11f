"""The knn_shadow backtest asset through Dagster: config, replay minutes, what the UI shows."""

import base64
import re

import dagster as dg
import pandas as pd
import pytest

from trading_assets.defs.knn_shadow.backtest import knn_shadow_backtest
from trading_assets.resources.io_managers import LocalParquetIOManager
from trading_assets.resources.market_data import ReplayMarketDataResource

NODE = knn_shadow_backtest.node_def.name


def _materialise(tmp_path, config: dict | None = None) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [knn_shadow_backtest],
        resources={"market_data": ReplayMarketDataResource(),
                   "io_manager": LocalParquetIOManager(base_dir=str(tmp_path))},
        run_config=dg.RunConfig(ops={NODE: {"config": config or {}}}),
        raise_on_error=False,
    )


def _metadata(result: dg.ExecuteInProcessResult) -> dict:
    [mat] = result.asset_materializations_for_node(NODE)
    return {k: v.value for k, v in mat.metadata.items()}


def _failure(result: dg.ExecuteInProcessResult) -> str:
    failure = next(e for e in result.all_events if e.is_step_failure)
    return str(failure.event_specific_data.error.message)


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    base = tmp_path_factory.mktemp("knn_backtest")
    return base, _materialise(base)


def test_default_run_shows_stats_equity_png_models_and_coverage(default_run):
    base, result = default_run
    assert result.success
    meta = _metadata(result)
    for stat in ("total_return", "sharpe", "max_drawdown", "win_rate", "exposure", "trade_count"):
        assert f"| {stat} |" in meta["stats"]
    png = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)\)", meta["equity_curve"])
    assert png and base64.b64decode(png.group(1)).startswith(b"\x89PNG\r\n\x1a\n")
    assert 0.0 < meta["coverage"] < 1.0 and set(meta["coverage_by_symbol"]) == {"SPY"}
    # two sessions, a model per 30 minutes
    assert meta["model_count"] == len(meta["model_ids"]) == 26
    assert all(m.startswith("knn-") for m in meta["model_ids"])
    assert "| model_id |" in meta["models"] and meta["model_ids"][0] in meta["models"]
    assert meta["config"]["max_bars"] == 3 and meta["config"]["fill"] == "close"
    assert meta["params"]["edge"] == pytest.approx(0.0002 + 2 * 0.5 / 1e4)  # cost-aware
    # the trades, each tied to a model the run used, are the stored value
    trades = result.output_for_node(NODE)
    assert len(trades) == meta["trade_count"] + (trades["exit_reason"] == "open").sum() > 10
    assert set(trades["model_id"]) <= set(meta["model_ids"])
    assert sum(meta["trades_by_model"].values()) == len(trades)
    days = trades["entry_time"].dt.tz_convert("America/New_York").dt.date.astype(str)
    assert days.between("2025-02-12", "2025-02-13").all()
    assert (trades.loc[trades["exit_reason"] != "open", "bars_held"] <= 3).all()
    assert meta["end_value"] == pytest.approx(100_000 + trades["pnl"].sum())
    stored = pd.read_parquet(base / "knn_shadow" / "backtest" / "__unpartitioned__.parquet")
    assert list(stored["model_id"]) == list(trades["model_id"])


def test_config_picks_symbols_range_and_rule(tmp_path):
    config = {"start": "2025-02-13", "end": "2025-02-13", "symbols": ["SPY", "QQQ"],
              "warmup_sessions": 1, "train_bars": 390, "allow_short": False,
              "commission_bps": 1.0, "retrain_every": 60}
    result = _materialise(tmp_path, config)
    assert result.success
    meta = _metadata(result)
    trades = result.output_for_node(NODE)
    assert set(trades["symbol"]) <= {"SPY", "QQQ"} and len(trades) > 0
    assert (trades["direction"] == 1).all()  # long only
    assert meta["model_count"] == 2 * 7  # hourly models, one session, two symbols
    assert meta["params"]["edge"] == pytest.approx(0.0002 + 2 * 1.5 / 1e4)
    assert meta["params"]["symbols"] == ["SPY", "QQQ"]


def test_bad_parameters_and_ranges_fail_clearly(tmp_path):
    result = _materialise(tmp_path, {"train_bars": 10})
    assert not result.success and "bad knn_shadow backtest parameters" in _failure(result)
    result = _materialise(tmp_path, {"start": "2025-02-14", "end": "2025-02-10"})
    assert not result.success and "before its start" in _failure(result)


def test_the_asset_is_in_the_flow_group_and_the_code_location():
    assert {k.to_user_string(): g for k, g in knn_shadow_backtest.group_names_by_key.items()} == {
        "knn_shadow/backtest": "knn_shadow"}
    from trading_assets.definitions import defs

    keys = {k.to_user_string() for k in defs().resolve_asset_graph().get_all_asset_keys()}
    assert "knn_shadow/backtest" in keys
