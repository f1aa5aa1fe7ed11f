"""TradingStack: the production AWS world of trading_assets, as one CDK stack in Python.

Synthesised offline (no CDK CLI, no Docker, no AWS account: `make synth`, deploy/synth.py)
into a plain CloudFormation template that `cdk deploy` or `aws cloudformation deploy` can
deploy. What it holds (see deploy/README.md for the runbook):

- network: a VPC over 2 AZs (public, private-with-egress through one NAT gateway,
  isolated for the database), S3 and DynamoDB gateway endpoints; env-agnostic (no
  `env=`), so no context lookups;
- compute: one ECS Fargate cluster, all tasks from ONE image (ECR repository and tag are
  parameters) with the command choosing the role: the Dagster code server (Cloud Map name
  `code.trading.local`, which deploy/workspace.yaml reaches through
  DAGSTER_CODE_SERVER_HOST), webserver, daemon, the HTTP gateway (TradingView webhooks),
  and the run task definition EcsRunLauncher starts one task of per run;
- Dagster's storage: RDS PostgreSQL (pinned minor, encrypted, generated secret; the
  password reaches the tasks as the ECS secret DAGSTER_PG_PASSWORD);
- the trading world, its shapes imported from trading_assets (settings.AwsSettings for
  the names, adapters/aws/schema.py for the keys, indexes and queue timings), so the
  bootstrap command and this stack cannot drift: the S3 bucket (assets and compute logs),
  the three DynamoDB tables, the SQS FIFO alert queue and its FIFO DLQ, the SNS topic, and
  one Secrets Manager JSON secret for the broker and webhook secrets;
- an internet-facing ALB: `/webhooks/*` and `/health` to the gateway, the Dagster UI only
  from the `WebserverAllowedCidr` (the OSS webserver has no authentication);
- least-privilege IAM (each service's task role holds only what that service calls; the
  `"Resource": "*"` statements are the ones AWS requires, see RESOURCE_STAR_ACTIONS);
- CloudWatch log groups with retention, and alarms (DLQ not empty, run failures) to the
  SNS topic.
"""

from __future__ import annotations

import json
from pathlib import Path

import aws_cdk as cdk
import yaml
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from trading_assets import settings
from trading_assets.adapters.aws import schema
from trading_assets.resources.brokers import AlpacaBrokerResource, IGBrokerResource, TradovateBrokerResource
from trading_assets.resources.market_data import AlpacaBarsResource, IGPricesResource, TwelveDataResource

#: The resources whose credentials live in the secret (their SECRET_KEYS name the keys).
SECRET_RESOURCES = (AlpacaBrokerResource, IGBrokerResource, TradovateBrokerResource,
                    AlpacaBarsResource, IGPricesResource, TwelveDataResource)

HERE = Path(__file__).resolve().parent
STACK_NAME = "TradingStack"

# The production instance and workspace, read so names used on both sides agree.
INSTANCE = yaml.safe_load((HERE / "dagster.yaml").read_text())
COMPUTE_LOG_PREFIX: str = INSTANCE["compute_logs"]["config"]["prefix"]
RUN_CONTAINER: str = INSTANCE["run_launcher"]["config"]["container_name"]

# Paths inside the image (deploy/Dockerfile).
DAGSTER_HOME = "/opt/dagster/home"
WORKSPACE = f"{DAGSTER_HOME}/workspace.yaml"
DATA_DIR = "/opt/dagster/data"

CODE_PORT, WEBSERVER_PORT, GATEWAY_PORT = 4000, 3000, 8000
NAMESPACE, CODE_SERVICE = "trading.local", "code"
DB_USER = DB_NAME = "dagster"
POSTGRES_VERSION = rds.PostgresEngineVersion.VER_17_6  # pinned minor (auto minor upgrades off)

COMMANDS = {
    "code": ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", str(CODE_PORT),
             "-m", "trading_assets.definitions"],
    "webserver": ["dagster-webserver", "-h", "0.0.0.0", "-p", str(WEBSERVER_PORT), "-w", WORKSPACE],
    "daemon": ["dagster-daemon", "run", "-w", WORKSPACE],
    "gateway": ["python", "-m", "trading_assets", "gateway", "--host", "0.0.0.0", "--port", str(GATEWAY_PORT)],
    # the alert fast path: runs each stored TradingView alert at once (the daemon's sensor is
    # the safety net when it is down)
    "worker": ["python", "-m", "trading_assets", "worker"],
}

