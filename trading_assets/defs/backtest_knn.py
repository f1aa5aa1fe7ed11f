"""Backtest asset of the `knn_shadow` flow (seed 004): a walk-forward run over 1-minute
bars from the `market_data` resource with `core.strategies.knn_backtest`.

Models are retrained every `retrain_every` minutes on the bars before (the sessions
before `start` are fetched as warm-up, so trading starts with a model), every forecast
passes the nearness gate or abstains, and every trade has a LIMIT, a STOP and a 3-minute
life and names the model that opened it. The value is the trades; the metadata shows
the stats table, the equity curve (PNG), the models used and the gate's coverage.
Not partitioned: a backtest is one run over a chosen range.
"""

import time

import dagster as dg
import pandas as pd

from trading_assets.core import calendar
from trading_assets.core.strategies import knn_backtest as walk
from trading_assets.core.strategies import knn_forecast as knn
from trading_assets.defs.backtests import TRADE_COLUMNS, _output, _session_range
from trading_assets.defs.reports import frame_markdown
from trading_assets.defs.resources import MarketDataResource

KNN_TRADE_COLUMNS = [*TRADE_COLUMNS, "model_id", "predicted_return"]


class KnnShadowBacktestConfig(dg.Config):
    """Date range (New York session dates, inclusive), watchlist, model and trading rule.

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
    cost_aware: bool = True  # add the round trip's slippage and commission to min_edge
    stop_multiple: float = 1.0
    allow_short: bool = True
    session_exits: bool = True
    # simulation
    size: float = 1.0
    slippage_bps: float = 0.5
    commission_bps: float = 0.0
    init_cash: float = 100_000.0

    def walk_params(self) -> walk.WalkForwardParams:
        model = knn.Params(
            tails=tuple(self.tails), n_lags=self.n_lags, horizon=self.horizon, bar="1min",
            n_neighbors=self.n_neighbors, max_mean_distance=self.max_mean_distance,
            distance_quantile=self.distance_quantile,
        )
        return walk.WalkForwardParams(
            model=model, train_bars=self.train_bars, retrain_every=self.retrain_every,
            expanding=self.expanding, min_edge=self.min_edge, stop_multiple=self.stop_multiple,
            allow_short=self.allow_short, session_exits=self.session_exits,
        )


def _models_markdown(models: pd.DataFrame, trades: pd.DataFrame) -> str:
    opened = trades.groupby("model_id").size() if len(trades) else pd.Series(dtype="int64")
    table = models.loc[:, ["symbol", "model_id", "trained_at", "n_train", "threshold", "bars",
                           "predictions"]].copy()
    table["trades"] = table["model_id"].map(opened).fillna(0).astype(int)
    table["trained_at"] = pd.to_datetime(table["trained_at"]).dt.tz_convert(calendar.TZ).dt.strftime(
        "%Y-%m-%d %H:%M")
    return frame_markdown(table.set_index("symbol"), max_rows=40, floatfmt=".3f")


@dg.asset(
    key=["knn_shadow", "backtest"],
    group_name="knn_shadow",
    kinds={"pandas"},
    description="Seed 004 walk-forward over 1-minute bars: a KNN model retrained every "
                "`retrain_every` minutes on the bars before, forecasts only when the nearest "
                "neighbours are near enough, trades with LIMIT and STOP and a 3-minute life, "
                "each trade tied to its model.",
)
def knn_shadow_backtest(
    context: dg.AssetExecutionContext,
    config: KnnShadowBacktestConfig,
    market_data: MarketDataResource,
) -> dg.Output[pd.DataFrame]:
    t0 = time.perf_counter()
    try:
        params = config.walk_params()
    except ValueError as exc:
        raise dg.Failure(f"bad knn_shadow backtest parameters: {exc}") from exc
    if config.warmup_sessions < 0:
        raise dg.Failure("warmup_sessions must be >= 0")
    start, end = _session_range(config.start, config.end)
    first = calendar.previous_sessions(start.tz_convert(calendar.TZ).date(),
                                       config.warmup_sessions + 1)[0]
    fetch_from = calendar.session_open_close(first)[0].tz_convert("UTC")
    bars = market_data.get().get_bars(config.symbols, fetch_from, end, "1min")
    if bars.empty or not (bars.index >= start).any():
        raise dg.Failure(f"no 1-minute bars for {config.symbols} between {config.start} and {config.end}")
    context.log.info(f"{len(bars)} 1-minute bars of {len(config.symbols)} symbols from {fetch_from} "
                     f"({config.warmup_sessions} warm-up sessions) to {end}")
    result = walk.knn_backtest(
        bars, params, start=start, end=end, cost_aware=config.cost_aware,
        init_cash=config.init_cash, size=config.size, slippage_bps=config.slippage_bps,
        commission_bps=config.commission_bps,
    )
    models: pd.DataFrame = result.extra["models"]
    trades = result.trades.loc[:, KNN_TRADE_COLUMNS]
    used = list(dict.fromkeys(models["model_id"]))
    by_model = trades["model_id"].value_counts().to_dict() if len(trades) else {}
    context.log.info(f"{len(used)} models, coverage {result.extra['coverage']:.1%}, "
                     f"{len(trades)} trades")
    effective = result.extra["params"]
    out = _output(
        result, f"knn_shadow backtest {config.start}..{config.end}", t0,
        coverage=dg.MetadataValue.float(round(float(result.extra["coverage"]), 6)),
        coverage_by_symbol=dg.MetadataValue.json(result.extra["walk"].coverage_by_symbol()),
        model_count=len(used),
        model_ids=dg.MetadataValue.json(used),
        trades_by_model=dg.MetadataValue.json({str(k): int(v) for k, v in by_model.items()}),
        models=dg.MetadataValue.md(_models_markdown(models, trades)),
        params=dg.MetadataValue.json({
            **config.model_dump(exclude={"start", "end", "init_cash", "size", "slippage_bps",
                                         "commission_bps"}),
            "edge": effective.edge, "round_trip_cost": effective.round_trip_cost,
        }),
    )
    return dg.Output(trades, metadata=out.metadata)
