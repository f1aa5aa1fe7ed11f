"""The price stream in Dagster (knn_shadow): a day's minute bars as a daily-partitioned
asset read from the stream's day file, its completeness check, the 15-minute refresh
schedule, and the sensor that tells once when the stream goes silent and once when it
recovers. Bars and heartbeats are written with StreamStore directly (no consumer)."""

import logging
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import pandas as pd
import pytest

from trading_assets.adapters.stream.store import StreamStore
from trading_assets.core.minute_bars import MinuteBar
from trading_assets.defs.knn_shadow import stream_sensors
from trading_assets.defs.knn_shadow.stream_assets import COMPLETE_CHECK, minute_bars, refresh_request
from trading_assets.defs.knn_shadow.stream_sensors import knn_stream_silence_sensor
from trading_assets.defs.resources import local_resources

EURUSD, GBPUSD = "CS.D.EURUSD.MINI.IP", "CS.D.GBPUSD.MINI.IP"
TUESDAY = date(2025, 11, 18)
START = datetime(2025, 11, 18, 10, 0, tzinfo=UTC)


def _bars(epic: str, minutes: list[int], base: float = 1.16) -> list[MinuteBar]:
    out = []
    for m in minutes:
        price = base + m * 1e-5
        out.append(MinuteBar(epic, START + timedelta(minutes=m), price, price + 2e-5, price - 2e-5, price + 1e-5,
                             3 + m % 4))
    return out


def _materialise(tmp_path, day: date = TUESDAY, **config) -> dg.ExecuteInProcessResult:
    run_config = {"ops": {"knn_shadow__minute_bars": {"config": config}}} if config else None
    return dg.materialize([minute_bars], resources=local_resources(tmp_path), partition_key=day.isoformat(),
                          run_config=run_config, raise_on_error=False)


def _metadata(result: dg.ExecuteInProcessResult) -> dict:
    [mat] = result.asset_materializations_for_node("knn_shadow__minute_bars")
    return {k: v.value for k, v in mat.metadata.items()}


def _check(result: dg.ExecuteInProcessResult):
    [evaluation] = [e for e in result.get_asset_check_evaluations() if e.check_name == COMPLETE_CHECK]
    return evaluation


def test_the_asset_is_the_stored_day_with_its_gaps(tmp_path):
    store = StreamStore(tmp_path / "stream")
    hole = [m for m in range(120) if m not in (30, 31, 32)]  # 10:30, 10:31, 10:32 have no bar
    store.write_bars([*_bars(EURUSD, hole), *_bars(GBPUSD, list(range(120)), base=1.31)])
    store.write_bars([*_bars(EURUSD, [0]), MinuteBar(EURUSD, START + timedelta(days=1), 1, 1, 1, 1, 1)])  # 10:00 again

    result = _materialise(tmp_path)

    assert result.success
    frame = result.output_for_node("knn_shadow__minute_bars")
    pd.testing.assert_frame_equal(frame, store.bars(TUESDAY), check_freq=False)
    assert len(frame) == 237  # the next day's bar is in the next day's file
    meta = _metadata(result)
    assert meta["dagster/row_count"] == 237
    assert meta["bars_per_epic"] == {EURUSD: 117, GBPUSD: 120}
    assert meta["first_minute"][EURUSD] == "2025-11-18T10:00:00+00:00"
    assert meta["last_minute"][EURUSD] == "2025-11-18T11:59:00+00:00"
    gaps = meta["gaps"][EURUSD]
    assert (gaps["missing_minutes"], gaps["gaps"], gaps["longest_gap_minutes"]) == (3, 1, 3)
    assert gaps["longest_gap_start"] == "2025-11-18T10:30:00+00:00"
    assert meta["gaps"][GBPUSD]["missing_minutes"] == 0
    assert meta["longest_gap_minutes"] == 3
    assert 3 <= meta["ticks_per_bar"][EURUSD] <= 6
    evaluation = _check(result)
    assert evaluation.passed, evaluation.description  # 3 of 120 minutes is within the default 5 %


def test_a_day_with_a_large_gap_warns_and_a_stricter_share_warns_on_a_small_one(tmp_path):
    store = StreamStore(tmp_path / "stream")
    store.write_bars(_bars(EURUSD, [*range(30), *range(90, 120)]))  # an hour without bars

    evaluation = _check(_materialise(tmp_path))
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert "60 of 120 minutes missing" in evaluation.description and "longest gap 60" in evaluation.description

    store.write_bars(_bars(EURUSD, list(range(30, 88))))  # now only 2 minutes (88, 89) are missing
    assert _check(_materialise(tmp_path)).passed
    strict = _check(_materialise(tmp_path, max_gap_share=0.01))
    assert not strict.passed and strict.severity == dg.AssetCheckSeverity.WARN


def test_a_bar_with_an_infinite_price_fails_the_check_as_an_error(tmp_path):
    bad = MinuteBar(EURUSD, START + timedelta(minutes=5), 1.16, float("inf"), 1.15, 1.16, 4)
    StreamStore(tmp_path / "stream").write_bars([*_bars(EURUSD, [0, 1, 2, 3, 4]), bad])
    result = _materialise(tmp_path)
    assert result.success  # the check is not blocking
    evaluation = _check(result)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    assert "NaN/inf" in evaluation.description


def test_a_missing_day_warns_on_a_trading_day_and_passes_on_a_saturday(tmp_path):
    missing = _check(_materialise(tmp_path))
    assert not missing.passed and "no bars stored for 2025-11-18" in missing.description
    assert _check(_materialise(tmp_path, day=date(2025, 11, 22))).passed


