"""deploy/ validated offline (no Docker engine here): the production instance config
against Dagster's schemas, and the Dockerfile against the repository."""

import importlib
import re
from pathlib import Path

import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ENV = {"DAGSTER_PG_HOST": "db", "DAGSTER_PG_USER": "dagster", "DAGSTER_PG_PASSWORD": "x",
       "DAGSTER_PG_DB": "dagster", "DAGSTER_LOG_BUCKET": "logs"}


@pytest.fixture
def prod_config(monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    config, _ = dagster_instance_config(str(DEPLOY))
    return config


def test_production_instance_config_is_valid(prod_config):
    assert prod_config["run_launcher"]["class"] == "EcsRunLauncher"
    assert prod_config["concurrency"]["runs"]["tag_concurrency_limits"][0]["key"] == "broker"
    assert prod_config["telemetry"]["enabled"] is False


@pytest.mark.parametrize("section", ["run_launcher", "compute_logs"])
def test_pluggable_classes_accept_their_config(prod_config, section):
    entry = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())[section]
    klass = getattr(importlib.import_module(entry["module"]), entry["class"])
    result = process_config(klass.config_type(), entry["config"])
    assert result.success, result.errors


def test_dockerfile_copies_what_exists_and_runs_our_module():
    text = (DEPLOY / "Dockerfile").read_text()
    for source in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, flags=re.M):
        for path in source.split():
            assert (ROOT / path).exists(), f"Dockerfile copies missing {path}"
    assert '"-m", "trading_assets.definitions"' in text
    importlib.import_module("trading_assets.definitions")
