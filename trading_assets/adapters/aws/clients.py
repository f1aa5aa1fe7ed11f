"""boto3 clients for the AWS adapters, and the one place AWS setup errors are explained.

Clients retry throttling and 5xx themselves (botocore's standard mode, with backoff):
every call the adapters make is a read or an idempotent (keyed, conditional) write, so a
retry can never double anything. Order placement never goes through here.
`AWS_ENDPOINT_URL` (boto3's own variable) points every client at a moto server offline.
"""

from __future__ import annotations

import threading
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

BOOTSTRAP_HINT = "python -m trading_assets aws-bootstrap"

_CONFIG = Config(retries={"mode": "standard", "max_attempts": 6}, connect_timeout=5, read_timeout=20)


class AwsSetupError(RuntimeError):
    """The AWS world is not there or not reachable as configured; the message names what
    is missing and how to create or provide it."""


_SESSION: boto3.session.Session | None = None
_LOCK = threading.Lock()


def client(service: str, region: str) -> Any:
    """A boto3 client with bounded retries; credentials come from boto3's own chain.

    One session per process (a new one reloads the service models: ~90 ms a client, against
    ~15 ms from a kept session); sessions are not thread-safe, hence the lock. The endpoint
    (AWS_ENDPOINT_URL) and credentials are resolved for each new client."""
    global _SESSION
    with _LOCK:
        if _SESSION is None:
            _SESSION = boto3.session.Session()
        try:
            return _SESSION.client(service, region_name=region, config=_CONFIG)
        except botocore.exceptions.NoRegionError as exc:
            raise AwsSetupError("no AWS region: set AWS_REGION (e.g. us-east-1)") from exc


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError ('' for anything else)."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


_MISSING = {
    "ResourceNotFoundException", "NoSuchBucket", "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist", "NotFound", "NotFoundException",
}


def explain(exc: BaseException, what: str) -> AwsSetupError | None:
    """A clear AwsSetupError for a setup problem behind `exc` (missing credentials, a
    table/bucket/queue/topic/secret that does not exist, access denied), or None when
    `exc` is not one (then the caller re-raises it as it is).

    `what` names the resource, e.g. "DynamoDB table trading-orders"."""
    if isinstance(exc, botocore.exceptions.NoCredentialsError | botocore.exceptions.PartialCredentialsError):
        return AwsSetupError(f"no AWS credentials for {what}: use the task role on ECS, or set "
                             "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE")
    if isinstance(exc, botocore.exceptions.NoRegionError):
        return AwsSetupError(f"no AWS region for {what}: set AWS_REGION (e.g. us-east-1)")
    if isinstance(exc, botocore.exceptions.EndpointConnectionError):
        return AwsSetupError(f"cannot reach AWS for {what} at {exc.kwargs.get('endpoint_url', '?')}: "
                             "check AWS_ENDPOINT_URL / the network")
    code = error_code(exc)
    if code in _MISSING:
        return AwsSetupError(f"{what} does not exist: create it with `{BOOTSTRAP_HINT}` "
                             "(or deploy the stack in deploy/)")
    if code in ("AccessDenied", "AccessDeniedException", "UnrecognizedClientException",
                "InvalidClientTokenId", "AuthorizationError"):
        return AwsSetupError(f"not allowed to use {what} ({code}): check the credentials and the task "
                             "role's policy")
    return None
