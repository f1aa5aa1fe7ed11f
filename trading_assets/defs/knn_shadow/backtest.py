"""The KNN shadow flow's walk-forward backtest over 1-minute bars.

Models are retrained every `retrain_every` minutes on the bars before (the sessions
before `start` are fetched as warm-up, so trading starts with a model), every forecast
passes the nearness gate or abstains, and every trade has a LIMIT, a STOP and a 3-minute
life and names the model that opened it. Besides the shared backtest metadata it shows
the models used, the trades per model and the gate's coverage.
"""

import time

import dagster as dg
import pandas as pd

from trading_assets.core import calendar
from trading_assets.core.backtest import run_backtest
from trading_assets.core.strategies import knn_backtest as walk
from trading_assets.core.strategies import knn_forecast as knn
from trading_assets.defs.backtest_support import (
    TRADE_COLUMNS,
    BacktestRunConfig,
    backtest_asset,
    backtest_output,
    bad_params_fail,
    fetch_bars,
)
from trading_assets.defs.reports import frame_markdown
from trading_assets.resources.base import MarketDataResource

FLOW = knn.FLOW
KNN_TRADE_COLUMNS = [*TRADE_COLUMNS, "model_id", "predicted_return"]


class KnnShadowBacktestConfig(BacktestRunConfig):
    """Date range, costs, watchlist, model and trading rule.

    The defaults run in seconds: two sessions of SPY after two warm-up sessions.
    """

    start: str = "2025-02-12"
    end: str = "2025-02-13"
    symbols: list[str] = ["SPY"]  # noqa: RUF012 (pydantic copies defaults)
    warmup_sessions: int = 2  # sessions before `start` that only train models
    # model (knn_forecast.Params); bars are 1 minute, so horizon 3 = the 3-minute life
    tails: list[int] = [1, 3, 5, 10]  # noqa: RUF012
    n_lags: int = 0
    horizon: int = 3
    n_neighbors: int = 5
    max_mean_distance: float | None = None  # None: calibrated per model (distance_quantile)
    distance_quantile: float = 0.8
    # retraining
    train_bars: int = 780
    retrain_every: int = 30
    expanding: bool = False
    # trading rule
    min_edge: float = 0.0002  # |predicted 3-minute return| needed on top of costs
    cost_aware: bool = True  # add the round trip's slippage and commission (bps) to min_edge
    stop_multiple: float = 1.0
    allow_short: bool = True
    session_exits: bool = True
    size: float = 1.0
    slippage_bps: float = 0.5

    def walk_params(self) -> walk.WalkForwardParams:
        model = knn.Params(
            tails=tuple(self.tails), n_lags=self.n_lags, horizon=self.horizon, bar="1min",
            n_neighbors=self.n_neighbors, max_mean_distance=self.max_mean_distance,
            distance_quantile=self.distance_quantile,
        )
        params = walk.WalkForwardParams(
            model=model, train_bars=self.train_bars, retrain_every=self.retrain_every,
            expanding=self.expanding, min_edge=self.min_edge, stop_multiple=self.stop_multiple,
            allow_short=self.allow_short, session_exits=self.session_exits,
        )
        return walk.with_costs(params, self.costs()) if self.cost_aware else params


def _models_markdown(models: pd.DataFrame, trades: pd.DataFrame) -> str:
    """Every model the run used: when it was trained (New York time), on how much, and
    what it did."""
    opened = trades.groupby("model_id").size() if len(trades) else pd.Series(dtype="int64")
    table = models.loc[:, ["symbol", "model_id", "trained_at", "n_train", "threshold", "bars",
                           "predictions"]].copy()
    table["trades"] = table["model_id"].map(opened).fillna(0).astype(int)
    table["trained_at"] = pd.to_datetime(table["trained_at"]).dt.tz_convert(calendar.TZ).dt.strftime(
        "%Y-%m-%d %H:%M %Z")
    return frame_markdown(table.set_index("symbol"), max_rows=40, floatfmt=".3f")


@backtest_asset(
    FLOW,
    description="Walk-forward backtest of the KNN shadow models over 1-minute bars: a model "
                "retrained every `retrain_every` minutes on the bars before, a forecast only "
                "when the nearest past patterns are near enough, trades with a limit, a stop "
                "and a 3-minute life, each tied to the model that made it.",
)
def knn_shadow_backtest(
    context: dg.AssetExecutionContext,
    config: KnnShadowBacktestConfig,
    market_data: MarketDataResource,
) -> dg.Output[pd.DataFrame]:
    t0 = time.perf_counter()
    with bad_params_fail(FLOW):
        params = config.walk_params()
    window = fetch_bars(context, market_data, config, config.symbols, "1min", config.warmup_sessions)
    with bad_params_fail(FLOW):  # size
        signals = walk.backtest_signals(window.bars, params, start=window.start, end=window.end,
                                        size=config.size)
    result = run_backtest(signals, config.costs())
    models: pd.DataFrame = result.extra["models"]
    trades = result.trades
    used = list(dict.fromkeys(models["model_id"]))
    by_model = trades["model_id"].value_counts().to_dict() if len(trades) else {}
    context.log.info(f"{len(used)} models, coverage {result.extra['coverage']:.1%}, "
                     f"{len(trades)} trades")
    return backtest_output(
        result, config, flow=FLOW, t0=t0, columns=KNN_TRADE_COLUMNS,
        coverage=dg.MetadataValue.float(round(float(result.extra["coverage"]), 6)),
        coverage_by_symbol=dg.MetadataValue.json(result.extra["walk"].coverage_by_symbol()),
        model_count=len(used),
        model_ids=dg.MetadataValue.json(used),
        trades_by_model=dg.MetadataValue.json({str(k): int(v) for k, v in by_model.items()}),
        models=dg.MetadataValue.md(_models_markdown(models, trades)),
        params=dg.MetadataValue.json({
            **config.model_dump(exclude=set(BacktestRunConfig.model_fields) | {"size"}),
            "edge": params.edge, "round_trip_cost": params.round_trip_cost,
        }),
    )
