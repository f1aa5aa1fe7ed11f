"""knn_shadow training as assets: a day's training set (the minute bars of the window ending
with it), one model per candidate trained on it and logged to MLflow (one version each,
tagged with the Dagster run, partition and window), idempotent re-materialisation, and a
bad candidate configuration refused before any training. Bars are synthesised and written
with StreamStore; MLflow is a SQLite file under tmp."""

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from trading_assets.adapters.mlflow_registry import (
    DAGSTER_RUN_TAG,
    MODEL_ID_TAG,
    PARTITION_TAG,
    WINDOW_END_TAG,
    WINDOW_START_TAG,
)
from trading_assets.adapters.stream.store import StreamStore
from trading_assets.core.minute_bars import MinuteBar
from trading_assets.core.strategies import knn_forecast as knn
from trading_assets.defs.knn_shadow.stream_assets import minute_bars
from trading_assets.defs.knn_shadow.training import KnnCandidates, models, training_set
from trading_assets.defs.resources import local_resources
from trading_assets.resources.model_registry import ModelRegistryResource

EURUSD, GBPUSD = "CS.D.EURUSD.MINI.IP", "CS.D.GBPUSD.MINI.IP"
DAYS = [date(2025, 11, 16), date(2025, 11, 17), date(2025, 11, 18), date(2025, 11, 19), date(2025, 11, 20)]
LAST = date(2025, 11, 19)  # the partition trained; a 3-day window is 17, 18, 19
WINDOW = [date(2025, 11, 17), date(2025, 11, 18), LAST]
MINUTES = 240  # 10:00 to 13:59 each day
CANDIDATES = [{"k": 5, "distance_quantile": 0.8, "horizon": 3, "tails": [1, 3, 5, 10]},
              {"k": 8, "distance_quantile": 0.9, "horizon": 3, "tails": [1, 5]}]


def _write_days(store: StreamStore) -> None:
    rng = np.random.default_rng(12)
    for n, day in enumerate(DAYS):
        start = datetime(day.year, day.month, day.day, 10, tzinfo=UTC)
        for epic, base in ((EURUSD, 1.16), (GBPUSD, 1.31)):
            closes = base * np.exp(np.cumsum(rng.normal(0, 2e-4, MINUTES)))
            bars = [MinuteBar(epic, start + timedelta(minutes=m), float(c), float(c) + 1e-5, float(c) - 1e-5,
                              float(c), 3 + (m + n) % 4)
                    for m, c in enumerate(closes) if not (epic == EURUSD and 100 <= m < 103)]  # a 3-minute gap
            store.write_bars(bars)


def _registry(tmp_path) -> ModelRegistryResource:
    return ModelRegistryResource(tracking_uri=f"sqlite:///{tmp_path}/mlflow.sqlite",
                                 artifact_root=str(tmp_path / "mlruns"))


def _config(**overrides) -> dict:
    cfg = {"days": 3, "epic": EURUSD, "candidates": CANDIDATES, **overrides}
    return {"ops": {"knn_shadow__training_set": {"config": cfg}, "knn_shadow__models": {"config": cfg}}}


def _train(tmp_path, instance: dg.DagsterInstance, **overrides) -> dg.ExecuteInProcessResult:
    return dg.materialize([training_set, models], partition_key=LAST.isoformat(), instance=instance,
                          resources=local_resources(tmp_path, model_registry=_registry(tmp_path)),
                          run_config=_config(**overrides), raise_on_error=False)


def _metadata(result: dg.ExecuteInProcessResult, node: str) -> dict:
    [mat] = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in mat.metadata.items()}


@pytest.fixture
def trained(tmp_path):
    store = StreamStore(tmp_path / "stream")
    _write_days(store)
    instance = dg.DagsterInstance.ephemeral()
    for day in DAYS[:4]:
        done = dg.materialize([minute_bars], partition_key=day.isoformat(), instance=instance,
                              resources=local_resources(tmp_path))
        assert done.success
    result = _train(tmp_path, instance)
    assert result.success
    return tmp_path, store, instance, result


