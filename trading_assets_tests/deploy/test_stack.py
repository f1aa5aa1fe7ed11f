"""TradingStack (deploy/stack.py) synthesised offline and checked as a template: the trading
world matches `adapters/aws/schema.py` and `settings`, the services get every variable the
code reads, IAM is scoped to the stack's own resources, the ALB routes, the assembly needs
no bootstrap and no context lookups, and cfn-lint finds no error.

Each synth costs seconds, so the fixtures are module-scoped: one synth per variant."""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")

from deploy import stack as stack_module
from deploy.app import build_app
from deploy.synth import cfn_lint, cloud_assembly_problems
from trading_assets import settings
from trading_assets.adapters.aws import schema

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
STACK = stack_module.STACK_NAME
CERT = "arn:aws:acm:us-east-1:123456789012:certificate/00000000-0000-0000-0000-000000000000"
NAMES = settings.AwsSettings(region="-", bucket="-")


class Synth:
    def __init__(self, outdir: Path):
        self.outdir = outdir
        self.template = json.loads((outdir / f"{STACK}.template.json").read_text())
        self.manifest = json.loads((outdir / "manifest.json").read_text())
        self.resources = self.template["Resources"]

    def of_type(self, kind: str) -> dict[str, dict]:
        return {k: r for k, r in self.resources.items() if r["Type"] == kind}

    def one(self, kind: str, **props) -> tuple[str, dict]:
        found = [(k, r) for k, r in self.of_type(kind).items()
                 if all(r["Properties"].get(p) == v for p, v in props.items())]
        assert len(found) == 1, (kind, props, [k for k, _ in found])
        return found[0]

    def task_definition(self, family_suffix: str) -> dict:
        _, r = self.one("AWS::ECS::TaskDefinition", Family=f"{STACK}-{family_suffix}")
        return r["Properties"]

    def container(self, family_suffix: str) -> dict:
        [container] = self.task_definition(family_suffix)["ContainerDefinitions"]
        return container

    def role_policies(self, role_logical_id: str) -> list[dict]:
        return [s for r in self.of_type("AWS::IAM::Policy").values()
                if {"Ref": role_logical_id} in r["Properties"]["Roles"]
                for s in r["Properties"]["PolicyDocument"]["Statement"]]

    def task_role(self, family_suffix: str) -> str:
        return self.task_definition(family_suffix)["TaskRoleArn"]["Fn::GetAtt"][0]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Synth:
    outdir = tmp_path_factory.mktemp("cdk.out")
    build_app(outdir=outdir).synth()
    return Synth(outdir)


@pytest.fixture(scope="module")
def https(tmp_path_factory) -> Synth:
    outdir = tmp_path_factory.mktemp("cdk.out.https")
    build_app(outdir=outdir, context={"certificate_arn": CERT}).synth()
    return Synth(outdir)


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _env(container: dict) -> dict:
    return {e["Name"]: e["Value"] for e in container.get("Environment", [])}


def _secrets(container: dict) -> dict:
    return {s["Name"]: s["ValueFrom"] for s in container.get("Secrets", [])}


