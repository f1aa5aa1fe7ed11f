"""Walk-forward backtest of the `knn_shadow` flow (`knn_forecast`): retrain on a rolling window, trade
the nearness-gated forecast with LIMIT, STOP and a 3-minute life.

The walk (`walk_forward`, one symbol's 1-minute closes):
- Time is cut into blocks of `retrain_every` bars of wall-clock time, anchored at the
  Unix epoch (30 minutes by default: :00-:29 and :30-:59 UTC), so where a block starts
  does not depend on where the data starts. At the first bar of each block a new model
  is trained with `knn_forecast.train` on the `train_bars` bars *before* that bar (or
  all of them with `expanding=True`): its training rows' targets end at the last of
  those bars, so nothing it learns comes from the block it predicts. Gaps (nights,
  weekends) are handled by `knn_forecast`: no feature or target spans one.
- Every bar of the block is predicted by that model with `knn_forecast.predict_frame`
  (features end at the bar itself; the nearness gate may abstain). No model yet (too
  little history) is an abstention too. Each row carries the id of the model that made
  it, so every signal, and every trade, is tied to its model and its training data.
- No look-ahead: a bar's prediction and signal depend only on prices up to that bar, so
  cutting off the future leaves every earlier row unchanged (tested).
- Speed: the walk runs many small brute-force neighbour searches, so it holds the BLAS /
  OpenMP pools to one thread (`threadpoolctl`) while it runs; a pool per tiny search is
  several times slower, more so on a busy machine. About 0.2 s per session per symbol.

The signal (event signal for `core.backtest`, fill at the signal bar's close):
- +1 when the predicted 3-minute return exceeds `min_edge + round_trip_cost`, -1 when it
  is below minus that (0 instead when shorts are off: a bearish forecast only exits a
  long), NaN otherwise (abstained, small forecast: keep what you have).
- The brackets are `knn_forecast.plan_trade`'s, per signal: LIMIT (take-profit) at the
  predicted price, STOP the same distance times `stop_multiple` on the other side, as
  absolute price panels; the life is the backtester's holding period
  `max_bars = horizon` (3 bars = 3 minutes). The levels are the live function's, computed
  vectorised (tested equal to `plan_trade`).
- `session_exits`: no entry whose 3-minute life would run past the NYSE session close
  (the close is known from the calendar in advance, not from later prices). Bars on days
  the calendar does not call sessions have no such limit.
- One position per symbol at a time (the backtester's rule): a signal in the direction
  already held is ignored (its own brackets and life do not replace the open trade's);
  an opposite one reverses.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from trading_assets.core import calendar
from trading_assets.core.backtest import BacktestConfig, BacktestSignals, CashAndCosts, PricePanels
from trading_assets.core.strategies import knn_forecast as knn

NO_MODEL = "abstain: no model yet (too little training data)"
_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")


@dataclass(frozen=True)
class WalkForwardParams:
    """Retraining schedule and trading rule around a `knn_forecast.Params` model."""

    model: knn.Params = field(default_factory=knn.Params)
    train_bars: int = 780  # rolling window: 2 full sessions of 1-minute bars
    retrain_every: int = 30  # bars of wall-clock time per model
    expanding: bool = False  # train on everything before the block instead
    min_edge: float = 0.0002  # |predicted return| needed besides costs
    round_trip_cost: float = 0.0  # fraction a round trip costs (added to min_edge)
    stop_multiple: float = 1.0
    allow_short: bool = True
    session_exits: bool = True

    def __post_init__(self) -> None:
        if self.train_bars <= self.model.lookback + self.model.horizon + self.model.n_neighbors:
            raise ValueError(
                f"train_bars={self.train_bars} leaves too few training rows for the model "
                f"(lookback {self.model.lookback}, horizon {self.model.horizon}, "
                f"k {self.model.n_neighbors})")
        if self.retrain_every < 1:
            raise ValueError("retrain_every must be >= 1")
        if self.min_edge < 0 or self.round_trip_cost < 0 or not self.stop_multiple > 0:
            raise ValueError("need min_edge >= 0, round_trip_cost >= 0 and stop_multiple > 0")

    @property
    def edge(self) -> float:
        """The |predicted return| a trade needs: the edge over costs."""
        return self.min_edge + self.round_trip_cost

    @property
    def trade(self) -> knn.TradeParams:
        return knn.TradeParams(min_edge=self.edge, stop_multiple=self.stop_multiple)


PREDICTION_COLUMNS = ["model_id", "price", "predicted_return", "mean_distance", "threshold",
                      "abstained", "reason", "signal", "take_profit_price", "stop_loss_price"]


def _blocks(index: pd.DatetimeIndex, params: WalkForwardParams) -> np.ndarray:
    """Block number of every bar (wall-clock blocks of `retrain_every` bars)."""
    width = params.retrain_every * pd.Timedelta(params.model.bar)
    return ((index - _EPOCH) // width).to_numpy(dtype=np.int64)


def _last_entry_ok(index: pd.DatetimeIndex, params: WalkForwardParams) -> np.ndarray:
    """True where a trade entered at the bar's close ends by the session close."""
    ok = np.ones(len(index), dtype=bool)
    if not params.session_exits or len(index) == 0:
        return ok
    life_end = index + (params.model.horizon + 1) * pd.Timedelta(params.model.bar)
    local = index.tz_convert(calendar.TZ)
    days = np.asarray(local.date)
    first, last = calendar.calendar_bounds()
    for day in dict.fromkeys(days):
        if not isinstance(day, date) or not first <= day <= last or not calendar.is_session(day):
            continue
        _, close = calendar.session_open_close(day)
        rows = days == day
        ok[rows] = life_end[rows] <= close
    return ok


