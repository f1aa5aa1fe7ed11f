"""Market-hours partitions: 13 bars a full day, holidays and half-day afternoons excluded."""

from datetime import date

import pandas as pd
import pytest

from trading_assets.core.calendar import TZ, MarketClosedError
from trading_assets.defs.partitions import (
    bar_closing_at,
    bar_window,
    market_bar_partitions,
    session_partition_keys,
)


@pytest.fixture(scope="module")
def partitions():
    return market_bar_partitions(start="2025-11-03-09:30")


def test_keys_for_thanksgiving_week(partitions):
    keys = [k for k in partitions.get_partition_keys() if "2025-11-24" <= k[:10] <= "2025-11-28"]
    per_day = pd.Series([k[:10] for k in keys]).value_counts().sort_index().to_dict()
    assert per_day == {"2025-11-24": 13, "2025-11-25": 13, "2025-11-26": 13, "2025-11-28": 7}
    assert keys[0] == "2025-11-24-09:30"
    assert "2025-11-26-15:30" in keys
    assert "2025-11-28-12:30" in keys and "2025-11-28-13:00" not in keys


def test_each_window_is_thirty_minutes_including_the_last_bar(partitions):
    window = partitions.time_window_for_partition_key("2025-11-26-15:30")
    assert window.start.strftime("%H:%M") == "15:30"
    assert (window.end - window.start) == pd.Timedelta(minutes=30)


def test_dst_week_keys_stay_at_0930_new_york(partitions):
    keys = [k for k in partitions.get_partition_keys() if k[:10] in ("2025-11-03", "2025-11-04")]
    assert len(keys) == 26 and keys[0].endswith("09:30")


def test_bar_window_rejects_holidays_weekends_and_off_hours_with_reasons():
    with pytest.raises(MarketClosedError, match="Christmas"):
        bar_window("2025-12-25-10:00")
    with pytest.raises(MarketClosedError, match="Saturday"):
        bar_window("2025-11-29-10:00")
    with pytest.raises(MarketClosedError, match=r"12:30 \(close 13:00\)"):
        bar_window("2025-11-28-14:00")
    with pytest.raises(MarketClosedError, match="not a bar key"):
        bar_window("yesterday")
    start, end = bar_window("2025-11-26-09:30")
    assert start == pd.Timestamp("2025-11-26 14:30", tz="UTC") and end - start == pd.Timedelta(minutes=30)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        ("2025-11-26 10:00", "2025-11-26-09:30"),
        ("2025-11-26 16:00", "2025-11-26-15:30"),
        ("2025-11-28 13:00", "2025-11-28-12:30"),
        ("2025-11-28 13:30", None),
        ("2025-11-26 09:30", None),
        ("2025-11-27 10:00", None),
    ],
)
def test_bar_closing_at(moment, expected):
    assert bar_closing_at(pd.Timestamp(moment, tz=TZ)) == expected


def test_session_partition_keys_match_the_partitions(partitions):
    day_keys = session_partition_keys(date(2025, 11, 28))
    assert day_keys == [k for k in partitions.get_partition_keys() if k.startswith("2025-11-28")]


def test_the_partitions_hash_is_computed_once_and_equality_is_unchanged(monkeypatch):
    """Dagster hashes the definition ~100 times a run by rebuilding a repr of ~400
    exclusions; the hash is memoised per (immutable) definition."""
    import dagster as dg

    from trading_assets.defs.partitions import market_bar_partitions

    fresh = market_bar_partitions()
    first = hash(fresh)
    calls = []
    monkeypatch.setattr(dg.TimeWindowPartitionsDefinition, "__repr__", lambda self: calls.append(1) or "x")
    assert hash(fresh) == first and calls == [], "the second hash rebuilt the repr"
    monkeypatch.undo()
    assert fresh == market_bar_partitions() and hash(market_bar_partitions()) == first
    other = market_bar_partitions(start="2025-06-02-09:30")
    assert other != fresh and hash(other) != first


def test_memoised_key_times_and_ranges_equal_dagsters_own():
    """A key's start time and a key range's keys are memoised per definition: the kept
    answers are the ones Dagster computes, a bad key still raises, and another definition
    (a later start) keeps its own answers."""
    import dagster as dg

    from trading_assets.defs.partitions import market_bar_partitions

    cls = dg.TimeWindowPartitionsDefinition
    fresh, later = market_bar_partitions(), market_bar_partitions(start="2025-11-26-09:30")
    whole = dg.PartitionKeyRange("2025-11-26-15:00", "2025-11-28-10:00")
    for definition in (fresh, later):
        for _ in range(2):  # computed, then kept
            assert definition.start_time_for_partition_key("2025-11-28-12:30") == \
                cls.start_time_for_partition_key.__wrapped__(definition, "2025-11-28-12:30")
            keys = definition.get_partition_keys_in_range(whole)
            assert keys == cls.get_partition_keys_in_range.__wrapped__(definition, whole)
    # Thanksgiving (11-27) has no bars; the half day (11-28) ends at 13:00
    assert keys == ["2025-11-26-15:00", "2025-11-26-15:30", "2025-11-28-09:30", "2025-11-28-10:00"]
    with pytest.raises(ValueError):
        fresh.start_time_for_partition_key("not a key")
    assert later.get_partition_keys_in_range(dg.PartitionKeyRange("2025-11-26-09:30", "2025-11-26-10:00")) == [
        "2025-11-26-09:30", "2025-11-26-10:00"]
