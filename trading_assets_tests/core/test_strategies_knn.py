"""knn_forecast (the knn_shadow flow): KNN return forecast that abstains when nothing similar was seen."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trading_assets.core.strategies.knn_forecast import (
    Params,
    Prediction,
    TradeParams,
    TradeSide,
    features,
    plan_trade,
    predict_frame,
    predict_latest,
    score,
    train,
    training_set,
)

START = pd.Timestamp("2025-04-01 08:00", tz="UTC")


def minute_prices(returns, start: pd.Timestamp = START) -> pd.Series:
    """Prices on a 1-minute grid: bar 0 is 100, bar i = bar i-1 * (1 + returns[i-1])."""
    values = 100.0 * np.cumprod(np.concatenate([[1.0], 1.0 + np.asarray(returns, dtype="float64")]))
    index = pd.date_range(start, periods=len(values), freq="1min", name="timestamp")
    return pd.Series(values, index=index, name="price")


def cycle(n: int) -> pd.Series:
    """Three minutes up 1%, three minutes down 1%, repeated: the return into bar i is +1%
    when i % 6 in (1, 2, 3), else -1%."""
    i = np.arange(1, n)
    return minute_prices(np.where(np.isin(i % 6, (1, 2, 3)), 0.01, -0.01))


NEAR = Params(max_mean_distance=0.5)  # fixed gate for the hand-checked cases


def test_predicts_the_pattern_it_has_seen():
    prices = cycle(400)
    model = train(prices.iloc[:241], NEAR)
    # Bar 303 (303 % 6 == 3): the next three minutes are all -1%.
    down = predict_latest(model, prices.iloc[:304])
    assert down.at == prices.index[303]
    assert down.predicted_return == pytest.approx(0.99**3 - 1)
    # Bar 306 (306 % 6 == 0): the next three minutes are all +1%.
    up = predict_latest(model, prices.iloc[:307])
    assert up.predicted_return == pytest.approx(1.01**3 - 1)
    assert up.model_id == model.model_id and not up.abstained


def test_abstains_when_nothing_similar_was_seen():
    prices = cycle(300)
    model = train(prices, NEAR)
    crash = minute_prices(np.r_[np.diff(prices.to_numpy()) / prices.to_numpy()[:-1], [-0.05] * 10])
    p = predict_latest(model, crash)
    assert p.abstained and p.predicted_return is None
    assert p.mean_distance > p.threshold == 0.5
    assert "too far" in p.reason
    assert plan_trade(p, 95.0, datetime(2025, 4, 1, 13, tzinfo=UTC), timedelta(minutes=3)) is None


def test_calibrated_gate_refuses_about_a_fifth_of_ordinary_queries():
    rng = np.random.default_rng(7)
    prices = minute_prices(rng.normal(0, 0.001, 3000))
    model = train(prices.iloc[:2000])
    assert model.threshold > 0
    held_out = features(prices, model.params).iloc[2000:]
    refused = predict_frame(model, held_out)["abstained"].mean()
    assert 0.1 < refused < 0.35


def test_same_data_and_params_same_model_id_and_predictions():
    rng = np.random.default_rng(1)
    prices = minute_prices(rng.normal(0, 0.001, 400))
    a, b = train(prices), train(prices.copy())
    assert a.model_id == b.model_id and a.model_id.startswith("knn-")
    x = features(prices, a.params)
    pd.testing.assert_frame_equal(predict_frame(a, x), predict_frame(b, x))

    changed = prices.copy()
    changed.iloc[200] *= 1.001
    assert train(changed).model_id != a.model_id
    assert train(prices, Params(n_neighbors=7)).model_id != a.model_id
    shifted = prices.copy()
    shifted.index = shifted.index + pd.Timedelta(days=1)  # same numbers, other minutes
    assert train(shifted).model_id != a.model_id


def test_model_survives_pickling_and_describes_itself():
    """The Dagster IO manager pickles models; a reloaded one predicts the same."""
    rng = np.random.default_rng(2)
    prices = minute_prices(rng.normal(0, 0.001, 300))
    model = train(prices)
    again = pickle.loads(pickle.dumps(model))
    x = features(prices, model.params)
    pd.testing.assert_frame_equal(predict_frame(model, x), predict_frame(again, x))
    meta = json.loads(json.dumps(model.describe()))
    assert meta["model_id"] == model.model_id and meta["n_train"] == model.n_train
    assert meta["trained_from"] == prices.index[10].isoformat()


def test_rows_never_span_a_gap():
    # Two 60-minute sessions, 16 hours apart. Each gives 60 - 10 (look-back) - 3
    # (holding period) = 47 training rows; none reaches across the break.
    rng = np.random.default_rng(3)
    first = minute_prices(rng.normal(0, 0.001, 59))
    second = minute_prices(rng.normal(0, 0.001, 59), START + pd.Timedelta(hours=17))
    prices = pd.concat([first, second])
    x, y = training_set(prices, Params())
    assert len(x) == len(y) == 94
    in_first = x.index < second.index[0]
    assert (x.index[in_first] >= first.index[10]).all()
    assert (x.index[in_first] <= first.index[-4]).all()
    assert (x.index[~in_first] >= second.index[10]).all()
    # The first bars after the break have no features, so the model abstains there.
    model = train(prices)
    p = predict_latest(model, prices.loc[: second.index[5]])
    assert p.abstained and "not enough history" in p.reason


def test_too_little_data_is_an_error():
    with pytest.raises(ValueError, match="training rows"):
        train(cycle(18))


@pytest.mark.parametrize(
    "bad",
    [
        pd.Series([100.0, 101.0], index=pd.date_range("2025-01-01", periods=2, freq="1min")),
        pd.Series([100.0, np.nan, 101.0], index=pd.date_range(START, periods=3, freq="1min")),
        pd.Series([100.0, 101.0], index=[START, START - pd.Timedelta(minutes=1)]),
    ],
)
def test_unusable_prices_are_rejected(bad):
    with pytest.raises(ValueError):
        features(bad, Params())


def test_trade_plan_limit_stop_and_life():
    at = datetime(2025, 4, 1, 13, 0, tzinfo=UTC)
    up = Prediction("knn-x", at, 0.002, 0.1, 0.5, "predict")
    buy = plan_trade(up, 100.0, at, Params().holding_period)
    assert buy.side is TradeSide.BUY and buy.model_id == "knn-x"
    assert (buy.limit, buy.stop) == (pytest.approx(100.2), pytest.approx(99.8))
    assert buy.expires_at == at + timedelta(minutes=3)

    down = Prediction("knn-x", at, -0.004, 0.1, 0.5, "predict")
    sell = plan_trade(down, 50.0, at, timedelta(minutes=3), TradeParams(stop_multiple=0.5))
    assert sell.side is TradeSide.SELL
    assert (sell.limit, sell.stop) == (pytest.approx(49.8), pytest.approx(50.1))

    small = Prediction("knn-x", at, 0.0001, 0.1, 0.5, "predict")
    assert plan_trade(small, 100.0, at, timedelta(minutes=3)) is None


def test_score_reports_coverage_and_hit_rate():
    prices = cycle(400)
    model = train(prices.iloc[:241], NEAR)
    s = score(model, prices.iloc[241:])
    assert s["coverage"] == 1.0 and s["hit_rate"] == 1.0
    assert s["mae"] == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=15, deadline=None)
@given(
    st.lists(st.floats(min_value=-0.01, max_value=0.01), min_size=40, max_size=120),
    st.lists(st.floats(min_value=-0.02, max_value=0.02), min_size=12, max_size=30),
)
def test_predicts_only_when_near_and_never_outside_what_it_saw(train_returns, query_returns):
    prices = minute_prices(train_returns + query_returns)
    model = train(prices.iloc[: len(train_returns) + 1])
    out = predict_frame(model, features(prices, model.params)).dropna(subset=["mean_distance"])
    made = ~out["abstained"]
    assert (out.loc[made, "mean_distance"] <= model.threshold).all()
    assert (out.loc[~made, "mean_distance"] > model.threshold).all()
    assert out.loc[~made, "predicted_return"].isna().all()
    predicted = out.loc[made, "predicted_return"]
    eps = 1e-12
    assert ((predicted >= model.target_min - eps) & (predicted <= model.target_max + eps)).all()