def _yaml_env_references(path: Path) -> set[str]:
    found = set()

    def walk(node):
        if isinstance(node, dict):
            if set(node) == {"env"}:
                found.add(node["env"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(yaml.safe_load(path.read_text()))
    return found


# ----------------------------------------------------------------------------- assembly


def test_the_assembly_deploys_without_bootstrap_context_lookups_or_assets(synth, https):
    for variant in (synth, https):
        assert "missing" not in variant.manifest
        assert cloud_assembly_problems(variant.outdir, STACK) == []
        assert "CheckBootstrapVersion" not in variant.template.get("Rules", {})
        assert "BootstrapVersion" not in variant.template.get("Parameters", {})


def test_the_template_is_environment_agnostic(synth):
    text = json.dumps(synth.template)
    assert not re.search(r"\b\d{12}\b", text), "an account id is baked in"
    assert not re.search(r"\b(us|eu|ap|sa|ca|me|af)-[a-z]+-\d\b", text), "a region is baked in"
    # two AZs from Fn::GetAZs (no availability-zones context, no dummy1a subnets)
    subnets = synth.of_type("AWS::EC2::Subnet").values()
    assert len(subnets) == 6 and all("Fn::GetAZs" in json.dumps(s["Properties"]["AvailabilityZone"]) for s in subnets)


def test_cfn_lint_finds_no_error(synth, https):
    paths = [variant.outdir / f"{STACK}.template.json" for variant in (synth, https)]
    with ThreadPoolExecutor(2) as pool:  # two processes of ~3 s each, side by side
        for lint in pool.map(cfn_lint, paths):
            assert lint.returncode == 0, lint.stdout + lint.stderr


# ----------------------------------------------------------------------------- the trading world


def test_the_three_tables_are_the_schema_tables(synth):
    specs = schema.table_specs(NAMES.transactions_table, NAMES.equity_table, NAMES.orders_table)
    tables = synth.of_type("AWS::DynamoDB::Table")
    assert not synth.of_type("AWS::DynamoDB::GlobalTable")
    assert sorted(t["Properties"]["TableName"] for t in tables.values()) == sorted(specs)
    for table in tables.values():
        props, spec = table["Properties"], specs[table["Properties"]["TableName"]]
        assert props["KeySchema"] == spec["KeySchema"]
        assert sorted(props["AttributeDefinitions"], key=str) == sorted(spec["AttributeDefinitions"], key=str)
        got = sorted(({k: g[k] for k in ("IndexName", "KeySchema", "Projection")}
                      for g in props.get("GlobalSecondaryIndexes", [])), key=lambda g: g["IndexName"])
        assert got == sorted(spec.get("GlobalSecondaryIndexes", []), key=lambda g: g["IndexName"])
        assert props["BillingMode"] == spec["BillingMode"] == "PAY_PER_REQUEST"
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
        assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"


def test_the_alert_queue_is_fifo_with_a_fifo_dead_letter_queue(synth):
    dlq_id, dlq = synth.one("AWS::SQS::Queue", QueueName=NAMES.alert_dlq)
    _, queue = synth.one("AWS::SQS::Queue", QueueName=NAMES.alert_queue)
    q, d = queue["Properties"], dlq["Properties"]
    assert q["FifoQueue"] is True and d["FifoQueue"] is True  # AWS requires matching types (moto does not)
    assert q["VisibilityTimeout"] == schema.QUEUE_VISIBILITY_TIMEOUT_SECONDS
    assert q["MessageRetentionPeriod"] == schema.QUEUE_RETENTION_SECONDS
    assert d["MessageRetentionPeriod"] == schema.DLQ_RETENTION_SECONDS
    assert q["RedrivePolicy"] == {"deadLetterTargetArn": {"Fn::GetAtt": [dlq_id, "Arn"]},
                                  "maxReceiveCount": schema.QUEUE_MAX_RECEIVES}
    assert q.get("ContentBasedDeduplication") is not True  # dedup id = alert id
    assert q["SqsManagedSseEnabled"] is True and d["SqsManagedSseEnabled"] is True


def test_topic_secret_and_bucket(synth):
    synth.one("AWS::SNS::Topic", TopicName=schema.TOPIC_NAME)
    _, secret = synth.one("AWS::SecretsManager::Secret", Name=NAMES.secret_id)
    generate = secret["Properties"]["GenerateSecretString"]
    # no placeholders: a broker key the operator has not set is missing, and the code says so
    assert json.loads(generate["SecretStringTemplate"]) == {}
    assert generate["GenerateStringKey"] == "TRADINGVIEW_PASSPHRASE"

    [(_, bucket)] = synth.of_type("AWS::S3::Bucket").items()
    props = bucket["Properties"]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    [rule] = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert bucket["DeletionPolicy"] == "Retain"
    [(_, policy)] = synth.of_type("AWS::S3::BucketPolicy").items()
    [tls] = [s for s in policy["Properties"]["PolicyDocument"]["Statement"]
             if s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}]
    assert tls["Action"] == "s3:*"


def test_the_secret_documents_every_credential_the_code_reads():
    """Every dg.EnvVar("X") credential of the code is a key the runbook lists for the secret
    (the same names: EnvVar locally, the JSON secret in aws mode)."""
    names = set()
    for path in (ROOT / "trading_assets").rglob("*.py"):
        names |= set(re.findall(r"EnvVar(?:\.int)?\(\"([A-Z][A-Z0-9_]+)\"\)", path.read_text()))
    names |= set(stack_module.BROKER_SECRET_KEYS)
    assert {"ALPACA_API_KEY", "IG_API_KEY", "TRADOVATE_CID", "TWELVE_DATA_API_KEY"} <= names
    readme = (ROOT / "deploy" / "README.md").read_text()
    assert [n for n in sorted(names) if n not in readme] == []


def test_rds_postgres_is_pinned_encrypted_private_with_a_generated_secret(synth):
    [(_, db)] = synth.of_type("AWS::RDS::DBInstance").items()
    props = db["Properties"]
    assert props["Engine"] == "postgres"
    assert re.fullmatch(r"\d+\.\d+", props["EngineVersion"]), props["EngineVersion"]  # a pinned minor
    assert props["AutoMinorVersionUpgrade"] is False
    assert props["StorageEncrypted"] is True
    assert props["PubliclyAccessible"] is False
    assert props["DeletionProtection"] is True
    assert "resolve:secretsmanager" in json.dumps(props["MasterUserPassword"])


# ----------------------------------------------------------------------------- services


PROJECT_CODE = ("code", "run", "gateway", "worker")  # run trading_assets code
DAGSTER = ("code", "webserver", "daemon", "run", "gateway", "worker")  # open the Dagster instance


def test_every_aws_variable_is_set_on_each_task_that_runs_project_code(synth):
    for family in PROJECT_CODE:
        env = _env(synth.container(family))
        missing = set(settings.AWS_VARIABLES) - set(env)
        assert not missing, (family, missing)
        assert env["TRADING_ENV"] == "aws"
        assert env["AWS_REGION"] == {"Ref": "AWS::Region"}
        assert env["TRADING_SECRET_ID"] == NAMES.secret_id
        assert env["TRADING_ALERT_QUEUE"]["Fn::GetAtt"][1] == "QueueName"
        # paper by default, kill switch off, both switchable by parameter without a re-synth
        assert env[settings.KILL_SWITCH_ENV] == {"Ref": "KillSwitch"}
        assert env["TRADING_LIVE_TRADING"] == {"Ref": "LiveTrading"}
    params = synth.template["Parameters"]
    assert params["KillSwitch"]["Default"] == "0" and params["LiveTrading"]["Default"] == "false"
    assert params["AlpacaPaper"]["Default"] == "true" and params["IgAccType"]["Default"] == "demo"
    assert params["TradovateEnvironment"]["Default"] == "demo"


def test_every_instance_variable_is_set_and_the_password_is_an_ecs_secret(synth):
    instance_vars = _yaml_env_references(DEPLOY / "dagster.yaml")
    [(db_secret_attachment, _)] = synth.of_type("AWS::SecretsManager::SecretTargetAttachment").items()
    for family in DAGSTER:
        container = synth.container(family)
        env, secrets = _env(container), _secrets(container)
        assert instance_vars - {"DAGSTER_PG_PASSWORD"} <= set(env), (family, instance_vars - set(env))
        assert "DAGSTER_PG_PASSWORD" not in env
        assert secrets["DAGSTER_PG_PASSWORD"] == {"Fn::Join": ["", [{"Ref": db_secret_attachment}, ":password::"]]}
        assert env["DAGSTER_HOME"] == stack_module.DAGSTER_HOME
        # dagster.yaml leaves regions to boto3, whose variable is AWS_DEFAULT_REGION
        assert env["AWS_DEFAULT_REGION"] == {"Ref": "AWS::Region"}
        # no secret value in plain environment variables
        assert not [k for k in env if re.search(r"PASSWORD|SECRET_KEY|API_KEY|PASSPHRASE|_SEC$", k)], family


def test_workspace_host_is_the_code_servers_cloud_map_name(synth):
    workspace_vars = _yaml_env_references(DEPLOY / "workspace.yaml")
    [(_, namespace)] = synth.of_type("AWS::ServiceDiscovery::PrivateDnsNamespace").items()
    [(discovery_id, discovery)] = synth.of_type("AWS::ServiceDiscovery::Service").items()
    cloud_map_name = f"{discovery['Properties']['Name']}.{namespace['Properties']['Name']}"
    _, code_service = synth.one("AWS::ECS::Service", ServiceName=f"{STACK}-code")
    [registry] = code_service["Properties"]["ServiceRegistries"]
    assert registry["RegistryArn"] == {"Fn::GetAtt": [discovery_id, "Arn"]}
    code_port = synth.container("code")["PortMappings"][0]["ContainerPort"]
    assert "-p" in synth.container("code")["Command"] and str(code_port) in synth.container("code")["Command"]
    for family in ("webserver", "daemon"):
        env = _env(synth.container(family))
        assert workspace_vars <= set(env)
        assert env["DAGSTER_CODE_SERVER_HOST"] == cloud_map_name == "code.trading.local"
        assert env["DAGSTER_CODE_SERVER_PORT"] == str(code_port)
        assert synth.container(family)["Command"][-2:] == ["-w", stack_module.WORKSPACE]


def test_the_run_task_definition_is_the_one_the_launcher_is_given(synth):
    launcher = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())["run_launcher"]["config"]
    assert launcher["task_definition"] == {"env": "DAGSTER_RUN_TASK_DEFINITION"}
    run_id, _ = synth.one("AWS::ECS::TaskDefinition", Family=f"{STACK}-run")
    run = synth.container("run")
    assert run["Name"] == launcher["container_name"]
    assert run["Memory"] == 2048  # container-level memory
    assert "Command" not in run  # EcsRunLauncher overrides it per run
    assert synth.task_definition("run")["RequiresCompatibilities"] == ["FARGATE"]
    for family in ("daemon", "webserver"):  # the revision's ARN: a new revision redeploys them
        assert _env(synth.container(family))["DAGSTER_RUN_TASK_DEFINITION"] == {"Ref": run_id}


