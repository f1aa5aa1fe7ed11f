"""The `knn_shadow` flow: KNN regression of the next 3 minutes' return, predicting only when near enough.

Train: features are a stack of returns over tails of different lengths
(`indicators.tail_returns`, optionally plus one-step `lagged_returns`) on 1-minute
prices; the target is the forward return over the holding period
(`indicators.forward_return`). A scikit-learn `KNeighborsRegressor` (k = 5) learns it.
Predict: find the 5 nearest training rows; if their mean distance is above the model's
threshold the model abstains ("only predict when it is near enough"), otherwise it
predicts their mean target. Every model has a deterministic id (a hash of its training
data and parameters), and every prediction carries it, so every trade is tied to the
model that made it and the data that trained it.

Choices where the seed is silent:
- Prices are 1-minute closes on a regular grid (`indicators.resample_last`: the last
  price of each minute, not the latest tick). Horizon 3 bars = the 3-minute trade life.
- Default features: tails of 1, 3, 5 and 10 minutes; `n_lags` adds one-step returns.
- Gaps (a session break, a missing minute not forward-filled): a row is used only if
  its whole look-back and its whole holding period lie on the regular grid, so no
  feature or target spans a gap.
- Features are standardised (mean 0, sd 1, fitted on the training rows) before the
  distance is measured: longer tails have larger returns and would otherwise dominate.
  Distances and thresholds are therefore in standard deviations.
- Threshold: `max_mean_distance` if given; otherwise calibrated on the training data as
  the `distance_quantile` (80%) quantile of each training row's mean distance to its 5
  nearest *other* training rows. So, by construction, about 20% of queries that look
  like the training data are refused, and anything stranger is refused too.
  Abstain when mean distance > threshold (equal still predicts).
- Neighbours are found by brute force (deterministic, exact; a few thousand rows).
  Uniform weights: the prediction is the plain mean of the 5 targets, so it never leaves
  the range of returns seen in training.
- Trades (`plan_trade`): BUY when the prediction exceeds `min_edge`, SELL when below
  -`min_edge`. The LIMIT (take-profit) is at the predicted price; the STOP is the same
  distance times `stop_multiple` on the other side; the trade expires after the holding
  period. An abstention or a small prediction places nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # scikit-learn is imported when a model is trained: it costs ~0.6 s at
    # import, which every process loading the code location (each run worker) would pay
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.preprocessing import StandardScaler

from trading_assets.core.indicators import forward_return, lagged_returns, tail_returns

FLOW = "knn_shadow"


@dataclass(frozen=True)
class Params:
    tails: tuple[int, ...] = (1, 3, 5, 10)
    n_lags: int = 0
    horizon: int = 3  # bars of `bar`; 3 x 1 minute = the holding period
    bar: str = "1min"
    n_neighbors: int = 5
    max_mean_distance: float | None = None
    distance_quantile: float = 0.8

    def __post_init__(self) -> None:
        object.__setattr__(self, "tails", tuple(int(t) for t in self.tails))
        if not self.tails and self.n_lags == 0:
            raise ValueError("need at least one feature: some tails or n_lags > 0")
        if any(t < 1 for t in self.tails) or len(set(self.tails)) != len(self.tails):
            raise ValueError(f"tails must be distinct positive bar counts, got {self.tails}")
        if self.n_lags < 0 or self.horizon < 1 or self.n_neighbors < 1:
            raise ValueError("need n_lags >= 0, horizon >= 1 and n_neighbors >= 1")
        if pd.Timedelta(self.bar) <= pd.Timedelta(0):
            raise ValueError(f"bar must be a positive duration, got {self.bar!r}")
        if self.max_mean_distance is not None and not self.max_mean_distance > 0:
            raise ValueError(f"max_mean_distance must be positive, got {self.max_mean_distance}")
        if not 0 < self.distance_quantile <= 1:
            raise ValueError(f"distance_quantile must be in (0, 1], got {self.distance_quantile}")

    @property
    def lookback(self) -> int:
        """Bars of history a feature row needs besides its own."""
        return max([*self.tails, self.n_lags])

    @property
    def holding_period(self) -> pd.Timedelta:
        return self.horizon * pd.Timedelta(self.bar)


def _regular_prices(prices: pd.Series) -> pd.Series:
    if not isinstance(prices, pd.Series) or not isinstance(prices.index, pd.DatetimeIndex):
        raise ValueError("prices must be a Series with a DatetimeIndex (resample_last output)")
    if prices.index.tz is None:
        raise ValueError("prices need a tz-aware index")
    if not prices.index.is_monotonic_increasing or prices.index.has_duplicates:
        raise ValueError("prices must be strictly increasing in time")
    values = prices.to_numpy(dtype="float64")
    if not (np.isfinite(values) & (values > 0)).all():
        raise ValueError("prices must be finite and positive (fill or drop gaps first)")
    return prices.astype("float64")


def _on_grid(index: pd.DatetimeIndex, back: int, ahead: int, bar: pd.Timedelta) -> np.ndarray:
    """True where rows t-back .. t+ahead exist and are exactly one bar apart."""
    ns = index.as_unit("ns").asi8  # pandas 3 indexes may be in us; compare in ns
    n = len(ns)
    ok = np.zeros(n, dtype=bool)
    if n == 0:
        return ok
    unit = pd.Timedelta(bar).value
    step_ok = np.concatenate([[False], np.diff(ns) == unit])  # row i follows i-1 by a bar
    # run[i] = how many consecutive one-bar steps end at row i
    rows = np.arange(n)
    run = rows - np.maximum.accumulate(np.where(step_ok, 0, rows))
    if n - ahead > back:
        ok[back : n - ahead] = run[back + ahead :] >= back + ahead
    return ok


def features(prices: pd.Series, params: Params) -> pd.DataFrame:
    """Feature rows (one per bar, NaN where the look-back is short or spans a gap)."""
    prices = _regular_prices(prices)
    parts = []
    if params.tails:
        parts.append(tail_returns(prices, params.tails))
    if params.n_lags:
        parts.append(lagged_returns(prices, params.n_lags))
    out = pd.concat(parts, axis=1)
    ok = _on_grid(prices.index, params.lookback, 0, pd.Timedelta(params.bar))
    out.loc[~ok, :] = np.nan
    return out


def training_set(prices: pd.Series, params: Params) -> tuple[pd.DataFrame, pd.Series]:
    """(X, y): complete feature rows and the forward return over the holding period."""
    prices = _regular_prices(prices)
    x = features(prices, params)
    y = forward_return(prices, params.horizon)
    ok = _on_grid(prices.index, params.lookback, params.horizon, pd.Timedelta(params.bar))
    ok &= x.notna().all(axis=1).to_numpy() & np.isfinite(y.to_numpy())
    return x.loc[ok], y.loc[ok].rename("target")


@dataclass(frozen=True)
class KNNModel:
    """A trained model: what it was trained on, its id, and the fitted estimators."""

    model_id: str
    params: Params
    feature_names: tuple[str, ...]
    scaler: StandardScaler
    regressor: KNeighborsRegressor
    threshold: float
    n_train: int
    trained_from: pd.Timestamp | None
    trained_to: pd.Timestamp | None
    target_min: float
    target_max: float

    def describe(self) -> dict[str, Any]:
        """JSON-able metadata (for asset metadata and the model leaderboard)."""
        return {
            "model_id": self.model_id,
            "params": asdict(self.params),
            "feature_names": list(self.feature_names),
            "threshold": self.threshold,
            "n_train": self.n_train,
            "trained_from": None if self.trained_from is None else self.trained_from.isoformat(),
            "trained_to": None if self.trained_to is None else self.trained_to.isoformat(),
        }


def model_id_for(x: pd.DataFrame, y: pd.Series, params: Params) -> str:
    """Deterministic id: the same rows, times, targets and params give the same id."""
    digest = hashlib.sha256()
    digest.update(json.dumps(asdict(params), sort_keys=True).encode())
    digest.update(json.dumps(list(map(str, x.columns))).encode())
    digest.update(np.ascontiguousarray(x.to_numpy(dtype="float64")).tobytes())
    digest.update(np.ascontiguousarray(y.to_numpy(dtype="float64")).tobytes())
    if isinstance(x.index, pd.DatetimeIndex):
        digest.update(np.ascontiguousarray(x.index.tz_convert("UTC").as_unit("ns").asi8).tobytes())
    return f"knn-{digest.hexdigest()[:16]}"


def train_xy(x: pd.DataFrame, y: pd.Series, params: Params | None = None) -> KNNModel:
    """Fit on ready-made (X, y), e.g. from `training_set`."""
    params = params or Params()
    if len(x) != len(y):
        raise ValueError(f"X has {len(x)} rows, y has {len(y)}")
    if len(x) <= params.n_neighbors:
        raise ValueError(
            f"{len(x)} training rows; need more than n_neighbors={params.n_neighbors}"
        )
    values = x.to_numpy(dtype="float64")
    target = y.to_numpy(dtype="float64")
    if not (np.isfinite(values).all() and np.isfinite(target).all()):
        raise ValueError("training data has NaN/inf; use training_set to build it")
    from sklearn.neighbors import KNeighborsRegressor
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(values)
    scaled = scaler.transform(values)
    regressor = KNeighborsRegressor(n_neighbors=params.n_neighbors, algorithm="brute")
    regressor.fit(scaled, target)
    if params.max_mean_distance is not None:
        threshold = float(params.max_mean_distance)
    else:
        # Each row's distance to its k nearest *other* rows: drop the self match (0).
        dist, _ = regressor.kneighbors(scaled, n_neighbors=params.n_neighbors + 1)
        threshold = float(np.quantile(dist[:, 1:].mean(axis=1), params.distance_quantile))
    index = x.index if isinstance(x.index, pd.DatetimeIndex) else None
    return KNNModel(
        model_id=model_id_for(x, y, params),
        params=params,
        feature_names=tuple(map(str, x.columns)),
        scaler=scaler,
        regressor=regressor,
        threshold=threshold,
        n_train=len(x),
        trained_from=None if index is None else index[0],
        trained_to=None if index is None else index[-1],
        target_min=float(target.min()),
        target_max=float(target.max()),
    )


def train(prices: pd.Series, params: Params | None = None) -> KNNModel:
    """Train on 1-minute prices (features and targets built here)."""
    params = params or Params()
    x, y = training_set(prices, params)
    return train_xy(x, y, params)


def predict_frame(model: KNNModel, x: pd.DataFrame) -> pd.DataFrame:
    """One prediction (or abstention) per feature row; same index as `x`."""
    missing = [c for c in model.feature_names if c not in x.columns]
    if missing:
        raise ValueError(f"feature rows lack columns {missing} the model was trained on")
    values = x.loc[:, list(model.feature_names)].to_numpy(dtype="float64")
    complete = np.isfinite(values).all(axis=1)
    mean_dist = np.full(len(x), np.nan)
    predicted = np.full(len(x), np.nan)
    if complete.any():
        scaled = model.scaler.transform(values[complete])
        dist, _ = model.regressor.kneighbors(scaled)
        mean_dist[complete] = dist.mean(axis=1)
        predicted[complete] = model.regressor.predict(scaled)
    near = complete & (mean_dist <= model.threshold)
    reasons = np.where(
        ~complete,
        "abstain: not enough history (or a gap) for the features",
        np.where(
            near,
            "predict: neighbours near enough",
            "abstain: nearest neighbours too far",
        ),
    )
    return pd.DataFrame(
        {
            "model_id": model.model_id,
            "predicted_return": np.where(near, predicted, np.nan),
            "mean_distance": mean_dist,
            "threshold": model.threshold,
            "abstained": ~near,
            "reason": reasons,
        },
        index=x.index,
    )


@dataclass(frozen=True)
class Prediction:
    model_id: str
    at: Any  # the bar the prediction is made at (its features end there)
    predicted_return: float | None  # None when abstaining
    mean_distance: float
    threshold: float
    reason: str

    @property
    def abstained(self) -> bool:
        return self.predicted_return is None


def predict_latest(model: KNNModel, prices: pd.Series) -> Prediction:
    """The live call: predict from the newest bar of `prices`."""
    x = features(prices, model.params)
    if len(x) == 0:
        raise ValueError("no prices to predict from")
    row = predict_frame(model, x.iloc[[-1]]).iloc[0]
    return Prediction(
        model_id=model.model_id,
        at=x.index[-1],
        predicted_return=None if row["abstained"] else float(row["predicted_return"]),
        mean_distance=float(row["mean_distance"]),
        threshold=model.threshold,
        reason=str(row["reason"]),
    )


def score(model: KNNModel, prices: pd.Series) -> dict[str, float]:
    """How the model would have done on `prices` (held-out data): for the shadow board.

    coverage: share of complete rows it predicted on; hit_rate: share of predictions
    with the right sign; mae: mean absolute error of the predicted return.
    """
    x, y = training_set(prices, model.params)
    preds = predict_frame(model, x)
    made = ~preds["abstained"].to_numpy()
    p = preds["predicted_return"].to_numpy()[made]
    r = y.to_numpy()[made]
    return {
        "rows": float(len(x)),
        "predictions": float(made.sum()),
        "coverage": float(made.mean()) if len(x) else float("nan"),
        "hit_rate": float((np.sign(p) == np.sign(r)).mean()) if made.any() else float("nan"),
        "mae": float(np.abs(p - r).mean()) if made.any() else float("nan"),
    }


# ----------------------------------------------------------------------------- trades


class TradeSide(StrEnum):
    BUY = "buy"
    SELL = "sell"


@dataclass(frozen=True)
class TradeParams:
    min_edge: float = 0.0005  # |predicted return| needed to trade (covers the spread)
    stop_multiple: float = 1.0

    def __post_init__(self) -> None:
        if self.min_edge < 0 or not self.stop_multiple > 0:
            raise ValueError("need min_edge >= 0 and stop_multiple > 0")


@dataclass(frozen=True)
class TradePlan:
    model_id: str
    side: TradeSide
    reference_price: float
    limit: float  # take-profit at the predicted price
    stop: float
    opened_at: datetime
    expires_at: datetime
    predicted_return: float


def plan_trade(
    prediction: Prediction,
    price: float,
    at: datetime,
    holding_period: pd.Timedelta,
    trade: TradeParams | None = None,
) -> TradePlan | None:
    """A trade with LIMIT and STOP and a fixed life, or None (abstained / edge too small)."""
    trade = trade or TradeParams()
    if not price > 0:
        raise ValueError(f"price must be positive, got {price}")
    r = prediction.predicted_return
    if r is None or abs(r) <= trade.min_edge:
        return None
    side = TradeSide.BUY if r > 0 else TradeSide.SELL
    limit = price * (1.0 + r)
    stop = price * (1.0 - trade.stop_multiple * r)
    return TradePlan(
        model_id=prediction.model_id,
        side=side,
        reference_price=float(price),
        limit=float(limit),
        stop=float(stop),
        opened_at=at,
        expires_at=at + pd.Timedelta(holding_period).to_pytimedelta(),
        predicted_return=float(r),
    )
