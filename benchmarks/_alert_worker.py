"""A warm alert worker process for bench_alert_to_order: `worker_for("local")` with the
benchmark's resources (five mapped tickers for the burst and five for warm-up, a paper
account large enough for every leg).

    python benchmarks/_alert_worker.py DATA_DIR [TRADOVATE_BASE_URL]

With a Tradovate URL (the loopback fake the benchmark runs) the flow trades there.
"""

import sys
from pathlib import Path

TICKERS = {f"{p}{i}1!": f"{p}{i}Z6" for p in "BW" for i in range(5)} | {"MNQ1!": "MNQZ6"}  # W: warm-up


def bench_resources(data: Path, tradovate_url: str | None = None) -> dict[str, object]:
    from trading_assets.defs.resources import local_resources
    from trading_assets.defs.trend_dmi.settings import TrendDmiSettings
    from trading_assets.resources.brokers import PaperBrokerResource

    if tradovate_url:
        from trading_assets.resources.brokers import TradovateBrokerResource
        from trading_assets_tests.fakes import tradovate as fake

        broker = TradovateBrokerResource(username=fake.FAKE_USERNAME, password=fake.FAKE_PASSWORD,
                                         app_id=fake.FAKE_APP_ID, cid=fake.FAKE_CID, sec=fake.FAKE_SEC,
                                         base_url=tradovate_url)
    else:
        broker = PaperBrokerResource(state_path=str(data / "paper_trend_dmi.sqlite"), starting_cash=10_000_000.0,
                                     allow_short=True)
    return local_resources(data, trend_dmi=TrendDmiSettings(instruments=TICKERS), trend_dmi_broker=broker)


def main(data: str, tradovate_url: str | None = None) -> None:
    import signal

    from trading_assets.defs.trend_dmi.processing import worker_for

    worker = worker_for("local", bench_resources(Path(data), tradovate_url))
    signal.signal(signal.SIGTERM, lambda *_: worker.stopping.set())
    worker.run_forever(wait_seconds=0.5)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' Tradovate fake
    main(*sys.argv[1:3])