#: The JSON keys of the one broker/webhook secret (its name: settings' default secret_id).
#: The code reads them from Secrets Manager at run time (TRADING_SECRET_ID; the task roles
#: may GetSecretValue on it), so nothing is injected per key and a key that is missing is
#: a clear error naming it and the secret, at the first run that needs it. The stack
#: creates the secret with only a random TRADINGVIEW_PASSPHRASE; operators add the broker
#: keys with put-secret-value (README: "Secrets"), and the template never changes for it.
BROKER_SECRET_KEYS = tuple(sorted({key for resource in SECRET_RESOURCES for key in resource.SECRET_KEYS.values()}))
GATEWAY_SECRET_KEYS = ("TRADINGVIEW_PASSPHRASE",)

#: What the daemon's run monitoring logs when it fails a run (dagster/_daemon/monitoring/
#: run_monitoring.py): worker died ("Detected run worker status ... Marking run <id> as
#: failed"), never started, ran past max_runtime_seconds.
RUN_MONITORING_FAILURES = ("Marking run", "timed out due to taking longer than", "exceeding maximum runtime")

#: The only actions granted on `"Resource": "*"`, each because AWS offers no narrower
#: resource for it (the test fails on any other):
RESOURCE_STAR_ACTIONS = {
    # ECS execution roles pulling the image: the registry token is account-wide (the
    # pull itself, ecr:BatchGetImage and friends, is scoped to the repository).
    "ecr:GetAuthorizationToken": "execution roles (CDK's from_ecr_repository grant)",
    # EcsRunLauncher resolves the run task definition at start; DescribeTaskDefinition
    # supports no resource-level permission.
    "ecs:DescribeTaskDefinition": "daemon and webserver (EcsRunLauncher)",
    # use_current_ecs_task_config reads the daemon's own ENI (security groups, public
    # IP); EC2 Describe* calls support no resource-level permission.
    "ec2:DescribeNetworkInterfaces": "daemon (EcsRunLauncher)",
}