def test_services_commands_image_and_logs(synth):
    for name, command in stack_module.COMMANDS.items():
        assert synth.container(name)["Command"] == command
    assert stack_module.COMMANDS["gateway"] == ["python", "-m", "trading_assets", "gateway", "--host", "0.0.0.0",
                                                "--port", "8000"]
    images = {json.dumps(synth.container(f)["Image"]) for f in (*stack_module.COMMANDS, "run")}
    assert len(images) == 1 and '"Ref": "ImageTag"' in images.pop()  # ONE image, tag by parameter
    services = synth.of_type("AWS::ECS::Service")
    assert len(services) == 5
    for service in services.values():
        props = service["Properties"]
        assert props["LaunchType"] == "FARGATE"
        assert props["NetworkConfiguration"]["AwsvpcConfiguration"]["AssignPublicIp"] == "DISABLED"
        assert props["DeploymentConfiguration"]["DeploymentCircuitBreaker"] == {"Enable": True, "Rollback": True}
    _, daemon = synth.one("AWS::ECS::Service", ServiceName=f"{STACK}-daemon")
    assert daemon["Properties"]["DesiredCount"] == 1
    assert daemon["Properties"]["DeploymentConfiguration"]["MaximumPercent"] == 100  # never two daemons
    log_groups = synth.of_type("AWS::Logs::LogGroup")
    assert len(log_groups) == 6 and all(g["Properties"].get("RetentionInDays") for g in log_groups.values())
    for family in (*stack_module.COMMANDS, "run"):
        options = synth.container(family)["LogConfiguration"]["Options"]
        assert options["awslogs-group"]["Ref"] in log_groups


