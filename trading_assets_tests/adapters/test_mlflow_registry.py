"""The knn_shadow model registry against a real MLflow SQLite backend (no mocks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trading_assets import settings
from trading_assets.adapters.mlflow_registry import (
    CHAMPION,
    DAGSTER_RUN_TAG,
    MODEL_ID_TAG,
    PARTITION_TAG,
    WINDOW_END_TAG,
    WINDOW_START_TAG,
    ModelLoadError,
    ModelRegistry,
    UnknownModel,
)
from trading_assets.core.strategies import knn_forecast as knn
from trading_assets.resources.model_registry import ModelRegistryResource

TRAIN_BARS = 900


@pytest.fixture(scope="module")
def prices() -> pd.Series:
    """A random walk of 1-minute prices with a gap (a missing half hour) in the held-out part."""
    rng = np.random.default_rng(12)
    index = pd.date_range("2025-04-01 08:00", periods=1400, freq="1min", tz="UTC", name="timestamp")
    series = pd.Series(100 * np.exp(np.cumsum(rng.normal(0, 4e-4, len(index)))), index=index, name="price")
    return series.drop(series.index[1100:1130])


def fitted(prices: pd.Series, params: knn.Params) -> tuple[knn.KNNModel, dict[str, float]]:
    model = knn.train(prices.iloc[:TRAIN_BARS], params)
    return model, knn.score(model, prices.iloc[TRAIN_BARS:])


def registry(tmp_path: Path, name: str = "knn_shadow") -> ModelRegistry:
    return ModelRegistry(f"sqlite:///{tmp_path / 'mlflow.sqlite'}", (tmp_path / "mlruns").as_uri(), name=name)


def log(reg: ModelRegistry, prices: pd.Series, params: knn.Params, run_id: str = "dagster-run-1",
        partition: str = "2025-04-01"):
    model, metrics = fitted(prices, params)
    window = (prices.index[0], prices.index[TRAIN_BARS - 1])
    return model, metrics, reg.log_model(params, model, metrics, window, dagster_run_id=run_id,
                                         partition=partition, model_id=model.model_id)


def test_a_logged_model_loads_back_and_predicts_exactly_the_same_abstentions_included(tmp_path, prices):
    reg = registry(tmp_path)
    model, _, logged = log(reg, prices, knn.Params())
    loaded = reg.load(logged.version)
    assert loaded is not model and loaded.model_id == model.model_id
    held_out = knn.features(prices.iloc[TRAIN_BARS:], model.params)
    expected, got = knn.predict_frame(model, held_out), knn.predict_frame(loaded, held_out)
    pd.testing.assert_frame_equal(got, expected)
    assert expected["abstained"].any() and not expected["abstained"].all()  # both kinds are compared
    assert expected["reason"].str.contains("gap").any()  # the gap's abstentions too
    # by model id and by alias the same object comes back
    pd.testing.assert_frame_equal(knn.predict_frame(reg.load(model.model_id), held_out), expected)
    reg.promote(logged.version, "first model")
    assert reg.load(f"@{CHAMPION}").model_id == model.model_id


def test_params_metrics_and_tags_are_found_from_either_id(tmp_path, prices):
    reg = registry(tmp_path)
    params = knn.Params(tails=(1, 5, 15), n_lags=2, horizon=3, n_neighbors=7, distance_quantile=0.7)
    model, metrics, logged = log(reg, prices, params, run_id="run-abc", partition="2025-04-01")
    by_version, by_model = reg.find(logged.version), reg.find(model.model_id)
    assert by_version == by_model
    assert by_version.model_id == model.model_id and by_model.version == logged.version
    assert by_version.run_id == logged.run_id and logged.name == "knn_shadow"
    run = reg.run(model.model_id)
    assert run.info.run_id == logged.run_id
    assert run.data.params["tails"] == "1,5,15" and run.data.params["n_lags"] == "2"
    assert run.data.params["k"] == "7" and run.data.params["threshold_quantile"] == "0.7"
    assert run.data.params["horizon"] == "3"
    assert run.data.params["features"] == ",".join(model.feature_names)
    assert run.data.metrics["coverage"] == pytest.approx(metrics["coverage"])
    assert run.data.metrics["hit_rate"] == pytest.approx(metrics["hit_rate"])
    assert run.data.metrics["fit.threshold"] == pytest.approx(model.threshold)
    for tags in (run.data.tags, by_version.tags):
        assert tags[MODEL_ID_TAG] == model.model_id
        assert tags[DAGSTER_RUN_TAG] == "run-abc" and tags[PARTITION_TAG] == "2025-04-01"
        assert pd.Timestamp(tags[WINDOW_START_TAG]) == prices.index[0]
        assert pd.Timestamp(tags[WINDOW_END_TAG]) == prices.index[TRAIN_BARS - 1]
    # the run points at its registered version too
    assert run.data.tags["registry.name"] == "knn_shadow" and run.data.tags["registry.version"] == str(logged.version)
    with pytest.raises(UnknownModel, match="knn-0000"):
        reg.find("knn-0000")


def test_two_configurations_are_two_versions_and_relogging_one_adds_none(tmp_path, prices):
    reg = registry(tmp_path)
    _, _, first = log(reg, prices, knn.Params())
    _, _, second = log(reg, prices, knn.Params(tails=(1, 3), n_neighbors=9))
    assert (first.version, second.version) == (1, 2) and first.run_id != second.run_id
    _, _, again = log(reg, prices, knn.Params(), run_id="dagster-run-2")  # a rerun of the partition
    assert again == first
    assert [v.version for v in reg.versions()] == [1, 2]


def test_promote_and_demote_move_the_champion_and_record_why(tmp_path, prices):
    reg = registry(tmp_path)
    _, _, v1 = log(reg, prices, knn.Params())
    m2, _, v2 = log(reg, prices, knn.Params(tails=(1, 3), n_neighbors=9))
    assert reg.champion() is None
    reg.promote(v1.version, "baseline")
    reg.add_shadow(v2.version)
    assert [s.version for s in reg.shadow()] == [2]
    promoted = reg.promote(v2.version, "beat champion by 4% hit rate over 250 predictions")
    assert reg.champion().version == 2 and CHAMPION in promoted.aliases
    assert promoted.tags["champion.reason"].startswith("beat champion")
    assert reg.shadow() == []  # the champion is not a shadow
    assert [s.version for s in reg.shadow(listed=[v1.version])] == [1]  # listed in config
    back = reg.demote(v2.version, "drawdown over 2%")
    assert back is not None and back.version == 1 and reg.champion().version == 1
    with pytest.raises(ValueError, match="not the champion"):
        reg.demote(v2.version, "again")
    audit = reg.audit()
    assert [(a.action, a.version, a.previous, a.champion) for a in audit] == [
        ("promote", 1, None, 1), ("promote", 2, 1, 2), ("demote", 2, 2, 1)]
    assert audit[1].reason.startswith("beat champion") and audit[1].model_id == m2.model_id
    assert audit[2].reason == "drawdown over 2%"
    reg.demote(v1.version, "retire everything")
    assert reg.champion() is None
    with pytest.raises(ValueError, match="reason"):
        reg.promote(v1.version, " ")


def test_a_version_whose_artifact_is_gone_or_damaged_is_a_load_error_naming_it(tmp_path, prices):
    reg = registry(tmp_path)
    model, _, logged = log(reg, prices, knn.Params())
    source = reg.find(logged.version).source
    artifact = Path(source.removeprefix("file://")) / "model.pkl"
    assert artifact.is_file() and str(tmp_path / "mlruns") in str(artifact)
    artifact.write_bytes(artifact.read_bytes()[:-10])
    with pytest.raises(ModelLoadError, match=rf"knn_shadow version 1 \(model {model.model_id}\).*corrupt"):
        reg.load(logged.version)
    artifact.unlink()
    with pytest.raises(ModelLoadError, match=rf"knn_shadow version 1 \(model {model.model_id}\).*could not be read"):
        reg.load(model.model_id)


def test_two_registries_on_one_backend_see_each_others_writes(tmp_path, prices):
    writer, reader = registry(tmp_path), registry(tmp_path)
    other_flow = registry(tmp_path, name="knn_other")
    model, _, logged = log(writer, prices, knn.Params())
    assert reader.find(model.model_id).version == logged.version
    reader.promote(logged.version, "from the other process")
    assert writer.champion().version == logged.version
    assert writer.audit()[0].reason == "from the other process"
    assert writer.load(f"@{CHAMPION}").model_id == model.model_id
    with pytest.raises(UnknownModel):  # another registered name shares the backend, not the models
        other_flow.find(model.model_id)


def test_the_resource_uses_the_settings_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("TRADING_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(settings.MLFLOW_ARTIFACTS_ENV, raising=False)
    assert settings.mlflow_tracking_uri() == f"sqlite:///{tmp_path.resolve() / 'mlflow.sqlite'}"
    assert settings.mlflow_artifact_root() == (tmp_path.resolve() / "mlruns").as_uri()
    monkeypatch.setenv(settings.MLFLOW_ARTIFACTS_ENV, "s3://bucket/mlflow/")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql://db/mlflow")
    resource = ModelRegistryResource.from_settings()
    assert (resource.tracking_uri, resource.artifact_root) == ("postgresql://db/mlflow", "s3://bucket/mlflow")
    monkeypatch.setenv(settings.MLFLOW_ARTIFACTS_ENV, "gs://bucket")
    with pytest.raises(ValueError, match=settings.MLFLOW_ARTIFACTS_ENV):
        settings.mlflow_artifact_root()
    local = ModelRegistryResource(tracking_uri=f"sqlite:///{tmp_path / 'm.sqlite'}").get()
    assert isinstance(local, ModelRegistry) and local.name == "knn_shadow"


def test_artifacts_in_s3_load_back(tmp_path, prices, aws_env, monkeypatch):
    """aws mode: TRADING_MLFLOW_ARTIFACTS=s3://... (the suite's moto server; boto3 follows
    AWS_ENDPOINT_URL, and MLflow's S3 store is boto3)."""
    import boto3

    boto3.client("s3", region_name=aws_env.region).create_bucket(Bucket=aws_env.bucket)
    monkeypatch.setenv(settings.MLFLOW_ARTIFACTS_ENV, f"s3://{aws_env.bucket}/mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.sqlite'}")
    reg = ModelRegistryResource.from_settings().get()
    model, _, logged = log(reg, prices, knn.Params())
    assert reg.find(logged.version).source.startswith(f"s3://{aws_env.bucket}/mlflow/knn_shadow/")
    keys = [o["Key"] for o in boto3.client("s3", region_name=aws_env.region)
            .list_objects_v2(Bucket=aws_env.bucket)["Contents"]]
    assert any(k.endswith("/artifacts/model/model.pkl") for k in keys)
    held_out = knn.features(prices.iloc[TRAIN_BARS:], model.params)
    pd.testing.assert_frame_equal(knn.predict_frame(reg.load(model.model_id), held_out),
                                  knn.predict_frame(model, held_out))
