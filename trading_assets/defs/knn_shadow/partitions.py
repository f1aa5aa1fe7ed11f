"""Daily partitions for the knn_shadow flow: one per UTC day, keyed `2025-11-18`.

The stream writes one file per UTC day, and the flow works on 1-minute bars: a minute
partition per market minute would pass Dagster's guidance of about 100,000 partitions per
asset within a year, so the minute cadence lives inside a day's partition (a run
refreshes the day so far). `end_offset=1` makes today's partition exist while the day is
in progress.
"""

from datetime import UTC, date, datetime, timedelta

import dagster as dg

KNN_PARTITIONS_START = "2025-01-01"

knn_days = dg.DailyPartitionsDefinition(start_date=KNN_PARTITIONS_START, timezone="UTC", end_offset=1)


def day_of(partition_key: str) -> date:
    return date.fromisoformat(partition_key)


def day_minutes(day: date) -> tuple[datetime, datetime]:
    """(start, end) in UTC of the day a partition names."""
    start = datetime.combine(day, datetime.min.time(), tzinfo=UTC)
    return start, start + timedelta(days=1)