def test_credentials_are_read_from_secrets_manager_not_injected_per_key(synth):
    """Project code reads the secret at run time (TRADING_SECRET_ID, GetSecretValue on the
    role), so no task carries a broker key as an ECS secret; only Dagster's DB password."""
    for family in ("code", "run", "gateway", "worker", "webserver", "daemon"):
        assert set(_secrets(synth.container(family))) == {"DAGSTER_PG_PASSWORD"}, family
    for family in ("code", "run", "gateway", "worker"):
        env = {e["Name"]: e["Value"] for e in synth.container(family)["Environment"]}
        assert env["TRADING_SECRET_ID"] == NAMES.secret_id, family


# ----------------------------------------------------------------------------- IAM


def _statements(synth: Synth) -> list[dict]:
    return [s for r in synth.of_type("AWS::IAM::Policy").values()
            for s in r["Properties"]["PolicyDocument"]["Statement"]]


def test_resource_star_only_where_aws_requires_it(synth):
    star = set()
    for statement in _statements(synth):
        actions = _as_list(statement["Action"])
        assert not [a for a in actions if a == "*" or a.endswith(":*")], actions
        if "*" in _as_list(statement["Resource"]):
            star |= set(actions)
    assert star == set(stack_module.RESOURCE_STAR_ACTIONS), star


