"""The code location loads cleanly the 1.13 way and the instance config is valid."""

import itertools
import warnings
from pathlib import Path

import dagster as dg
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def defs():
    from trading_assets.definitions import defs as load

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load()
        loaded.resolve_job_def("ema_concentration_job")
        loaded.resolve_asset_graph()
    ours = [w for w in caught if issubclass(w.category, DeprecationWarning) and "dagster" in str(w.filename)]
    assert not ours, [str(w.message) for w in ours]
    return loaded


def test_flow_assets_have_lineage_from_bars_to_equity(defs):
    graph = defs.resolve_asset_graph()
    chain = ["bars", "indicators", "signals", "orders", "transactions", "equity"]
    for parent, child in itertools.pairwise(chain):
        node = graph.get(dg.AssetKey(["ema_concentration", child]))
        assert dg.AssetKey(["ema_concentration", parent]) in node.parent_keys


def test_job_runs_in_process_and_has_the_schedule(defs):
    job = defs.resolve_job_def("ema_concentration_job")
    assert job.executor_def.name == "bounded_in_process"  # one process per run, pool waits bounded
    assert job.partitions_def is not None
    schedule = defs.resolve_schedule_def("ema_concentration_every_bar")
    assert schedule.job_name == job.name


def test_order_assets_use_the_broker_pool(defs):
    graph = defs.resolve_asset_graph()
    for name in ("orders", "transactions"):
        assert graph.get(dg.AssetKey(["ema_concentration", name])).pools == {"broker_api"}


def test_dagster_yaml_is_a_valid_instance_config(tmp_path):
    from dagster._core.instance.config import dagster_instance_config

    (tmp_path / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["telemetry"]["enabled"] is False
    assert config["concurrency"]["pools"]["default_limit"] == 1


def test_workspace_points_at_the_definitions_module():
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    [entry] = workspace["load_from"]
    assert entry["python_module"]["module_name"] == "trading_assets.definitions"


def test_unknown_trading_env_is_a_clear_error(monkeypatch):
    from trading_assets.settings import trading_env

    monkeypatch.setenv("TRADING_ENV", "prod")
    with pytest.raises(ValueError, match="TRADING_ENV='prod' is not available"):
        trading_env()


def test_every_asset_has_owners_flow_tags_and_a_link_to_its_source(defs):
    for spec in defs.resolve_all_asset_specs():
        name = spec.key.to_user_string()
        assert spec.owners == ["team:trading"], name
        assert spec.tags.get("flow") == spec.key.path[0], name
        assert spec.tags.get("kind") in {"tick", "alert", "backtest", "training"}, name
        [ref] = spec.metadata["dagster/code_references"].code_references
        assert Path(ref.file_path).is_file() and ref.file_path.startswith(str(ROOT / "trading_assets" / "defs")), name
        source = Path(ref.file_path).read_text().splitlines()[ref.line_number - 1:ref.line_number + 12]
        assert source[0].startswith("@") and any(line.startswith("def ") for line in source), name


def test_bars_are_due_after_each_bar_and_the_schedule_says_what_it_requests(defs):
    specs = {s.key.to_user_string(): s for s in defs.resolve_all_asset_specs()}
    policy = specs["ema_concentration/bars"].freshness_policy
    assert policy.deadline_cron == "5,35 10-15 * * 1-5" and policy.timezone == "America/New_York"
    schedule = defs.resolve_schedule_def("ema_concentration_every_bar")
    assert schedule.owners == ["team:trading"]
    assert "13 a day" in schedule.metadata["partitions"].value


def test_the_code_location_loads_in_aws_mode_without_calling_aws(monkeypatch):
    """The code server starts before any secret or table is needed (nothing is called at
    load: the endpoint below does not exist), and every resource the jobs use is bound."""
    from trading_assets.definitions import defs as load
    from trading_assets.resources.dynamodb_io_manager import DynamoDbLedgerIOManager
    from trading_assets.resources.io_managers import S3ParquetIOManager
    from trading_assets.resources.ledger import DynamoDbLedgerResource

    for name, value in {"TRADING_ENV": "aws", "AWS_REGION": "eu-west-1", "TRADING_S3_BUCKET": "prod-assets",
                        "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}.items():
        monkeypatch.setenv(name, value)
    loaded = load()
    loaded.resolve_job_def("ema_concentration_job")
    assert isinstance(loaded.resources["io_manager"], S3ParquetIOManager)
    assert loaded.resources["io_manager"].bucket == "prod-assets"
    assert isinstance(loaded.resources["ledger"], DynamoDbLedgerResource)
    assert isinstance(loaded.resources["ledger_io_manager"], DynamoDbLedgerIOManager)
    assert loaded.resources["ema_concentration_broker"].secret_id == "trading/brokers"
