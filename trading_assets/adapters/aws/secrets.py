"""Broker keys and passwords from one Secrets Manager secret holding a JSON object,
`{"ALPACA_API_KEY": "...", "ALPACA_SECRET_KEY": "...", ...}`.

The secret is fetched at first use and again once `ttl_seconds` have passed, so a
rotated key is picked up without a restart; a name missing from the cached copy forces
one early re-fetch (a key just added is found at once). If a re-fetch fails for a
passing reason (throttling, network) after retries, the cached copy keeps serving and a
warning is logged; a secret that is gone or forbidden raises.

Values never appear in `repr`, `str`, exception messages or logs: errors name the
secret id and the key only, and botocore's own DEBUG records of request parameters and
response bodies (which would print a SecretString whole) are redacted.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping

from trading_assets.adapters.aws.clients import BOOTSTRAP_HINT, client, error_code, explain
from trading_assets.core.messaging import MalformedSecret, MissingSecret

log = logging.getLogger(__name__)

_GONE = {"ResourceNotFoundException"}
_FORBIDDEN = {"AccessDenied", "AccessDeniedException", "UnrecognizedClientException", "InvalidClientTokenId"}
# A name not in the cached copy re-fetches at most this often (a typo must not hammer it).
_MISSING_KEY_REFETCH_SECONDS = 5.0


class _RedactSecretStrings(logging.Filter):
    """Blanks botocore DEBUG records that carry a Secrets Manager value (`Making request
    ... with params` of CreateSecret/PutSecretValue, `Response body` of GetSecretValue)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:
            return True
        if "SecretString" in text or "SecretBinary" in text:
            record.msg, record.args = "%s", ("[redacted: the record held a Secrets Manager value]",)
        return True


_REDACT = _RedactSecretStrings()
for _name in ("botocore.endpoint", "botocore.parsers"):
    if _REDACT not in logging.getLogger(_name).filters:
        logging.getLogger(_name).addFilter(_REDACT)


def _create_hint(secret_id: str, key: str | None = None) -> str:
    example = json.dumps({key or "ALPACA_API_KEY": "..."})
    return (f"create it with `aws secretsmanager create-secret --name {secret_id} --secret-string '{example}'` "
            f"or `{BOOTSTRAP_HINT}`")


class SecretsManagerSecrets:
    """`core.messaging.Secrets` over one JSON secret in Secrets Manager (module doc)."""

    def __init__(self, region: str, secret_id: str, ttl_seconds: float = 300,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not secret_id:
            raise ValueError("secret_id is empty: name the Secrets Manager secret (e.g. trading/brokers)")
        self.region = region
        self.secret_id = secret_id
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._client = client("secretsmanager", region)
        self._values: dict[str, str] | None = None
        self._fetched_at = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"SecretsManagerSecrets(region={self.region!r}, secret_id={self.secret_id!r}, "
                f"ttl_seconds={self.ttl_seconds:g})")

    __str__ = __repr__

    def get(self, name: str) -> str:
        with self._lock:
            now = self._clock()
            age = now - self._fetched_at
            if self._values is None or age >= self.ttl_seconds or (
                    name not in self._values and age >= _MISSING_KEY_REFETCH_SECONDS):
                self._refresh(now)
            values = self._values or {}
        if name not in values:
            present = ", ".join(sorted(values)) or "none"
            raise MissingSecret(
                f"key {name} is not in Secrets Manager secret {self.secret_id} ({self.region}; keys present: "
                f"{present}): add it to the secret's JSON (`aws secretsmanager put-secret-value --secret-id "
                f"{self.secret_id} --secret-string '{{...all keys..., \"{name}\": \"...\"}}'`)",
                secret_id=self.secret_id, key=name)
        return values[name]

    def names(self) -> list[str]:
        """The keys the secret holds (never their values)."""
        with self._lock:
            if self._values is None or self._clock() - self._fetched_at >= self.ttl_seconds:
                self._refresh(self._clock())
            return sorted(self._values or {})

    def _refresh(self, now: float) -> None:
        try:
            self._values = self._fetch()
        except (MissingSecret, MalformedSecret):
            raise
        except Exception as exc:
            if self._values is None or error_code(exc) in _FORBIDDEN:
                setup = explain(exc, f"Secrets Manager secret {self.secret_id} ({self.region})")
                if setup is None:
                    raise
                raise setup from None
            # a passing failure (throttled or unreachable after retries): keep serving the cached copy
            log.warning("Secrets Manager secret %s could not be re-fetched (%s); using the copy from %.0f s ago",
                        self.secret_id, error_code(exc) or type(exc).__name__, now - self._fetched_at)
            self._fetched_at = now - self.ttl_seconds + min(30.0, self.ttl_seconds)  # try again in 30 s
            return
        self._fetched_at = now

    def _fetch(self) -> dict[str, str]:
        try:
            resp = self._client.get_secret_value(SecretId=self.secret_id)
        except Exception as exc:
            code = error_code(exc)
            if code in _GONE:
                raise MissingSecret(f"Secrets Manager secret {self.secret_id} does not exist in {self.region}: "
                                    f"{_create_hint(self.secret_id)}", secret_id=self.secret_id) from None
            if code == "InvalidRequestException":  # marked for deletion
                raise MissingSecret(f"Secrets Manager secret {self.secret_id} ({self.region}) is scheduled for "
                                    f"deletion: restore it with `aws secretsmanager restore-secret --secret-id "
                                    f"{self.secret_id}`", secret_id=self.secret_id) from None
            raise
        text = resp.get("SecretString")
        if text is None:
            raise MalformedSecret(f"Secrets Manager secret {self.secret_id} holds binary data, not a JSON object "
                                  "of strings; store it as SecretString {\"KEY\": \"value\", ...}",
                                  secret_id=self.secret_id)
        return _parse(self.secret_id, text)


def _parse(secret_id: str, text: str) -> dict[str, str]:
    """The JSON object's keys and values; errors name the secret and keys, never a value
    (json's own error is dropped: its `doc` holds the whole secret)."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise MalformedSecret(f"Secrets Manager secret {secret_id} is not a JSON object: store it as "
                              "{\"KEY\": \"value\", ...} (one secret holds all the broker keys)", secret_id=secret_id)
    values: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise MalformedSecret(f"Secrets Manager secret {secret_id}: key {key} is not a string or a number "
                                  f"(got a {type(value).__name__})", secret_id=secret_id)
        values[str(key)] = str(value)
    return values


def ensure_secret(region: str, secret_id: str, initial: Mapping[str, str]) -> bool:
    """Create the secret with `initial` (a JSON object) if it does not exist; True if
    created. An existing secret is never changed (its values are the operator's)."""
    sm = client("secretsmanager", region)
    try:
        sm.describe_secret(SecretId=secret_id)
        return False
    except Exception as exc:
        if error_code(exc) not in _GONE:
            setup = explain(exc, f"Secrets Manager secret {secret_id}")
            if setup is not None:
                raise setup from None
            raise
    try:
        sm.create_secret(Name=secret_id, SecretString=json.dumps(dict(initial)),
                         Description="trading_assets broker and webhook secrets (JSON object of strings)")
    except Exception as exc:
        if error_code(exc) == "ResourceExistsException":
            return False  # created meanwhile by someone else
        setup = explain(exc, f"Secrets Manager secret {secret_id}")
        if setup is not None:
            raise setup from None
        raise
    return True
