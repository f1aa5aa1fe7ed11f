"""Every setting read from the environment, in one place (no other module reads it).

Values are read when asked for, not at import, so flipping a variable (the kill switch
above all) takes effect on the next call without a redeploy. Secrets are not read here:
resources name them with `dagster.EnvVar("...")`, so Dagster resolves them at run time
and shows only the variable's name.
"""

from __future__ import annotations

import os
from pathlib import Path

ENVIRONMENTS = ("local",)
FLOWS = ("ema_concentration", "fib_retracement", "trend_dmi", "ma_crossover", "knn_shadow")
BROKERS = ("paper", "alpaca", "ig", "tradovate")
KILL_SWITCH_ENV = "TRADING_KILL_SWITCH"
_TRUTHY = {"1", "true", "yes", "on"}

# Which broker each flow trades through, per TRADING_ENV: paper everywhere locally; in
# production EMA -> Alpaca, Fibonacci and KNN -> IG, TradingView alerts -> Tradovate.
BROKER_FOR_FLOW: dict[str, dict[str, str]] = {
    "local": dict.fromkeys(FLOWS, "paper"),
    "aws": {
        "ema_concentration": "alpaca",
        "fib_retracement": "ig",
        "trend_dmi": "tradovate",
        "ma_crossover": "paper",
        "knn_shadow": "ig",
    },
}


def env_str(name: str, default: str = "") -> str:
    """A plain (non-secret) setting, stripped; `default` when unset or blank."""
    return os.environ.get(name, "").strip() or default


def env_flag(name: str) -> bool:
    """True if the variable is set to 1/true/yes/on (any case), read now."""
    return env_str(name).lower() in _TRUTHY


def trading_env() -> str:
    """`TRADING_ENV` (default `local`); an unknown value is a clear error."""
    env = env_str("TRADING_ENV", "local").lower()
    if env not in ENVIRONMENTS:
        raise ValueError(
            f"TRADING_ENV={env!r} is not available; choose one of {ENVIRONMENTS} "
            "(the AWS environment is planned: S3, DynamoDB, SQS, real brokers)")
    return env


def data_dir() -> Path:
    """`TRADING_DATA_DIR` (default `./.trading_data`): ledger, paper accounts, asset files."""
    return Path(env_str("TRADING_DATA_DIR") or Path.cwd() / ".trading_data").resolve()


def dagster_home() -> str | None:
    """`DAGSTER_HOME`, or None (then an ephemeral instance is used)."""
    return env_str("DAGSTER_HOME") or None


def kill_switch_engaged() -> bool:
    """The one kill switch: `TRADING_KILL_SWITCH=1` refuses every order, read at call time
    by the tick engine (nothing is planned) and by every guarded broker (nothing is sent)."""
    return env_flag(KILL_SWITCH_ENV)


def live_trading_enabled() -> bool:
    """`TRADING_LIVE_TRADING`: required, in addition, for any real-money account."""
    return env_flag("TRADING_LIVE_TRADING")


def broker_for_flow(flow: str, env: str | None = None) -> str:
    """The broker a flow trades through in `env` (default `TRADING_ENV`).

    `TRADING_BROKER_<FLOW>` (e.g. `TRADING_BROKER_TREND_DMI=paper`) overrides the table,
    so one flow can be sent back to paper without touching the others.
    """
    if flow not in FLOWS:
        raise ValueError(f"unknown flow {flow!r}; flows are {FLOWS}")
    env = (env or env_str("TRADING_ENV", "local")).lower()
    override = env_str(f"TRADING_BROKER_{flow.upper()}").lower()
    if override:
        if override not in BROKERS:
            raise ValueError(f"TRADING_BROKER_{flow.upper()}={override!r}: choose from {BROKERS}")
        return override
    return BROKER_FOR_FLOW.get(env, BROKER_FOR_FLOW["local"])[flow]


def endpoint(variable: str) -> str | None:
    """A venue endpoint (`ALPACA_BASE_URL`, ...), None for the client's default host.

    Checked here so a typo is a clear error before any call, not a connection failure."""
    value = env_str(variable).rstrip("/")
    if not value:
        return None
    if not value.startswith(("http://", "https://")):
        raise ValueError(f"{variable}={value!r} is not an http(s) URL, e.g. http://127.0.0.1:8080")
    return value