def test_the_training_set_is_exactly_the_windows_bars(trained):
    _, store, _, result = trained
    frame = result.output_for_node("knn_shadow__training_set")
    expected = pd.concat([store.bars(d) for d in WINDOW])
    expected = expected.iloc[np.lexsort((expected.index.asi8, expected["symbol"].to_numpy()))]
    pd.testing.assert_frame_equal(frame, expected, check_freq=False)
    assert len(frame) == 3 * (2 * MINUTES - 3)  # neither the 16th nor the 20th
    meta = _metadata(result, "knn_shadow__training_set")
    assert meta["dagster/row_count"] == len(frame)
    assert meta["window_days"] == meta["minute_bars_partitions"] == [d.isoformat() for d in WINDOW]
    assert meta["minute_bars_not_materialised"] == []
    assert meta["rows_per_day"] == {d.isoformat(): 2 * MINUTES - 3 for d in WINDOW}
    assert meta["rows_per_epic"] == {EURUSD: 3 * (MINUTES - 3), GBPUSD: 3 * MINUTES}
    assert meta["first_minute"] == "2025-11-17T10:00:00+00:00"
    assert meta["last_minute"] == "2025-11-19T13:59:00+00:00"


def test_one_mlflow_version_per_candidate_tagged_with_run_partition_and_window(trained):
    tmp_path, store, _, result = trained
    frame = result.output_for_node("knn_shadow__models")
    assert len(frame) == len(CANDIDATES)
    assert frame["dagster_run_id"].unique().tolist() == [result.run_id]
    registry = _registry(tmp_path).get()
    versions = registry.versions()
    assert sorted(v.version for v in versions) == sorted(frame["mlflow_version"].tolist())
    assert {v.model_id for v in versions} == set(frame["model_id"])
    for v in versions:
        assert v.tags[DAGSTER_RUN_TAG] == result.run_id
        assert v.tags[PARTITION_TAG] == LAST.isoformat()
        assert v.tags[WINDOW_START_TAG].startswith("2025-11-17T00:00:00")
        assert v.tags[WINDOW_END_TAG].startswith("2025-11-20T00:00:00")
        run = registry.run(v.version)
        assert run.data.tags[MODEL_ID_TAG] == v.model_id
        assert "in_sample.coverage" in run.data.metrics and "holdout.coverage" in run.data.metrics

    # the model loaded back is the one trained on the window's EURUSD closes
    bars = pd.concat([store.bars(d) for d in WINDOW])
    prices = bars.loc[bars["symbol"] == EURUSD, "close"].sort_index()
    for row in frame.itertuples():
        loaded = registry.load(int(row.mlflow_version))
        assert loaded.model_id == row.model_id
        params = knn.Params(tails=tuple(int(t) for t in row.tails.split(",")), horizon=row.horizon,
                            n_neighbors=row.k, distance_quantile=row.distance_quantile)
        assert loaded.params == params and loaded.n_train == row.n_train
        assert knn.train(prices, params).model_id == row.model_id
        scores = knn.score(loaded, prices)
        assert scores["coverage"] == pytest.approx(row.in_sample_coverage)
        assert scores["hit_rate"] == pytest.approx(row.in_sample_hit_rate)
        assert row.holdout_rows > 0 and 0 <= row.holdout_coverage <= 1

    meta = _metadata(result, "knn_shadow__models")
    assert meta["dagster/row_count"] == len(CANDIDATES)
    assert all(mid in meta["candidates"] for mid in frame["model_id"])


def test_rematerialising_a_partition_adds_no_version(trained):
    tmp_path, _, instance, first = trained
    again = _train(tmp_path, instance)
    assert again.success
    before = first.output_for_node("knn_shadow__models")
    after = again.output_for_node("knn_shadow__models")
    assert after["mlflow_version"].tolist() == before["mlflow_version"].tolist()
    assert after["model_id"].tolist() == before["model_id"].tolist()
    assert len(_registry(tmp_path).get().versions()) == len(CANDIDATES)


@pytest.mark.parametrize(("overrides", "field"), [
    ({"candidates": [CANDIDATES[0], {**CANDIDATES[1], "k": 0}]}, "candidates[1].k"),
    ({"candidates": [{**CANDIDATES[0], "distance_quantile": 1.5}]}, "candidates[0].distance_quantile"),
    ({"candidates": [{**CANDIDATES[0], "tails": [3, 3]}]}, "candidates[0].tails"),
    ({"days": 9}, "days"),
])
def test_a_bad_candidate_config_fails_before_training_naming_the_field(tmp_path, overrides, field):
    _write_days(StreamStore(tmp_path / "stream"))
    result = _train(tmp_path, dg.DagsterInstance.ephemeral(), **overrides)
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.message
    assert f"{field}:" in message, message
    assert not (tmp_path / "mlflow.sqlite").exists() or _registry(tmp_path).get().versions() == []


def test_the_defaults_check_out():
    config = KnnCandidates()
    assert config.problems() == []
    assert 2 <= len(config.candidates) <= 3 and config.days == 5 and config.epic == EURUSD
