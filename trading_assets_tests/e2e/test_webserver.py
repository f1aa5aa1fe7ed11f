"""What `make dev` shows: a real dagster-webserver serves the code location, and its
GraphQL API (what the UI renders) lists the flow's assets with lineage, partitions,
checks, the job and the schedule."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

QUERY = """
{
  assetNodes(group: {groupName: "ema_concentration", repositoryName: "__repository__",
                     repositoryLocationName: "trading_assets"}) {
    assetKey { path }
    dependencyKeys { path }
    isPartitioned
    pools
    assetChecksOrError { ... on AssetChecks { checks { name blocking } } }
  }
  schedulesOrError(repositorySelector: {repositoryName: "__repository__",
                                        repositoryLocationName: "trading_assets"}) {
    ... on Schedules { results { name cronSchedule executionTimezone pipelineName } }
  }
}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.daemon
def test_webserver_serves_lineage_partitions_checks_and_schedule(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "TRADING_DATA_DIR": str(tmp_path / "data")}
    server = subprocess.Popen(
        [str(BIN / "dagster-webserver"), "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/graphql"
    try:
        deadline = time.monotonic() + 180
        data = None
        while time.monotonic() < deadline:
            try:
                reply = requests.post(url, json={"query": QUERY}, timeout=10).json()
                data = reply.get("data") or {}
                if data.get("assetNodes"):
                    break
            except requests.RequestException:
                pass
            time.sleep(1)
        assert data and data["assetNodes"], f"webserver never served the assets: {data}"
    finally:
        server.terminate()
        server.wait(timeout=30)

    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    assert {"ema_concentration/bars", "ema_concentration/orders", "ema_concentration/equity"} <= set(nodes)
    orders_parents = [d["path"] for d in nodes["ema_concentration/orders"]["dependencyKeys"]]
    assert orders_parents == [["ema_concentration", "signals"]]
    assert nodes["ema_concentration/orders"]["isPartitioned"]
    assert nodes["ema_concentration/orders"]["pools"] == ["broker_api"]
    checks = nodes["ema_concentration/bars"]["assetChecksOrError"]["checks"]
    assert [(c["name"], c["blocking"]) for c in checks] == [("bars_complete_fresh_no_nan", True)]
    schedules = {s["name"]: s for s in data["schedulesOrError"]["results"]}
    schedule = schedules["ema_concentration_every_bar"]
    assert schedule["pipelineName"] == "ema_concentration_job"
    assert schedule["executionTimezone"] == "America/New_York"