def test_project_code_roles_reach_only_the_stacks_own_resources(synth):
    tables = set(synth.of_type("AWS::DynamoDB::Table"))
    [bucket_id] = synth.of_type("AWS::S3::Bucket")
    queues, [topic] = set(synth.of_type("AWS::SQS::Queue")), synth.of_type("AWS::SNS::Topic")
    secret = next(k for k, r in synth.of_type("AWS::SecretsManager::Secret").items()
                  if r["Properties"].get("Name") == NAMES.secret_id)
    for family in PROJECT_CODE:
        statements = synth.role_policies(synth.task_role(family))
        services = {a.split(":")[0] for s in statements for a in _as_list(s["Action"])}
        assert services == {"dynamodb", "s3", "sqs", "sns", "secretsmanager"}, (family, services)
        for s in statements:
            resources = json.dumps(s["Resource"])
            service = _as_list(s["Action"])[0].split(":")[0]
            refs = set(re.findall(r'"(?:Ref|Fn::GetAtt)": \[?"(\w+)"', resources))
            expected = {"dynamodb": tables, "s3": {bucket_id}, "sqs": queues, "sns": {topic},
                        "secretsmanager": {secret}}[service]
            assert refs and refs <= expected, (family, s)
            if service == "s3":  # objects only under the asset (and, for runs, compute-log) prefixes
                prefixes = set(re.findall(r'"/([\w-]+)/\*"', resources))
                assert prefixes <= {NAMES.s3_prefix, stack_module.COMPUTE_LOG_PREFIX}, prefixes
        covered = {a for s in statements for a in _as_list(s["Action"])}
        assert {"dynamodb:PutItem", "dynamodb:Query", "dynamodb:ConditionCheckItem", "s3:PutObject",
                "sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sns:Publish",
                "secretsmanager:GetSecretValue"} <= covered
        # a table's indexes are in reach (GSI queries)
        assert "/index/*" in json.dumps(statements)
        assert not [a for a in covered if a.startswith(("ecs:", "iam:"))]