def test_the_schedule_refreshes_today_and_completes_yesterday_at_midnight():
    tick = refresh_request(pd.Timestamp("2025-11-18 12:15", tz="UTC"))
    assert tick.partition_key == "2025-11-18" and tick.run_key == "knn_shadow:minute_bars:2025-11-18T12:15:00+00:00"
    assert refresh_request(pd.Timestamp("2025-11-19 00:00", tz="UTC")).partition_key == "2025-11-18"
    saturday = refresh_request(pd.Timestamp("2025-11-22 12:00", tz="UTC"))
    assert isinstance(saturday, dg.SkipReason) and "FX weekend" in saturday.skip_message


def test_the_code_location_has_the_job_schedule_and_sensor_off_by_default():
    from trading_assets.definitions import defs as load

    defs = load()
    job = defs.resolve_job_def("knn_shadow_bars_job")
    assert job.partitions_def is not None
    schedule = defs.resolve_schedule_def("knn_shadow_bars_every_15_minutes")
    assert schedule.cron_schedule == "*/15 * * * *" and schedule.job_name == job.name
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    sensor = defs.resolve_sensor_def("knn_stream_silence_sensor")
    assert sensor.minimum_interval_seconds == 60
    spec = next(s for s in defs.resolve_all_asset_specs() if s.key == dg.AssetKey(["knn_shadow", "minute_bars"]))
    assert spec.group_name == "knn_shadow"


# --------------------------------------------------------------------------- the sensor


@pytest.fixture
def told(caplog):
    caplog.set_level(logging.INFO, logger="trading_assets.notifications")
    return lambda: [r.getMessage() for r in caplog.records if r.name == "trading_assets.notifications"]


class Sensor:
    """Evaluates the silence sensor at chosen times, carrying the cursor like the daemon."""

    def __init__(self, tmp_path, monkeypatch, instance):
        self.store = StreamStore(tmp_path / "stream")
        self.resources = local_resources(tmp_path)
        self.monkeypatch, self.instance, self.cursor = monkeypatch, instance, None

    def at(self, when: datetime):
        self.monkeypatch.setattr(stream_sensors, "_now", lambda: when)
        context = dg.build_sensor_context(cursor=self.cursor, instance=self.instance, resources={
            "stream_store": self.resources["stream_store"], "notifier": self.resources["notifier"]})
        data = knn_stream_silence_sensor.evaluate_tick(context)
        assert not data.run_requests
        self.cursor = data.cursor
        return data.skip_message


@pytest.fixture
def sensor(tmp_path, monkeypatch):
    with dg.instance_for_test() as instance:
        yield Sensor(tmp_path, monkeypatch, instance)


NOON = datetime(2025, 11, 18, 12, 0, tzinfo=UTC)


def test_a_silent_stream_is_told_once_and_its_recovery_once(sensor, told):
    sensor.store.record_connection("connected", source="ig", at=NOON - timedelta(hours=1))
    sensor.store.beat({EURUSD: NOON - timedelta(minutes=2)})
    assert "stream connected (ig), last tick 120 s ago" in sensor.at(NOON)
    assert told() == []

    sensor.store.beat({EURUSD: NOON - timedelta(minutes=2)})  # nothing new: 10 minutes silent at 12:08
    message = sensor.at(NOON + timedelta(minutes=8))
    assert message.startswith("told: no tick for 10.0 minutes")
    [silent] = told()
    assert silent.startswith("stream_silent [knn_shadow]: knn_shadow price stream is silent: no tick for 10.0")

    assert sensor.at(NOON + timedelta(minutes=9)).startswith("still silent")
    assert len(told()) == 1  # the same episode is not told again

    sensor.store.beat({EURUSD: NOON + timedelta(minutes=9, seconds=50)})
    assert sensor.at(NOON + timedelta(minutes=10)).startswith("recovered, told")
    assert len(told()) == 2 and told()[1].startswith("info [knn_shadow]: knn_shadow price stream recovered")
    assert not sensor.at(NOON + timedelta(minutes=11)).startswith(("told", "recovered"))
    assert len(told()) == 2


def test_a_connection_down_beyond_the_grace_is_told(sensor, told):
    sensor.store.record_connection("connected", source="ig", at=NOON - timedelta(hours=1))
    sensor.store.record_connection("stopped", reason="SIGTERM", at=NOON)
    sensor.store.beat({EURUSD: NOON})
    assert "stream stopped" in sensor.at(NOON + timedelta(seconds=30))  # a reconnect may be under way
    assert told() == []
    message = sensor.at(NOON + timedelta(minutes=3))
    assert message.startswith("told: the price stream is stopped: SIGTERM")
    assert len(told()) == 1


def test_outside_fx_hours_it_skips_and_the_week_opening_is_not_a_silence(sensor, told):
    friday_close = datetime(2025, 11, 21, 21, 59, tzinfo=UTC)  # 16:59 New York
    sensor.store.record_connection("connected", source="ig", at=friday_close - timedelta(hours=1))
    sensor.store.beat({EURUSD: friday_close})
    message = sensor.at(datetime(2025, 11, 22, 12, 0, tzinfo=UTC))  # Saturday
    assert message.startswith("FX market closed") and "FX weekend" in message
    # Sunday 17:02 New York: the last tick is Friday's, but the market opened 2 minutes ago
    assert not sensor.at(datetime(2025, 11, 23, 22, 2, tzinfo=UTC)).startswith("told")
    assert sensor.at(datetime(2025, 11, 23, 22, 6, tzinfo=UTC)).startswith("told: no tick for 6.0 minutes")
    assert len(told()) == 1
