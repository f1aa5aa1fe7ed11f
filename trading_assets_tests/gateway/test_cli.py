"""`python -m trading_assets gateway` and `alert` as a user runs them: subprocesses, the
gateway on a free port of 127.0.0.1, stopped by SIGTERM or SIGINT."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from trading_assets.gateway.samples import sample_names
from trading_assets_tests.gateway.conftest import PASSPHRASE

REPO = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "TRADING_DATA_DIR": str(tmp_path), "TRADINGVIEW_PASSPHRASE": PASSPHRASE, **extra}
    env.pop("TRADING_ENV", None)
    env.update({k: v for k, v in extra.items() if k == "TRADING_ENV"})
    return env


class Gateway:
    def __init__(self, proc: subprocess.Popen, lines: list[str]) -> None:
        self.proc, self.lines = proc, lines
        self.url = ""

    @property
    def log(self) -> str:
        return "".join(self.lines)


@contextmanager
def gateway_process(env: dict[str, str], *args: str, timeout: float = 60) -> Iterator[Gateway]:
    proc = subprocess.Popen([sys.executable, "-m", "trading_assets", "gateway", "--port", "0", *args], cwd=REPO,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    gw = Gateway(proc, [])
    reader = threading.Thread(target=lambda: gw.lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + timeout
        while not gw.url:
            if m := re.search(r"listening on (http://127\.0\.0\.1:\d+)", gw.log):
                gw.url = m.group(1)
            elif proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the gateway did not start (exit {proc.poll()}):\n{gw.log}")
            else:
                time.sleep(0.05)
        while requests.get(gw.url + "/health", timeout=5).status_code != 200:
            time.sleep(0.05)
        yield gw
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        reader.join(5)


def alert_command(env: dict[str, str], url: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trading_assets", "alert", "--url", url + "/webhooks/tradingview",
                           *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


def _statuses(out: str) -> list[str]:
    return [line.split()[2] for line in out.splitlines() if line.strip()]


def test_gateway_and_alert_commands_accepted_then_duplicate_then_sigterm_stops_it(tmp_path):
    env = _env(tmp_path)
    with gateway_process(env) as gw:
        first = alert_command(env, gw.url)
        assert first.returncode == 0, first.stdout + first.stderr
        assert _statuses(first.stdout) == ["accepted"] * len(sample_names())
        assert [line.split()[0] for line in first.stdout.splitlines()] == sample_names()
        again = alert_command(env, gw.url, "--sample", "long_entry", "--content-type", "text")
        assert again.returncode == 0 and _statuses(again.stdout) == ["duplicate"], again.stdout
        fresh = alert_command(env, gw.url, "--sample", "short_entry", "--now")
        assert _statuses(fresh.stdout) == ["accepted"], fresh.stdout
        file = tmp_path / "mine.json"
        file.write_text(json.dumps({"passphrase": "wrong", "action": "LONG_ENTRY"}))
        refused = alert_command(env, gw.url, "--file", str(file))
        assert refused.returncode == 1 and _statuses(refused.stdout) == ["unauthorized"], refused.stdout

        started = time.monotonic()
        gw.proc.send_signal(signal.SIGTERM)
        assert gw.proc.wait(15) == 0
        assert time.monotonic() - started < 10
    assert "gateway stopped by SIGTERM" in gw.log
    assert PASSPHRASE not in gw.log
    assert len(re.findall(r"/webhooks/tradingview \d{3} ", gw.log)) == len(sample_names()) + 3  # one line each
    gone = alert_command(env, gw.url)
    assert gone.returncode == 1 and "nothing answers at" in gone.stderr


def test_sigint_stops_the_gateway_cleanly_and_the_queue_is_the_one_dagster_reads(tmp_path):
    from trading_assets.gateway import envelope
    from trading_assets.resources.messaging import alert_queue_resource

    env = _env(tmp_path)
    with gateway_process(env) as gw:
        assert _statuses(alert_command(env, gw.url, "--sample", "di_plus_over_minus").stdout) == ["accepted"]
        gw.proc.send_signal(signal.SIGINT)
        assert gw.proc.wait(15) == 0
    assert "gateway stopped by SIGINT" in gw.log
    [msg] = alert_queue_resource("local", base=tmp_path).get().receive(1)
    assert envelope.decode(msg.body).payload["signal"]["direction"] == "PLUS_OVER_MINUS"


def test_the_development_passphrase_is_refused_off_loopback_and_a_port_in_use_is_one_line(tmp_path):
    env = _env(tmp_path)
    env.pop("TRADINGVIEW_PASSPHRASE")
    off = subprocess.run([sys.executable, "-m", "trading_assets", "gateway", "--host", "0.0.0.0", "--port", "0"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert off.returncode == 2 and "development passphrase is for 127.0.0.1 only" in off.stderr, off.stderr
    with gateway_process(_env(tmp_path)) as gw:
        port = gw.url.rsplit(":", 1)[1]
        busy = subprocess.run([sys.executable, "-m", "trading_assets", "gateway", "--port", port], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=60)
        assert busy.returncode == 2 and f"cannot listen on --host 127.0.0.1 --port {port}" in busy.stderr
        assert "Traceback" not in busy.stderr


def test_aws_mode_reads_the_passphrase_from_secrets_manager_and_stores_on_sqs(aws_env, tmp_path):
    from trading_assets.adapters.aws.dynamodb_ledger import ensure_tables
    from trading_assets.adapters.aws.secrets import ensure_secret
    from trading_assets.adapters.aws.sqs_queue import SqsAlertQueue, ensure_queue

    aws = aws_env
    ensure_tables(aws.region, aws.transactions_table, aws.equity_table, aws.orders_table)
    ensure_queue(aws.region, aws.alert_queue, aws.alert_dlq)
    ensure_secret(aws.region, aws.secret_id, {"ALPACA_API_KEY": "x"})
    env = _env(tmp_path, TRADING_ENV="aws")
    env.pop("TRADINGVIEW_PASSPHRASE")  # not read in aws mode
    missing = subprocess.run([sys.executable, "-m", "trading_assets", "gateway", "--port", "0"], cwd=REPO, env=env,
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2, missing.stderr
    assert "TRADINGVIEW_PASSPHRASE" in missing.stderr and aws.secret_id in missing.stderr

    from trading_assets.adapters.aws.clients import client

    client("secretsmanager", aws.region).put_secret_value(
        SecretId=aws.secret_id, SecretString=json.dumps({"TRADINGVIEW_PASSPHRASE": "from-secrets-manager"}))
    with gateway_process(env) as gw:
        sent = alert_command({**env, "TRADINGVIEW_PASSPHRASE": "from-secrets-manager"}, gw.url, "--sample",
                             "long_entry")
        assert _statuses(sent.stdout) == ["accepted"], sent.stdout + sent.stderr
        gw.proc.send_signal(signal.SIGTERM)
        assert gw.proc.wait(15) == 0
    assert "passphrase from Secrets Manager" in gw.log and "from-secrets-manager" not in gw.log
    assert SqsAlertQueue(aws.region, aws.alert_queue, aws.orders_table).depth() == 1


@pytest.mark.parametrize("argv, message", [
    (["gateway", "--port", "70000"], "is not a port"),
    (["alert", "--sample", "nope"], "no sample alert 'nope'"),
])
def test_bad_arguments_are_one_line(tmp_path, argv, message):
    r = subprocess.run([sys.executable, "-m", "trading_assets", *argv], cwd=REPO, env=_env(tmp_path),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode in (1, 2) and message in r.stderr and "Traceback" not in r.stderr, r.stderr