def test_launcher_permissions_daemon_launches_webserver_only_stops(synth):
    [(cluster_id, _)] = synth.of_type("AWS::ECS::Cluster").items()
    daemon = {s["Sid"]: s for s in synth.role_policies(synth.task_role("daemon"))}
    run_role = synth.task_role("run")
    run_execution_role = synth.task_definition("run")["ExecutionRoleArn"]["Fn::GetAtt"][0]
    assert daemon["RunTasksOfTheRunFamily"]["Action"] == "ecs:RunTask"
    assert f":task-definition/{STACK}-run:*" in json.dumps(daemon["RunTasksOfTheRunFamily"]["Resource"])
    assert daemon["RunTasksOfTheRunFamily"]["Condition"] == {
        "ArnEquals": {"ecs:cluster": {"Fn::GetAtt": [cluster_id, "Arn"]}}}
    assert daemon["PassTheRunTaskRoles"]["Resource"] == [{"Fn::GetAtt": [run_role, "Arn"]},
                                                         {"Fn::GetAtt": [run_execution_role, "Arn"]}]
    assert daemon["PassTheRunTaskRoles"]["Condition"] == {
        "StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}
    assert daemon["TagRunTasksAtLaunch"]["Condition"] == {"StringEquals": {"ecs:CreateAction": "RunTask"}}
    for sid in ("WatchAndStopRunTasks", "TagRunTasksAtLaunch"):
        assert f'":task/", {{"Ref": "{cluster_id}"}}, "/*"' in json.dumps(daemon[sid]["Resource"])
    assert set(daemon) == {"DescribeRunTaskDefinition", "WatchAndStopRunTasks", "RunTasksOfTheRunFamily",
                           "TagRunTasksAtLaunch", "ReadOwnNetworkInterface", "PassTheRunTaskRoles",
                           "ReadFailedRunLogs"}
    webserver_actions = {a for s in synth.role_policies(synth.task_role("webserver")) for a in _as_list(s["Action"])}
    assert not webserver_actions & {"ecs:RunTask", "iam:PassRole", "ecs:TagResource"}
    assert {"ecs:DescribeTasks", "ecs:StopTask", "s3:GetObject*"} <= webserver_actions
    # only the run task's roles can be passed, by anyone
    passed = [s for s in _statements(synth) if "iam:PassRole" in _as_list(s["Action"])]
    assert passed == [daemon["PassTheRunTaskRoles"]]


# ----------------------------------------------------------------------------- ALB and alarms


def _rules(synth: Synth, listener_id: str) -> dict[int, dict]:
    return {r["Properties"]["Priority"]: r["Properties"] for r in synth.of_type(
        "AWS::ElasticLoadBalancingV2::ListenerRule").values() if r["Properties"]["ListenerArn"] == {"Ref": listener_id}}


def _target_port(synth: Synth, action: dict) -> int:
    [group] = action["ForwardConfig"]["TargetGroups"] if "ForwardConfig" in action else [
        {"TargetGroupArn": action["TargetGroupArn"]}]
    return synth.resources[group["TargetGroupArn"]["Ref"]]["Properties"]["Port"]


def _check_routes(synth: Synth, listener_id: str) -> None:
    listener = synth.resources[listener_id]["Properties"]
    assert listener["DefaultActions"][0]["Type"] == "fixed-response"
    assert listener["DefaultActions"][0]["FixedResponseConfig"]["StatusCode"] == "403"
    rules = _rules(synth, listener_id)
    [webhooks] = rules[10]["Conditions"]
    assert webhooks["Field"] == "path-pattern" and webhooks["PathPatternConfig"]["Values"] == ["/webhooks/*", "/health"]
    assert _target_port(synth, rules[10]["Actions"][0]) == stack_module.GATEWAY_PORT
    [ui] = rules[20]["Conditions"]
    assert ui["Field"] == "source-ip" and ui["SourceIpConfig"]["Values"] == [{"Ref": "WebserverAllowedCidr"}]
    assert _target_port(synth, rules[20]["Actions"][0]) == stack_module.WEBSERVER_PORT


def test_alb_routes_webhooks_to_the_gateway_and_the_ui_only_from_the_allowed_cidr(synth):
    [(_, alb)] = synth.of_type("AWS::ElasticLoadBalancingV2::LoadBalancer").items()
    assert alb["Properties"]["Scheme"] == "internet-facing"
    [(listener_id, listener)] = synth.of_type("AWS::ElasticLoadBalancingV2::Listener").items()
    assert (listener["Properties"]["Port"], listener["Properties"]["Protocol"]) == (80, "HTTP")
    _check_routes(synth, listener_id)
    groups = {g["Properties"]["Port"]: g["Properties"] for g in
              synth.of_type("AWS::ElasticLoadBalancingV2::TargetGroup").values()}
    assert groups[stack_module.GATEWAY_PORT]["HealthCheckPath"] == "/health"
    assert groups[stack_module.WEBSERVER_PORT]["HealthCheckPath"] == "/server_info"


def test_with_a_certificate_https_serves_the_routes_and_http_redirects(https):
    listeners = {r["Properties"]["Port"]: (k, r["Properties"])
                 for k, r in https.of_type("AWS::ElasticLoadBalancingV2::Listener").items()}
    https_id, secure = listeners[443]
    assert secure["Protocol"] == "HTTPS" and secure["Certificates"] == [{"CertificateArn": CERT}]
    _check_routes(https, https_id)
    _, plain = listeners[80]
    assert plain["DefaultActions"][0]["Type"] == "redirect"
    assert plain["DefaultActions"][0]["RedirectConfig"]["Protocol"] == "HTTPS"
    assert not _rules(https, listeners[80][0])


def test_alarms_on_the_dlq_and_on_run_failures_notify_the_topic(synth):
    [topic] = synth.of_type("AWS::SNS::Topic")
    dlq_id, _ = synth.one("AWS::SQS::Queue", QueueName=NAMES.alert_dlq)
    alarms = {a["Properties"]["MetricName"]: a["Properties"] for a in synth.of_type("AWS::CloudWatch::Alarm").values()}
    dlq = alarms["ApproximateNumberOfMessagesVisible"]
    assert dlq["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": [dlq_id, "QueueName"]}}]
    assert (dlq["Threshold"], dlq["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    runs = alarms["RunFailures"]
    assert (runs["Threshold"], runs["ComparisonOperator"]) == (1, "GreaterThanOrEqualToThreshold")
    for alarm in (dlq, runs):
        assert alarm["AlarmActions"] == [{"Ref": topic}]
    filters = {f["Properties"]["LogGroupName"]["Ref"]: f["Properties"]
               for f in synth.of_type("AWS::Logs::MetricFilter").values()}
    run_logs = synth.container("run")["LogConfiguration"]["Options"]["awslogs-group"]["Ref"]
    assert "RUN_FAILURE" in filters[run_logs]["FilterPattern"]
    daemon_logs = synth.container("daemon")["LogConfiguration"]["Options"]["awslogs-group"]["Ref"]
    assert all(f'"{term}"' in filters[daemon_logs]["FilterPattern"] for term in stack_module.RUN_MONITORING_FAILURES)
    assert all(f["MetricTransformations"][0]["MetricName"] == "RunFailures" for f in filters.values())
