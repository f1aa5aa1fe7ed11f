"""deploy/ checked statically (no Docker engine here): the production instance and workspace
against Dagster's schemas, and the Dockerfile against the repository and the stack.

Schema-valid is not working: the instance runs for real against PostgreSQL and moto in
test_postgres_instance.py, the stack is synthesised and linted in test_stack.py."""

import importlib
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
ENV = {"DAGSTER_PG_HOST": "db", "DAGSTER_PG_PORT": "5432", "DAGSTER_PG_USER": "dagster", "DAGSTER_PG_PASSWORD": "x",
       "DAGSTER_PG_DB": "dagster", "DAGSTER_LOG_BUCKET": "logs", "DAGSTER_RUN_TASK_DEFINITION": "trading-run"}


def env_references(node) -> set[str]:
    """Every `{env: NAME}` in a parsed YAML document."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(env_references(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(env_references(v) for v in node)) if node else set()
    return set()


@pytest.fixture
def prod_config(monkeypatch):
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    config, _ = dagster_instance_config(str(DEPLOY))
    return config


def test_production_instance_config_is_valid(prod_config):
    assert prod_config["run_launcher"]["class"] == "EcsRunLauncher"
    assert prod_config["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    assert prod_config["concurrency"]["runs"]["tag_concurrency_limits"][0]["key"] == "broker"
    assert prod_config["run_monitoring"]["enabled"] is True
    assert prod_config["telemetry"]["enabled"] is False


def test_every_deployment_specific_value_comes_from_the_environment():
    raw = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    pg = raw["storage"]["postgres"]["postgres_db"]
    for key in ("hostname", "port", "username", "password", "db_name"):
        assert set(pg[key]) == {"env"}, key
    assert env_references(raw) == set(ENV)
    assert "region" not in raw["compute_logs"]["config"]  # boto3's chain (AWS_REGION on ECS)
    assert "endpoint_url" not in raw["compute_logs"]["config"]


@pytest.mark.parametrize("section", ["run_launcher", "compute_logs"])
def test_pluggable_classes_accept_their_config(prod_config, section):
    entry = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())[section]
    klass = getattr(importlib.import_module(entry["module"]), entry["class"])
    result = process_config(klass.config_type(), entry["config"])
    assert result.success, result.errors


def test_production_workspace_is_the_code_server_over_grpc(monkeypatch):
    from dagster._core.workspace.config_schema import process_workspace_config

    monkeypatch.setenv("DAGSTER_CODE_SERVER_HOST", "code.trading.local")
    monkeypatch.setenv("DAGSTER_CODE_SERVER_PORT", "4000")
    raw = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
    result = process_workspace_config(raw)
    assert result.success, result.errors
    [entry] = raw["load_from"]
    assert entry["grpc_server"]["location_name"] == "trading_assets"
    assert env_references(raw) == {"DAGSTER_CODE_SERVER_HOST", "DAGSTER_CODE_SERVER_PORT"}


def test_dockerfile_copies_what_exists_and_runs_our_module():
    text = (DEPLOY / "Dockerfile").read_text()
    for source in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, flags=re.M):
        for path in source.split():
            assert (ROOT / path).exists(), f"Dockerfile copies missing {path}"
    assert '"-m", "trading_assets.definitions"' in text
    importlib.import_module("trading_assets.definitions")
    # the stack sets TRADING_ENV; an image that said `local` would silently trade paper on ECS
    assert "TRADING_ENV" not in re.sub(r"#.*", "", text)


def test_dockerfile_puts_instance_and_workspace_where_the_stack_commands_look():
    text = (DEPLOY / "Dockerfile").read_text()
    [home] = re.findall(r"DAGSTER_HOME=(\S+)", text)
    assert re.search(r"^COPY deploy/dagster.yaml deploy/workspace.yaml \$\{DAGSTER_HOME\}/$", text, flags=re.M)
    stack = (DEPLOY / "stack.py").read_text()
    assert f'DAGSTER_HOME = "{home}"' in stack
    assert 'WORKSPACE = f"{DAGSTER_HOME}/workspace.yaml"' in stack


@pytest.mark.parametrize("program", ["dagster", "dagster-webserver", "dagster-daemon"])
def test_the_stack_commands_exist_in_the_environment_the_image_installs(program):
    assert (BIN / program).exists() or shutil.which(program), program
