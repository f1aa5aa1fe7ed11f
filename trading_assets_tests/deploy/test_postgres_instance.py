"""The production Dagster instance (deploy/dagster.yaml, deploy/workspace.yaml) run for real,
offline: PostgreSQL 15 from `initdb`, S3 and ECS from moto.

Only what cannot exist on this machine is swapped, and each swap is named here:
- the run launcher: EcsRunLauncher needs ECS to run the task, so the daemon test uses the
  default launcher (the run executes in a process on this machine); the second test keeps
  EcsRunLauncher and launches into moto's ECS instead, with `use_current_ecs_task_config`
  off because there is no ECS task metadata endpoint here (the cluster and network the
  daemon's own task would supply are given as `run_task_kwargs`);
- the hosts: DAGSTER_PG_*, DAGSTER_CODE_SERVER_* and AWS_ENDPOINT_URL point at 127.0.0.1.
Storage (psycopg2 scheme included), compute logs on S3, the run queue and its limits, run
monitoring and the gRPC workspace are the production ones, unchanged.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path

import boto3
import dagster as dg
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
TICK = "2025-11-18-12:30"  # TQQQ turns bullish in the replay data: the tick buys
JOB = "ema_concentration_job"
LOG_BUCKET = "trading-test-logs"
RUN_TASK_FAMILY = "trading-run"

pytestmark = pytest.mark.daemon


def production_config() -> dict:
    return yaml.safe_load((DEPLOY / "dagster.yaml").read_text())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def prod_env(tmp_path, monkeypatch, postgres_server, aws_env, moto_server):
    """A fresh database, the moto log bucket, and the production instance's variables set
    (in this process, and inherited by the subprocesses)."""
    db = postgres_server.create_database(f"dagster_{uuid.uuid4().hex[:8]}")
    boto3.client("s3").create_bucket(Bucket=LOG_BUCKET)
    home, data = tmp_path / "dagster_home", tmp_path / "data"
    home.mkdir()
    env = {**postgres_server.dagster_env(db), "DAGSTER_LOG_BUCKET": LOG_BUCKET, "DAGSTER_HOME": str(home),
           "TRADING_ENV": "local", "TRADING_DATA_DIR": str(data), "DAGSTER_RUN_TASK_DEFINITION": RUN_TASK_FAMILY}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return home, data, db


def _write_instance(home: Path, config: dict) -> None:
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def _stop(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def _wait_for_code_server(port: int, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    from dagster._grpc.client import DagsterGrpcClient

    client = DagsterGrpcClient(port=port, host="127.0.0.1")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"code server exited:\n{log.read_text()[-3000:]}"
        with contextlib.suppress(Exception):
            client.list_repositories()
            return
        time.sleep(0.3)
    raise AssertionError(f"code server not ready after {timeout} s:\n{log.read_text()[-3000:]}")


def test_daemon_runs_a_queued_tick_on_the_production_instance_over_postgres(prod_env, postgres_server,
                                                                          monkeypatch, tmp_path):
    home, data, db = prod_env
    config = production_config()
    # The one swap: EcsRunLauncher -> the default launcher (the run executes here).
    assert config.pop("run_launcher")["class"] == "EcsRunLauncher"
    _write_instance(home, config)
    port = _free_port()
    monkeypatch.setenv("DAGSTER_CODE_SERVER_HOST", "127.0.0.1")
    monkeypatch.setenv("DAGSTER_CODE_SERVER_PORT", str(port))
    env = dict(os.environ)
    workspace = str(DEPLOY / "workspace.yaml")  # production workspace: the gRPC code server

    code_log, daemon_log = tmp_path / "code_server.log", tmp_path / "daemon.log"
    # The code server as the image's CMD runs it (deploy/Dockerfile), on 127.0.0.1.
    with code_log.open("wb") as code_out, daemon_log.open("wb") as daemon_out:
        code = subprocess.Popen(
            [str(BIN / "dagster"), "code-server", "start", "-h", "127.0.0.1", "-p", str(port),
             "-m", "trading_assets.definitions"],
            cwd=ROOT, env=env, stdout=code_out, stderr=subprocess.STDOUT, start_new_session=True)
        daemon = subprocess.Popen(
            [str(BIN / "dagster-daemon"), "run", "-w", workspace],
            cwd=ROOT, env=env, stdout=daemon_out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_code_server(port, code, code_log)
        launch = subprocess.run(
            [str(BIN / "dagster"), "job", "launch", "-w", workspace, "-j", JOB,
             "--tags", json.dumps({"dagster/partition": TICK})],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert launch.returncode == 0, launch.stderr[-3000:]
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            [run] = instance.get_runs()
            deadline = time.monotonic() + 120
            while not (run := instance.get_run_by_id(run.run_id)).is_finished and time.monotonic() < deadline:
                time.sleep(0.5)
            events = [e.dagster_event.event_type_value for e in instance.all_logs(run.run_id) if e.dagster_event]
            assert run.status == dg.DagsterRunStatus.SUCCESS, (events, daemon_log.read_text()[-3000:],
                                                               code_log.read_text()[-3000:])
            assert "PIPELINE_ENQUEUED" in events and "PIPELINE_STARTING" in events  # the daemon dequeued it
        finally:
            instance.dispose()
    finally:
        _stop(daemon)
        _stop(code)

    # The run and its events are rows in PostgreSQL (not a SQLite file under DAGSTER_HOME).
    assert not list(home.glob("**/*.db")), list(home.glob("**/*.db"))
    conn = postgres_server.connect(db)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT status, pipeline_name FROM runs WHERE run_id = %s", (run.run_id,))
            assert cur.fetchone() == ("SUCCESS", JOB)
            cur.execute("SELECT dagster_event_type, count(*) FROM event_logs WHERE run_id = %s "
                        "AND dagster_event_type IS NOT NULL GROUP BY 1", (run.run_id,))
            counts = dict(cur.fetchall())
    finally:
        conn.close()
    assert counts.get("PIPELINE_SUCCESS") == 1 and counts.get("ASSET_MATERIALIZATION", 0) >= 5, counts

    # Compute logs went to the S3 bucket (moto), under the configured prefix.
    s3 = boto3.client("s3")
    deadline, keys = time.monotonic() + 20, []
    while time.monotonic() < deadline:
        listing = s3.list_objects_v2(Bucket=LOG_BUCKET, Prefix=f"compute-logs/storage/{run.run_id}/")
        keys = [o["Key"] for o in listing.get("Contents", [])]
        if any(k.endswith(".err") for k in keys):
            break
        time.sleep(0.5)
    assert any(k.endswith(".err") for k in keys), keys
    body = b"".join(s3.get_object(Bucket=LOG_BUCKET, Key=k)["Body"].read() for k in keys)
    assert b"STEP_START" in body or b"orders" in body, body[:2000]

    # The run worker writes its events to its console (on ECS: the run log group, which
    # the stack's RUN_FAILURE metric filter scans): the event names appear verbatim.
    assert "RUN_SUCCESS" in (code_log.read_text() + daemon_log.read_text())

    # And the tick did its job: one buy of TQQQ, filled, in the local ledger.
    from trading_assets.adapters.sqlite.ledger import SqliteLedger

    [intent] = SqliteLedger(data / "ledger.sqlite").intents("ema_concentration", TICK)
    assert (intent.symbol, intent.side.value, intent.status) == ("TQQQ", "buy", "filled")


def _run_task_definition(ecs, family: str, container: str) -> None:
    """Shaped as TradingStack declares its tasks: awsvpc, FARGATE, container-level memory
    (moto needs it; AWS accepts task-level only), the password as an ECS secret."""
    ecs.register_task_definition(
        family=family, networkMode="awsvpc", requiresCompatibilities=["FARGATE"], cpu="1024", memory="2048",
        taskRoleArn=f"arn:aws:iam::123456789012:role/{family}-task",
        executionRoleArn=f"arn:aws:iam::123456789012:role/{family}-execution",
        containerDefinitions=[{
            "name": container, "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/trading-assets:test",
            "memory": 2048, "essential": True,
            "environment": [{"name": "TRADING_ENV", "value": "aws"}],
            "secrets": [{"name": "DAGSTER_PG_PASSWORD",
                         "valueFrom": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf:password::"}],
        }])


@pytest.fixture
def daemon_task(monkeypatch):
    """moto's ECS world with the daemon's own task running in it, and the ECS task metadata
    endpoint (ECS_CONTAINER_METADATA_URI_V4, which the ECS agent serves inside every task)
    faked on 127.0.0.1, so `use_current_ecs_task_config: true` works as on ECS: the
    launcher reads the cluster, subnets and security groups from the daemon's task."""
    ec2, ecs = boto3.client("ec2"), boto3.client("ecs")
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})  # as the stack's VPC
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="daemon", Description="daemon", VpcId=vpc)["GroupId"]
    cluster = ecs.create_cluster(clusterName="trading")["cluster"]["clusterArn"]
    _run_task_definition(ecs, RUN_TASK_FAMILY, "run")
    _run_task_definition(ecs, "trading-daemon", "daemon")
    [daemon] = ecs.run_task(
        cluster=cluster, taskDefinition="trading-daemon", launchType="FARGATE",
        networkConfiguration={"awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [group],
                                                      "assignPublicIp": "DISABLED"}})["tasks"]
    metadata = json.dumps({"Cluster": cluster, "TaskARN": daemon["taskArn"]}).encode()

    class Metadata(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/task" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(metadata if self.path == "/task" else b"{}")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Metadata)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("ECS_CONTAINER_METADATA_URI_V4", f"http://127.0.0.1:{server.server_address[1]}")
    try:
        yield {"cluster": cluster, "subnet": subnet, "group": group, "daemon_task": daemon["taskArn"]}
    finally:
        server.shutdown()
        server.server_close()


def test_ecs_run_launcher_with_the_production_config_starts_one_fargate_task_per_run(
        prod_env, postgres_server, daemon_task):
    from dagster._core.remote_origin import InProcessCodeLocationOrigin
    from dagster._core.test_utils import create_run_for_test
    from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

    home, _, _ = prod_env
    config = production_config()
    assert config["run_launcher"]["config"]["use_current_ecs_task_config"] is True
    _write_instance(home, config)  # unchanged: the production instance as it is

    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert type(instance.run_launcher).__name__ == "EcsRunLauncher"
        # The code location loaded in this process (what the code server serves in production).
        origin = InProcessCodeLocationOrigin(
            LoadableTargetOrigin(executable_path=sys.executable, module_name="trading_assets.definitions",
                                 working_directory=str(ROOT)),
            location_name="trading_assets")
        with warnings.catch_warnings():
            # Dagster's in-process snapshot reads its own deprecated ScheduleDefinition
            # property (not our code); the suite turns dagster deprecations into errors.
            warnings.simplefilter("ignore", DeprecationWarning)
            context = WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin))
        with context:
            workspace = context.create_request_context()
            [repo] = workspace.get_code_location("trading_assets").get_repositories().values()
            remote_job = repo.get_full_job(JOB)
            run = create_run_for_test(instance, job_name=JOB, tags={"dagster/partition": TICK},
                                      remote_job_origin=remote_job.get_remote_origin(),
                                      job_code_origin=remote_job.get_python_origin())
            instance.launch_run(run.run_id, workspace)
        run = instance.get_run_by_id(run.run_id)
    finally:
        instance.dispose()

    ecs = boto3.client("ecs")
    cluster = daemon_task["cluster"]
    [task_arn] = set(ecs.list_tasks(cluster=cluster)["taskArns"]) - {daemon_task["daemon_task"]}
    [task] = ecs.describe_tasks(cluster=cluster, tasks=[task_arn], include=["TAGS"])["tasks"]
    assert run.tags["ecs/task_arn"] == task_arn
    assert task["taskDefinitionArn"].split("/")[-1].startswith(f"{RUN_TASK_FAMILY}:")
    assert task["launchType"] == "FARGATE"
    # Network from the daemon's own task: its subnet and its security group.
    [eni] = [a for a in task["attachments"] if a["type"] == "ElasticNetworkInterface"]
    details = {d["name"]: d["value"] for d in eni["details"]}
    assert details["subnetId"] == daemon_task["subnet"]
    [interface] = boto3.client("ec2").describe_network_interfaces(
        NetworkInterfaceIds=[details["networkInterfaceId"]])["NetworkInterfaces"]
    assert [g["GroupId"] for g in interface["Groups"]] == [daemon_task["group"]]
    # The stack's task definition was used as it is: the launcher registered none of its own.
    assert ecs.list_task_definitions(familyPrefix="run")["taskDefinitionArns"] == []
    assert {t["key"]: t["value"] for t in task["tags"]}["dagster/run_id"] == run.run_id

    [override] = task["overrides"]["containerOverrides"]
    assert override["name"] == "run"
    command = override["command"]
    assert command[:3] == ["dagster", "api", "execute_run"]
    # ECS caps overrides at 8 KB; the whole command must fit with room to spare.
    assert len(json.dumps(task["overrides"])) < 8192
    # The serialised instance ref names the password's variable, never its value.
    text = json.dumps(command)
    assert "DAGSTER_PG_PASSWORD" in text
    assert postgres_server.password not in text
    assert "postgresql+psycopg2" in text