def walk_forward(
    prices: pd.Series,
    params: WalkForwardParams | None = None,
    start: pd.Timestamp | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(predictions, models) for one symbol's 1-minute closes (see the module docstring).

    `prices`: closes on the model's bar grid, tz-aware, increasing, finite (gaps allowed).
    Rows before `start` are history only: they train models but get no rows out.
    predictions: one row per bar from `start` with `PREDICTION_COLUMNS` (model_id None
    when no model exists yet; signal +1/-1/0/NaN; brackets NaN without a signal).
    models: one row per model used, with its training window and how many of the bars
    it predicted on.
    """
    params = params or WalkForwardParams()
    mp = params.model
    prices = knn._regular_prices(prices)
    index = pd.DatetimeIndex(prices.index)
    begin = 0 if start is None else int(index.searchsorted(pd.Timestamp(start)))
    x = knn.features(prices, mp)  # past-only, so one pass over everything is safe
    n = len(index)
    if n == 0:
        raise ValueError("no prices to walk over")
    model_id = np.full(n, None, dtype=object)
    predicted = np.full(n, np.nan)
    distance = np.full(n, np.nan)
    threshold = np.full(n, np.nan)
    abstained = np.ones(n, dtype=bool)
    reason = np.full(n, NO_MODEL, dtype=object)
    models: list[dict] = []
    blocks = _blocks(index, params)
    edges = np.flatnonzero(np.diff(blocks, prepend=blocks[0] - 1))  # first bar of each block
    ends = np.append(edges[1:], n)
    # Many small neighbour searches: one thread each is far faster than a pool per call
    with threadpool_limits(limits=1):
        for lo, hi in zip(edges, ends, strict=True):
            if hi <= begin:
                continue
            first = 0 if params.expanding else max(0, lo - params.train_bars)
            try:
                model = knn.train(prices.iloc[first:lo], mp)
            except ValueError:  # too few complete training rows before this block
                continue
            frame = knn.predict_frame(model, x.iloc[lo:hi])
            model_id[lo:hi] = model.model_id
            predicted[lo:hi] = frame["predicted_return"].to_numpy()
            distance[lo:hi] = frame["mean_distance"].to_numpy()
            threshold[lo:hi] = model.threshold
            abstained[lo:hi] = frame["abstained"].to_numpy()
            reason[lo:hi] = frame["reason"].to_numpy()
            shown = slice(max(lo, begin), hi)
            models.append({
                **model.describe(),
                "trained_at": index[lo],
                "bars": int(hi - shown.start),
                "predictions": int((~abstained[shown]).sum()),
            })
    close = prices.to_numpy()
    edge = params.edge
    signal = np.full(n, np.nan)
    signal[predicted > edge] = 1.0
    signal[predicted < -edge] = -1.0 if params.allow_short else 0.0
    signal[~_last_entry_ok(index, params)] = np.nan
    trade = np.isin(signal, (1.0, -1.0))
    take_profit = np.where(trade, close * (1.0 + predicted), np.nan)
    stop_loss = np.where(trade, close * (1.0 - params.stop_multiple * predicted), np.nan)
    out = pd.DataFrame(
        {
            "model_id": model_id, "price": close, "predicted_return": predicted,
            "mean_distance": distance, "threshold": threshold, "abstained": abstained,
            "reason": reason, "signal": signal, "take_profit_price": take_profit,
            "stop_loss_price": stop_loss,
        },
        index=index,
    ).iloc[begin:]
    model_frame = pd.DataFrame(models, columns=[
        "model_id", "trained_at", "trained_from", "trained_to", "n_train", "threshold", "bars",
        "predictions", "params", "feature_names"])
    return out, model_frame


@dataclass(frozen=True)
class WalkForward:
    """A watchlist's walk: panels for the backtester plus what each model did."""

    signal: pd.DataFrame  # timestamp x symbol, +1/-1/0/NaN
    take_profit: pd.DataFrame  # absolute levels on signal bars
    stop_loss: pd.DataFrame
    predictions: pd.DataFrame  # long: timestamp index, symbol + PREDICTION_COLUMNS
    models: pd.DataFrame  # one row per (symbol, model)

    @property
    def coverage(self) -> float:
        """Share of bars where the gate let a model predict."""
        if self.predictions.empty:
            return float("nan")
        return float((~self.predictions["abstained"].astype(bool)).mean())

    def coverage_by_symbol(self) -> dict[str, float]:
        made = ~self.predictions["abstained"].astype(bool)
        return {str(k): float(v) for k, v in made.groupby(self.predictions["symbol"]).mean().items()}


def walk_forward_panel(
    closes: pd.DataFrame,
    params: WalkForwardParams | None = None,
    start: pd.Timestamp | None = None,
) -> WalkForward:
    """`walk_forward` per column of a timestamp x symbol close panel (NaN = no bar)."""
    params = params or WalkForwardParams()
    preds, models = [], []
    for symbol in closes.columns:
        series = closes[symbol].dropna()
        p, m = walk_forward(series, params, start)
        preds.append(p.assign(symbol=str(symbol)))
        models.append(m.assign(symbol=str(symbol)))
    long = pd.concat(preds) if preds else pd.DataFrame(columns=["symbol", *PREDICTION_COLUMNS])
    long = long.loc[:, ["symbol", *PREDICTION_COLUMNS]]
    index = closes.index if start is None else closes.index[closes.index >= pd.Timestamp(start)]

    def wide(column: str) -> pd.DataFrame:
        frame = long.pivot(columns="symbol", values=column) if len(long) else pd.DataFrame()
        return frame.reindex(index=index, columns=[str(c) for c in closes.columns]).astype("float64")

    model_frame = pd.concat(models, ignore_index=True) if models else pd.DataFrame()
    return WalkForward(wide("signal"), wide("take_profit_price"), wide("stop_loss_price"),
                       long, model_frame)


def with_costs(params: WalkForwardParams, costs: CashAndCosts) -> WalkForwardParams:
    """`params` whose edge also covers what a round trip costs (`costs.round_trip_fraction`:
    2 x (slippage_bps + commission_bps)), so a forecast must beat its own costs to trade."""
    return replace(params, round_trip_cost=costs.round_trip_fraction)


def backtest_signals(
    bars: pd.DataFrame,
    params: WalkForwardParams | None = None,
    *,
    start: pd.Timestamp | None = None,
    end: pd.Timestamp | None = None,
    size: float = 1.0,
) -> BacktestSignals:
    """Walk forward over 1-minute `bars` (the `core.bars` schema), as panels for `run_backtest`.

    Bars before `start` only train; trading runs over [start, end). Fills at the signal
    bar's close (as the live flow would), exits at the LIMIT, the STOP (a stop pays
    slippage) or after `horizon` bars; each entry takes `size` of the symbol's sleeve.
    Each trade is tagged with the `model_id` and `predicted_return` of the forecast that
    opened it; `extra` holds the walk (`walk`), its `predictions`, `models`, `coverage`
    and the `params` used. For a cost-aware edge pass `with_costs(params, costs)`.
    """
    params = params or WalkForwardParams()
    prices = PricePanels.from_bars(bars)
    closes = prices.close
    if end is not None:
        closes = closes[closes.index < pd.Timestamp(end)]
    walk = walk_forward_panel(closes, params, start)
    index = walk.signal.index
    if len(index) == 0:
        raise ValueError(f"no bars between {start} and {end}")
    traded = PricePanels(*(getattr(prices, c).reindex(index) for c in ("open", "high", "low", "close")))
    config = BacktestConfig(
        fill="close", size_mode="fraction", size=size, allow_short=params.allow_short,
        max_bars=params.model.horizon, block_reentry=False,
    )
    tags = walk.predictions.reset_index(names="entry_time").loc[
        :, ["entry_time", "symbol", "model_id", "predicted_return"]]
    return BacktestSignals(
        traded, walk.signal, config, take_profit=walk.take_profit, stop_loss=walk.stop_loss,
        trade_tags=tags,
        extra={"walk": walk, "predictions": walk.predictions, "models": walk.models,
               "coverage": walk.coverage, "params": params},
    )
