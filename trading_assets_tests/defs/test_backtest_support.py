"""The helper every backtest asset shares: the range, the one warm-up rule, and what a
user reads in the UI (stats with the configured cash, long/short, New York times, the
last trades out of how many, a warning on annualised figures from a short window)."""

import re
from datetime import date

import dagster as dg
import pandas as pd
import pytest

from trading_assets.core import calendar
from trading_assets.defs.backtest_support import (
    TRADE_COLUMNS,
    session_range,
    trades_shown,
    warmup_start,
)
from trading_assets.defs.ema_concentration.backtest import ema_concentration_backtest_asset
from trading_assets.defs.fib_retracement.backtest import fib_retracement_backtest_asset
from trading_assets.defs.knn_shadow.backtest import knn_shadow_backtest
from trading_assets.defs.ma_crossover.backtest import ma_crossover_backtest_asset
from trading_assets.defs.resources import local_resources
from trading_assets.defs.trend_dmi.backtest import trend_dmi_backtest_asset

ALL = (ema_concentration_backtest_asset, ma_crossover_backtest_asset,
       fib_retracement_backtest_asset, trend_dmi_backtest_asset, knn_shadow_backtest)
NODE = ma_crossover_backtest_asset.node_def.name
NEW_YORK_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2} E[SD]T$")


def _open(day: str) -> pd.Timestamp:
    return calendar.session_open_close(date.fromisoformat(day))[0].tz_convert("UTC")


def test_warm_up_starts_at_the_open_of_the_session_that_many_sessions_back():
    start = _open("2025-01-21")  # the Tuesday after Martin Luther King Day
    assert warmup_start(start, 0) == start
    assert warmup_start(start, 1) == _open("2025-01-17")  # the holiday is skipped
    # the live EMA window: `lookback` sessions including the tick's own
    lookback = 8
    first = calendar.previous_sessions(date(2025, 1, 21), lookback)[0]
    assert warmup_start(start, lookback - 1) == _open(str(first))
    with pytest.raises(dg.Failure, match=">= 0"):
        warmup_start(start, -1)
    with pytest.raises(dg.Failure, match="cannot warm up"):
        warmup_start(start, 100_000)


def test_the_range_is_whole_new_york_sessions():
    start, end = session_range("2025-11-28", "2025-11-28")  # the day after Thanksgiving: 13:00 close
    assert start.tz_convert(calendar.TZ).strftime("%H:%M") == "09:30"
    assert end.tz_convert(calendar.TZ).strftime("%H:%M") == "13:00"
    with pytest.raises(dg.Failure, match="no NYSE sessions"):
        session_range("2025-02-15", "2025-02-16")  # a weekend
    with pytest.raises(dg.Failure, match="before its start"):
        session_range("2025-02-14", "2025-02-10")
    with pytest.raises(dg.Failure, match="look like"):
        session_range("14/02/2025", "2025-02-20")


def test_trades_shown_says_how_many_of_how_many_and_how_many_are_open():
    assert trades_shown(52, 1) == "last 20 of 52 trades (51 closed, 1 still open)"
    assert trades_shown(9, 1) == "all 9 trades (8 closed, 1 still open)"
    assert trades_shown(0, 0) == "no trades"


def _materialise(tmp_path, config: dict) -> tuple[dict, pd.DataFrame]:
    result = dg.materialize(
        [ma_crossover_backtest_asset], resources=local_resources(tmp_path),
        run_config=dg.RunConfig(ops={NODE: {"config": config}}),
    )
    [mat] = result.asset_materializations_for_node(NODE)
    return {k: v.value for k, v in mat.metadata.items()}, result.output_for_node(NODE)


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    config = {"start": "2025-01-02", "end": "2025-03-31", "symbols": ["AAPL", "MSFT", "SPY"],
              "allow_short": True, "init_cash": 50_000.0, "commission_bps": 1.0}
    return _materialise(tmp_path_factory.mktemp("long"), config)


def test_the_trades_preview_is_a_table_of_the_last_20_in_words_a_user_reads(long_run):
    meta, trades = long_run
    assert len(trades) > 20
    still_open = int((trades["exit_reason"] == "open").sum())
    assert meta["trades_shown"] == f"last 20 of {len(trades)} trades " \
                                   f"({len(trades) - still_open} closed, {still_open} still open)"
    table = meta["trades"]
    assert isinstance(table, dg.TableMetadataValue)
    assert [c.name for c in table.schema.columns] == TRADE_COLUMNS  # no bare 0..19 index column
    rows = [r.data for r in table.records]
    assert len(rows) == 20
    assert {r["direction"] for r in rows} == {"long", "short"}
    assert all(NEW_YORK_TIME.match(r["entry_time"]) and NEW_YORK_TIME.match(r["exit_time"])
               for r in rows)
    last = trades.iloc[-1]
    assert rows[-1]["entry_time"] == last["entry_time"].tz_convert(calendar.TZ).strftime("%Y-%m-%d %H:%M %Z")
    assert rows[-1]["pnl"] == round(last["pnl"], 2)  # money to the cent
    assert meta["dagster/row_count"] == len(trades)
    assert [c.name for c in meta["dagster/column_schema"].columns] == TRADE_COLUMNS


def test_stats_start_at_the_configured_cash_and_counts_add_up(long_run):
    meta, trades = long_run
    assert "| start_value | 50,000.00 USD |" in meta["stats"]
    assert meta["start_value"] == 50_000.0 and meta["currency"] == "USD"
    assert meta["end_value"] == round(meta["end_value"], 2)
    assert meta["end_value"] == pytest.approx(50_000 + trades["pnl"].sum(), abs=0.01)
    assert meta["trade_count"] + meta["open_trade_count"] == len(trades)
    assert f"{meta['open_trade_count']} more still open ({len(trades)} rows in trades)" in meta["stats"]
    # the strategy's parameters, not a second, unused account of 10,000
    assert meta["params"] == {"fast": 5, "slow": 20, "allow_short": True}
    assert meta["config"]["init_cash"] == 50_000.0
    # three months: annualised figures need no warning
    assert "annualised_warning" not in meta and "Warning" not in meta["stats"]


def test_annualised_figures_from_a_short_window_carry_a_warning(tmp_path):
    meta, _ = _materialise(tmp_path, {"start": "2025-02-10", "end": "2025-02-11",
                                      "symbols": ["AAPL"], "interval": "30min"})
    assert "annualised from 1.2 days of bars (less than 30)" in meta["annualised_warning"]
    cagr = next(line for line in meta["stats"].splitlines() if line.startswith("| cagr |"))
    assert "Warning" in cagr


def test_every_backtest_asset_is_tagged_described_for_users_and_linked_to_its_source():
    from trading_assets.definitions import defs

    loaded = {s.key: s for s in defs().resolve_all_asset_specs()}
    for asset in ALL:
        spec = loaded[asset.key]
        flow = asset.key.path[0]
        assert asset.key.path == [flow, "backtest"] and spec.group_name == flow
        assert {k: v for k, v in spec.tags.items() if not k.startswith("dagster/")} == {
            "flow": flow, "kind": "backtest"}
        assert "seed" not in (spec.description or "").lower()
        [reference] = spec.metadata["dagster/code_references"].code_references
        assert reference.file_path.endswith(f"defs/{flow}/backtest.py")
