"""Suite-wide fixtures and environment for the tests."""

import os

# Tests never reach the network; yfinance must use `requests` so fakes can intercept it.
os.environ.setdefault("YF_DISABLE_CURL_CFFI", "1")
os.environ.setdefault("DAGSTER_TELEMETRY_ENABLED", "false")

from trading_assets_tests.fakes.aws import aws_env, moto_server  # noqa: F401  (suite-wide fixtures)