class TradingStack(cdk.Stack):
    """The stack. `certificate_arn` (context `certificate_arn`) adds the HTTPS listener;
    `table_prefix` (context `table_prefix`) is TRADING_DDB_TABLE_PREFIX."""

    def __init__(self, scope: Construct, construct_id: str, *, certificate_arn: str | None = None,
                 table_prefix: str = "trading", **kwargs) -> None:
        kwargs.setdefault("synthesizer", cdk.DefaultStackSynthesizer(generate_bootstrap_version_rule=False))
        kwargs.setdefault("description", "trading_assets: Dagster on ECS Fargate with Postgres, the trading "
                                         "world (S3, DynamoDB, SQS, SNS, Secrets Manager), the webhook gateway")
        super().__init__(scope, construct_id, **kwargs)
        self.names = settings.AwsSettings(region="-", bucket="-", table_prefix=table_prefix)
        self.table_prefix = table_prefix
        self._parameters()
        self._network()
        self._data()
        self._database()
        self._compute()
        self._load_balancer(certificate_arn)
        self._alarms()
        self._outputs()

    # ------------------------------------------------------------------ parameters

    def _parameters(self) -> None:
        self.image_repository = cdk.CfnParameter(
            self, "ImageRepository", type="String", default="trading-assets",
            description="ECR repository (in this account and region) holding the image built from deploy/Dockerfile")
        self.image_tag = cdk.CfnParameter(
            self, "ImageTag", type="String", allowed_pattern=r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}",
            description="Image tag every task runs (a git sha; roll back by deploying the previous tag)")
        self.webserver_cidr = cdk.CfnParameter(
            self, "WebserverAllowedCidr", type="String",
            allowed_pattern=r"(\d{1,3}\.){3}\d{1,3}/\d{1,2}",
            description="Source CIDR allowed to reach the Dagster UI through the ALB (an office or VPN range): "
                        "the OSS webserver has no authentication")
        self.gateway_count = cdk.CfnParameter(
            self, "GatewayCount", type="Number", default=1, min_value=0, max_value=4,
            description="Gateway tasks (0 until the image has `python -m trading_assets gateway`)")
        self.kill_switch = cdk.CfnParameter(
            self, "KillSwitch", type="String", default="0", allowed_values=["0", "1"],
            description="TRADING_KILL_SWITCH on every task that runs project code: 1 refuses every order")
        self.live_trading = cdk.CfnParameter(
            self, "LiveTrading", type="String", default="false", allowed_values=["false", "true"],
            description="TRADING_LIVE_TRADING: required, in addition to a live venue setting, for real money")
        self.alpaca_paper = cdk.CfnParameter(
            self, "AlpacaPaper", type="String", default="true", allowed_values=["true", "false"],
            description="ALPACA_PAPER: false trades the live Alpaca account")
        self.ig_acc_type = cdk.CfnParameter(
            self, "IgAccType", type="String", default="demo", allowed_values=["demo", "live"],
            description="IG_ACC_TYPE")
        # TRADING_MARKET_DATA, once settings reads it (the default is the code's own for aws)
        self.market_data = None
        if "TRADING_MARKET_DATA" in settings.AWS_VARIABLES:
            sources = list(getattr(settings, "MARKET_DATA_SOURCES", ()))
            self.market_data = cdk.CfnParameter(
                self, "MarketData", type="String", default=settings.market_data_source("aws"),
                allowed_values=sources or None, description="TRADING_MARKET_DATA: where the flows read bars")
        self.tradovate_environment = cdk.CfnParameter(
            self, "TradovateEnvironment", type="String", default="demo", allowed_values=["demo", "live"],
            description="TRADOVATE_ENVIRONMENT")

    # ------------------------------------------------------------------ network

    def _network(self) -> None:
        self.vpc = ec2.Vpc(
            self, "Vpc", max_azs=2, nat_gateways=1,
            # no custom resource (a Lambda asset): the template stays asset-free
            restrict_default_security_group=False,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(name="app", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=22),
                ec2.SubnetConfiguration(name="db", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24),
            ])
        # S3 and DynamoDB traffic stays off the NAT gateway (free gateway endpoints).
        self.vpc.add_gateway_endpoint("S3Endpoint", service=ec2.GatewayVpcEndpointAwsService.S3)
        self.vpc.add_gateway_endpoint("DynamoDbEndpoint", service=ec2.GatewayVpcEndpointAwsService.DYNAMODB)

    # ------------------------------------------------------------------ data

    def _data(self) -> None:
        names = self.names
        self.bucket = s3.Bucket(
            self, "Bucket",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            versioned=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=cdk.RemovalPolicy.RETAIN,
            lifecycle_rules=[
                s3.LifecycleRule(id="compute-logs", prefix=f"{COMPUTE_LOG_PREFIX}/",
                                 expiration=cdk.Duration.days(90)),
                s3.LifecycleRule(id="old-versions", noncurrent_version_expiration=cdk.Duration.days(30)),
            ])

        specs = schema.table_specs(names.transactions_table, names.equity_table, names.orders_table)
        self.tables: dict[str, dynamodb.Table] = {}
        for logical_id, name in (("TransactionsTable", names.transactions_table),
                                 ("EquityTable", names.equity_table),
                                 ("OrdersTable", names.orders_table)):
            self.tables[name] = self._table(logical_id, specs[name])

        self.dlq = sqs.Queue(
            self, "AlertDlq", queue_name=names.alert_dlq, fifo=True,
            retention_period=cdk.Duration.seconds(schema.DLQ_RETENTION_SECONDS),
            encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True)
        self.queue = sqs.Queue(
            self, "AlertQueue", queue_name=names.alert_queue, fifo=True,
            # deduplication id = the alert id (explicit), so no content-based dedup
            content_based_deduplication=False,
            visibility_timeout=cdk.Duration.seconds(schema.QUEUE_VISIBILITY_TIMEOUT_SECONDS),
            retention_period=cdk.Duration.seconds(schema.QUEUE_RETENTION_SECONDS),
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dlq, max_receive_count=schema.QUEUE_MAX_RECEIVES),
            encryption=sqs.QueueEncryption.SQS_MANAGED, enforce_ssl=True)

        # Unencrypted on purpose: CloudWatch alarms cannot publish to a topic under the
        # AWS-managed SNS key. Messages are order and alarm notices, no secrets.
        self.topic = sns.Topic(self, "Events", topic_name=schema.TOPIC_NAME, enforce_ssl=True)

        template: dict[str, str] = {}
        self.secret = secretsmanager.Secret(
            self, "BrokerSecret", secret_name=names.secret_id,
            description="Broker API keys and the TradingView passphrase (JSON; keys: see deploy/README.md)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=json.dumps(template), generate_string_key=GATEWAY_SECRET_KEYS[0],
                exclude_punctuation=True, password_length=40),
            removal_policy=cdk.RemovalPolicy.RETAIN)

    def _table(self, logical_id: str, spec: dict) -> dynamodb.Table:
        if spec["BillingMode"] != "PAY_PER_REQUEST":
            raise ValueError(f"{spec['TableName']}: the stack declares PAY_PER_REQUEST tables only")
        kinds = {"S": dynamodb.AttributeType.STRING, "N": dynamodb.AttributeType.NUMBER,
                 "B": dynamodb.AttributeType.BINARY}
        types = {a["AttributeName"]: kinds[a["AttributeType"]] for a in spec["AttributeDefinitions"]}

        def keys(key_schema: list[dict]) -> dict:
            out = {}
            for key in key_schema:
                attribute = dynamodb.Attribute(name=key["AttributeName"], type=types[key["AttributeName"]])
                out["partition_key" if key["KeyType"] == "HASH" else "sort_key"] = attribute
            return out

        table = dynamodb.Table(
            self, logical_id, table_name=spec["TableName"], **keys(spec["KeySchema"]),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True),
            deletion_protection=True,
            removal_policy=cdk.RemovalPolicy.RETAIN)
        for gsi in spec.get("GlobalSecondaryIndexes", []):
            projection = gsi["Projection"]["ProjectionType"]
            if projection != "ALL":
                raise ValueError(f"{gsi['IndexName']}: only ALL projections are mapped")
            table.add_global_secondary_index(index_name=gsi["IndexName"], **keys(gsi["KeySchema"]),
                                             projection_type=dynamodb.ProjectionType.ALL)
        return table

    # ------------------------------------------------------------------ database

    def _database(self) -> None:
        self.db_security_group = ec2.SecurityGroup(
            self, "DatabaseSecurityGroup", vpc=self.vpc, allow_all_outbound=False,
            description="Dagster PostgreSQL: from the Dagster tasks only")
        self.database = rds.DatabaseInstance(
            self, "Database",
            engine=rds.DatabaseInstanceEngine.postgres(version=POSTGRES_VERSION),
            instance_type=ec2.InstanceType.of(ec2.InstanceClass.BURSTABLE4_GRAVITON, ec2.InstanceSize.SMALL),
            vpc=self.vpc, vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
            security_groups=[self.db_security_group],
            credentials=rds.Credentials.from_generated_secret(DB_USER, secret_name=f"{self.stack_name}/dagster-db"),
            database_name=DB_NAME,
            storage_encrypted=True, allocated_storage=20, max_allocated_storage=100,
            storage_type=rds.StorageType.GP3,
            multi_az=False,  # Dagster's run history: a restore from backup is acceptable
            auto_minor_version_upgrade=False,  # the minor version is pinned above
            backup_retention=cdk.Duration.days(7),
            deletion_protection=True, removal_policy=cdk.RemovalPolicy.SNAPSHOT,
            publicly_accessible=False)

    # ------------------------------------------------------------------ compute

    def _log_group(self, name: str, retention: logs.RetentionDays) -> logs.LogGroup:
        return logs.LogGroup(self, f"{name.capitalize()}Logs", log_group_name=f"/trading/{name}",
                             retention=retention, removal_policy=cdk.RemovalPolicy.RETAIN)

    def _compute(self) -> None:
        names = self.names
        self.cluster = ecs.Cluster(self, "Cluster", vpc=self.vpc,
                                   container_insights_v2=ecs.ContainerInsights.ENABLED)
        self.namespace = self.cluster.add_default_cloud_map_namespace(name=NAMESPACE, vpc=self.vpc)
        repository = ecr.Repository.from_repository_name(self, "ImageRepo", self.image_repository.value_as_string)
        # from_ecr_repository grants each execution role the pull on this repository.
        self.image = ecs.ContainerImage.from_ecr_repository(repository, self.image_tag.value_as_string)

        self.log_groups = {
            name: self._log_group(name, logs.RetentionDays.ONE_MONTH)
            for name in ("code", "webserver", "daemon", "gateway", "worker")
        }
        self.log_groups["run"] = self._log_group("run", logs.RetentionDays.THREE_MONTHS)

        # What project code reads in TRADING_ENV=aws (settings.AWS_VARIABLES); an unknown
        # variable there stops the synth until the stack sets it.
        known = {
            "TRADING_ENV": "aws",
            "AWS_REGION": self.region,
            "TRADING_S3_BUCKET": self.bucket.bucket_name,
            "TRADING_S3_PREFIX": names.s3_prefix,
            "TRADING_DDB_TABLE_PREFIX": self.table_prefix,
            "TRADING_ALERT_QUEUE": self.queue.queue_name,
            "TRADING_SNS_TOPIC_ARN": self.topic.topic_arn,
            "TRADING_SECRET_ID": names.secret_id,
            "TRADING_DATA_DIR": DATA_DIR,
        }
        if self.market_data is not None:
            known["TRADING_MARKET_DATA"] = self.market_data.value_as_string
        unknown = sorted(set(settings.AWS_VARIABLES) - set(known))
        if unknown:
            raise ValueError(f"settings.AWS_VARIABLES has {unknown}: set them in deploy/stack.py")
        self.aws_environment = {name: known[name] for name in settings.AWS_VARIABLES}
        self.trading_switches = {
            settings.KILL_SWITCH_ENV: self.kill_switch.value_as_string,
            "TRADING_LIVE_TRADING": self.live_trading.value_as_string,
            "ALPACA_PAPER": self.alpaca_paper.value_as_string,
            "IG_ACC_TYPE": self.ig_acc_type.value_as_string,
            "TRADOVATE_ENVIRONMENT": self.tradovate_environment.value_as_string,
        }
        run_family = f"{self.stack_name}-run"
        # What deploy/dagster.yaml reads ({env: ...}), on every task that opens the instance.
        self.dagster_environment = {
            "DAGSTER_HOME": DAGSTER_HOME,
            # boto3 reads only AWS_DEFAULT_REGION (not AWS_REGION): EcsRunLauncher's and the
            # S3 compute log manager's clients take their region from it
            "AWS_DEFAULT_REGION": self.region,
            "DAGSTER_PG_HOST": self.database.db_instance_endpoint_address,
            "DAGSTER_PG_PORT": self.database.db_instance_endpoint_port,
            "DAGSTER_PG_USER": DB_USER,
            "DAGSTER_PG_DB": DB_NAME,
            "DAGSTER_LOG_BUCKET": self.bucket.bucket_name,
            # the family here; the daemon and webserver get the revision's ARN (below)
            "DAGSTER_RUN_TASK_DEFINITION": run_family,
        }
        assert self.database.secret is not None
        self.dagster_secrets = {"DAGSTER_PG_PASSWORD": ecs.Secret.from_secrets_manager(self.database.secret,
                                                                                         "password")}
        project_environment = {**self.aws_environment, **self.trading_switches}

        # The run task definition: EcsRunLauncher RunTasks it with a command override.
        self.run_task_role = iam.Role(self, "RunTaskRole", assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
                                      description="Dagster runs (one ECS task per run)")
        self.run_execution_role = iam.Role(self, "RunExecutionRole",
                                           assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"))
        self.run_task_definition = ecs.FargateTaskDefinition(
            self, "RunTaskDefinition", family=run_family, cpu=1024, memory_limit_mib=2048,
            task_role=self.run_task_role, execution_role=self.run_execution_role)
        self.run_task_definition.add_container(
            RUN_CONTAINER, container_name=RUN_CONTAINER, image=self.image,
            memory_limit_mib=2048,  # container-level too (what moto needs, what AWS accepts)
            environment={**self.dagster_environment, **project_environment},
            secrets=self.dagster_secrets,
            logging=ecs.LogDrivers.aws_logs(stream_prefix="run", log_group=self.log_groups["run"]))
        self._grant_project_code(self.run_task_role)
        self.bucket.grant_read_write(self.run_task_role, f"{COMPUTE_LOG_PREFIX}/*")  # the run's compute logs

        # Dagster instance variables as the daemon and webserver see them: the run task
        # definition's current revision, so a new image or setting redeploys them too.
        launcher_environment = {
            **self.dagster_environment,
            "DAGSTER_RUN_TASK_DEFINITION": self.run_task_definition.task_definition_arn,
            "DAGSTER_CODE_SERVER_HOST": f"{CODE_SERVICE}.{NAMESPACE}",
            "DAGSTER_CODE_SERVER_PORT": str(CODE_PORT),
        }

        self.services: dict[str, ecs.FargateService] = {}
        self.code_service = self._service(
            "code", cpu=1024, memory=2048, port=CODE_PORT,
            environment={**self.dagster_environment, **project_environment},
            secrets=self.dagster_secrets,
            health_check=ecs.HealthCheck(command=["CMD-SHELL", f"dagster api grpc-health-check -p {CODE_PORT}"],
                                         interval=cdk.Duration.seconds(30), timeout=cdk.Duration.seconds(10),
                                         retries=3, start_period=cdk.Duration.seconds(120)),
            cloud_map_options=ecs.CloudMapOptions(name=CODE_SERVICE, cloud_map_namespace=self.namespace,
                                                  dns_ttl=cdk.Duration.seconds(10)))
        self.webserver_service = self._service(
            "webserver", cpu=1024, memory=2048, port=WEBSERVER_PORT,
            environment=launcher_environment, secrets=self.dagster_secrets)
        self.daemon_service = self._service(
            "daemon", cpu=1024, memory=2048, port=None,
            environment=launcher_environment, secrets=self.dagster_secrets,
            # exactly one daemon, ever: stop the old one before starting the new one
            min_healthy_percent=0, max_healthy_percent=100)
        self.gateway_service = self._service(
            "gateway", cpu=512, memory=1024, port=GATEWAY_PORT,
            environment={**self.dagster_environment, **project_environment},
            secrets=self.dagster_secrets,
            desired_count=self.gateway_count.value_as_number)
        # the alert worker executes each alert's run in its own process (fast path), so it opens
        # the instance and writes compute logs like a run task; it scales with the gateway
        self.worker_service = self._service(
            "worker", cpu=1024, memory=2048, port=None,
            environment={**self.dagster_environment, **project_environment},
            secrets=self.dagster_secrets,
            desired_count=self.gateway_count.value_as_number)

        for service in (self.code_service, self.gateway_service, self.worker_service):
            self._grant_project_code(service.task_definition.task_role)
        self.bucket.grant_read_write(self.worker_service.task_definition.task_role, f"{COMPUTE_LOG_PREFIX}/*")
        self._grant_launcher(self.daemon_service.task_definition.task_role, launch=True)
        self._grant_launcher(self.webserver_service.task_definition.task_role, launch=False)
        # the UI shows (and deletes with a run) the compute logs
        self.bucket.grant_read(self.webserver_service.task_definition.task_role, f"{COMPUTE_LOG_PREFIX}/*")
        self.bucket.grant_delete(self.webserver_service.task_definition.task_role, f"{COMPUTE_LOG_PREFIX}/*")

        # Network paths: UI and daemon to the code server; every Dagster task (run tasks
        # share the daemon's security group) to the database.
        for client in (self.webserver_service, self.daemon_service):
            self.code_service.connections.allow_from(client, ec2.Port.tcp(CODE_PORT), "gRPC workspace")
        for client in (self.code_service, self.webserver_service, self.daemon_service, self.gateway_service,
                       self.worker_service):
            self.database.connections.allow_default_port_from(client, "Dagster instance storage")

    def _service(self, name: str, *, cpu: int, memory: int, port: int | None, environment: dict,
                 secrets: dict, health_check: ecs.HealthCheck | None = None,
                 cloud_map_options: ecs.CloudMapOptions | None = None, desired_count: int | float = 1,
                 min_healthy_percent: int = 100, max_healthy_percent: int = 200) -> ecs.FargateService:
        task_definition = ecs.FargateTaskDefinition(self, f"{name.capitalize()}TaskDefinition",
                                                    family=f"{self.stack_name}-{name}", cpu=cpu,
                                                    memory_limit_mib=memory)
        container = task_definition.add_container(
            name, container_name=name, image=self.image, command=COMMANDS[name], memory_limit_mib=memory,
            environment=environment, secrets=secrets, health_check=health_check,
            logging=ecs.LogDrivers.aws_logs(stream_prefix=name, log_group=self.log_groups[name]))
        if port is not None:
            container.add_port_mappings(ecs.PortMapping(container_port=port, name=name))
        service = ecs.FargateService(
            self, f"{name.capitalize()}Service", cluster=self.cluster, task_definition=task_definition,
            service_name=f"{self.stack_name}-{name}", desired_count=desired_count,
            vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS),
            assign_public_ip=False, cloud_map_options=cloud_map_options,
            min_healthy_percent=min_healthy_percent, max_healthy_percent=max_healthy_percent,
            circuit_breaker=ecs.DeploymentCircuitBreaker(enable=True, rollback=True),
            enable_execute_command=False)
        self.services[name] = service
        return service

    # ------------------------------------------------------------------ IAM

    def _grant_project_code(self, role: iam.IRole) -> None:
        """What project code calls in TRADING_ENV=aws: the three tables and their indexes,
        the asset prefix of the bucket, the alert queue and its DLQ, publish on the topic,
        read the broker secret. Nothing else."""
        for table in self.tables.values():
            table.grant_read_write_data(role)
        self.bucket.grant_read_write(role, f"{self.names.s3_prefix}/*")
        for queue in (self.queue, self.dlq):
            queue.grant_send_messages(role)
            queue.grant_consume_messages(role)
        self.topic.grant_publish(role)
        self.secret.grant_read(role)

    def _grant_launcher(self, role: iam.IRole, *, launch: bool) -> None:
        """EcsRunLauncher's calls (dagster_aws/ecs/launcher.py), scoped to this cluster's
        tasks and the run task definition. The webserver only terminates runs and reads
        their tasks (runs are submitted to the queue; only the daemon launches), so
        `launch=False` leaves out RunTask, tagging, ENI reads, PassRole and the logs."""
        cluster_tasks = self.format_arn(service="ecs", resource="task",
                                        resource_name=f"{self.cluster.cluster_name}/*")
        statements = [
            iam.PolicyStatement(sid="DescribeRunTaskDefinition", actions=["ecs:DescribeTaskDefinition"],
                                resources=["*"]),
            iam.PolicyStatement(sid="WatchAndStopRunTasks", actions=["ecs:DescribeTasks", "ecs:StopTask"],
                                resources=[cluster_tasks]),
        ]
        if launch:
            run_family_revisions = self.format_arn(service="ecs", resource="task-definition",
                                                   resource_name=f"{self.run_task_definition.family}:*")
            statements += [
                iam.PolicyStatement(sid="RunTasksOfTheRunFamily", actions=["ecs:RunTask"],
                                    resources=[run_family_revisions],
                                    conditions={"ArnEquals": {"ecs:cluster": self.cluster.cluster_arn}}),
                iam.PolicyStatement(sid="TagRunTasksAtLaunch", actions=["ecs:TagResource"],
                                    resources=[cluster_tasks],
                                    conditions={"StringEquals": {"ecs:CreateAction": "RunTask"}}),
                iam.PolicyStatement(sid="ReadOwnNetworkInterface", actions=["ec2:DescribeNetworkInterfaces"],
                                    resources=["*"]),
                iam.PolicyStatement(sid="PassTheRunTaskRoles", actions=["iam:PassRole"],
                                    resources=[self.run_task_role.role_arn, self.run_execution_role.role_arn],
                                    conditions={"StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}}),
                iam.PolicyStatement(sid="ReadFailedRunLogs", actions=["logs:GetLogEvents"],
                                    resources=[self.log_groups["run"].log_group_arn]),
            ]
        for statement in statements:
            role.add_to_principal_policy(statement)

    # ------------------------------------------------------------------ load balancer

    def _load_balancer(self, certificate_arn: str | None) -> None:
        alb_security_group = ec2.SecurityGroup(self, "AlbSecurityGroup", vpc=self.vpc, allow_all_outbound=False,
                                               description="Internet-facing ALB: webhooks and the (CIDR-limited) UI")
        ports = [80, 443] if certificate_arn else [80]
        for port in ports:
            alb_security_group.add_ingress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(port), f"HTTP{'S' * (port == 443)}")
        self.alb = elbv2.ApplicationLoadBalancer(self, "Alb", vpc=self.vpc, internet_facing=True,
                                                 security_group=alb_security_group,
                                                 drop_invalid_header_fields=True)
        self.gateway_targets = elbv2.ApplicationTargetGroup(
            self, "GatewayTargets", vpc=self.vpc, port=GATEWAY_PORT, protocol=elbv2.ApplicationProtocol.HTTP,
            target_type=elbv2.TargetType.IP, deregistration_delay=cdk.Duration.seconds(30),
            health_check=elbv2.HealthCheck(path="/health", healthy_http_codes="200",
                                           interval=cdk.Duration.seconds(15)),
            targets=[self.gateway_service])
        self.webserver_targets = elbv2.ApplicationTargetGroup(
            self, "WebserverTargets", vpc=self.vpc, port=WEBSERVER_PORT, protocol=elbv2.ApplicationProtocol.HTTP,
            target_type=elbv2.TargetType.IP, deregistration_delay=cdk.Duration.seconds(30),
            health_check=elbv2.HealthCheck(path="/server_info", healthy_http_codes="200"),
            targets=[self.webserver_service])
        self.gateway_service.connections.allow_from(self.alb, ec2.Port.tcp(GATEWAY_PORT), "ALB to the gateway")
        self.webserver_service.connections.allow_from(self.alb, ec2.Port.tcp(WEBSERVER_PORT), "ALB to the UI")

        denied = elbv2.ListenerAction.fixed_response(403, content_type="text/plain", message_body="forbidden")
        if certificate_arn:
            self.https_listener = self.alb.add_listener(
                "Https", port=443, protocol=elbv2.ApplicationProtocol.HTTPS,
                certificates=[elbv2.ListenerCertificate.from_arn(certificate_arn)],
                ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS, default_action=denied)
            self._routes(self.https_listener)
            self.http_listener = self.alb.add_listener(
                "Http", port=80, protocol=elbv2.ApplicationProtocol.HTTP,
                default_action=elbv2.ListenerAction.redirect(protocol="HTTPS", port="443", permanent=True))
        else:
            self.https_listener = None
            self.http_listener = self.alb.add_listener("Http", port=80, protocol=elbv2.ApplicationProtocol.HTTP,
                                                       default_action=denied)
            self._routes(self.http_listener)

    def _routes(self, listener: elbv2.ApplicationListener) -> None:
        # TradingView webhooks (and the gateway's health) from anywhere: the gateway checks
        # the passphrase. The trades API and the monitor will get their paths here too.
        listener.add_action("Gateway", priority=10,
                            conditions=[elbv2.ListenerCondition.path_patterns(["/webhooks/*", "/health"])],
                            action=elbv2.ListenerAction.forward([self.gateway_targets]))
        # The Dagster UI has no authentication: only from the allowed CIDR (or put an
        # authenticate-oidc/cognito action here), everything else gets 403.
        listener.add_action("Webserver", priority=20,
                            conditions=[elbv2.ListenerCondition.source_ips([self.webserver_cidr.value_as_string])],
                            action=elbv2.ListenerAction.forward([self.webserver_targets]))

    # ------------------------------------------------------------------ alarms

    def _alarms(self) -> None:
        notify = cloudwatch_actions.SnsAction(self.topic)
        dlq_alarm = cloudwatch.Alarm(
            self, "AlertDlqNotEmpty", alarm_description="An alert failed processing 5 times and sits in the DLQ",
            metric=self.dlq.metric_approximate_number_of_messages_visible(period=cdk.Duration.minutes(1),
                                                                          statistic="Maximum"),
            threshold=0, comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=1, treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING)
        dlq_alarm.add_alarm_action(notify)

        # Run failures from the logs (no code change, no PutMetricData on "*"): the run
        # worker prints each Dagster event name to its console ("... - RUN_FAILURE -
        # Execution of run ... failed"), so a failed run writes RUN_FAILURE to /trading/run;
        # a run whose task died (OOM, stopped), never started or ran too long is failed by
        # the daemon's run monitoring, which logs one of these (dagster/_daemon/monitoring).
        metric = cloudwatch.Metric(namespace="Trading", metric_name="RunFailures", statistic="Sum",
                                   period=cdk.Duration.minutes(5))
        logs.MetricFilter(self, "RunFailureInRunLogs", log_group=self.log_groups["run"],
                          metric_namespace=metric.namespace, metric_name=metric.metric_name,
                          filter_pattern=logs.FilterPattern.any_term("RUN_FAILURE"), metric_value="1")
        logs.MetricFilter(self, "RunWorkerFailureInDaemonLogs", log_group=self.log_groups["daemon"],
                          metric_namespace=metric.namespace, metric_name=metric.metric_name,
                          filter_pattern=logs.FilterPattern.any_term(*RUN_MONITORING_FAILURES),
                          metric_value="1")
        run_alarm = cloudwatch.Alarm(
            self, "RunFailed", alarm_description="A Dagster run failed (see the run's page in the UI)",
            metric=metric, threshold=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
            evaluation_periods=1, treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING)
        run_alarm.add_alarm_action(notify)
        self.alarms = {"dlq": dlq_alarm, "runs": run_alarm}

    # ------------------------------------------------------------------ outputs

    def _outputs(self) -> None:
        scheme = "https" if self.https_listener is not None else "http"
        cdk.CfnOutput(self, "WebhookBaseUrl", value=f"{scheme}://{self.alb.load_balancer_dns_name}/webhooks/",
                      description="Base of the gateway's webhook paths (TradingView alerts post under it)")
        cdk.CfnOutput(self, "DagsterUiUrl", value=f"{scheme}://{self.alb.load_balancer_dns_name}/",
                      description="Dagster UI (only from WebserverAllowedCidr)")
        cdk.CfnOutput(self, "BucketName", value=self.bucket.bucket_name)
        cdk.CfnOutput(self, "SecretName", value=self.names.secret_id)
        cdk.CfnOutput(self, "TopicArn", value=self.topic.topic_arn)
        cdk.CfnOutput(self, "AlertDlqUrl", value=self.dlq.queue_url)
        cdk.CfnOutput(self, "ClusterName", value=self.cluster.cluster_name)
        cdk.CfnOutput(self, "DatabaseEndpoint", value=self.database.db_instance_endpoint_address)
