"""Ticks into 1-minute bars: what the knn_shadow flow's bars are made of."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import pandas as pd
import pytest

from trading_assets.core.bars import bar_problems
from trading_assets.core.minute_bars import MinuteBar, MinuteBarBuilder, minute_bars

EUR = "CS.D.EURUSD.MINI.IP"
GBP = "CS.D.GBPUSD.MINI.IP"
T0 = datetime(2024, 7, 1, 9, 0, tzinfo=UTC)


class T(NamedTuple):
    epic: str
    timestamp: datetime
    bid: float | None
    offer: float | None


def tick(seconds: float, price: float, epic: str = EUR) -> T:
    """A tick `seconds` after 09:00 whose mid is `price` (spread 0.0002)."""
    return T(epic, T0 + timedelta(seconds=seconds), price - 0.0001, price + 0.0001)


def test_a_bar_is_first_high_low_and_the_last_price_of_its_minute_with_the_tick_count() -> None:
    bars = minute_bars([tick(1, 1.10), tick(20, 1.13), tick(40, 1.09), tick(59.9, 1.11),
                        tick(61, 1.20)])
    assert list(bars.index) == [pd.Timestamp("2024-07-01 09:00", tz="UTC"), pd.Timestamp("2024-07-01 09:01", tz="UTC")]
    first = bars.iloc[0]
    assert first["symbol"] == EUR
    assert (first["open"], first["high"], first["low"], first["close"], first["volume"]) == pytest.approx(
        (1.10, 1.13, 1.09, 1.11, 4))
    assert bars.iloc[1]["close"] == pytest.approx(1.20)
    assert bar_problems(bars) == []  # the project's bar schema


def test_the_close_is_the_mid_of_bid_and_offer() -> None:
    [bar] = minute_bars([T(EUR, T0, 1.0850, 1.0852)]).itertuples()
    assert bar.close == pytest.approx(1.0851)


def test_a_minute_without_ticks_has_no_bar_nothing_is_forward_filled() -> None:
    bars = minute_bars([tick(5, 1.1), tick(3 * 60 + 5, 1.2)])  # 09:00 and 09:03
    assert [t.strftime("%H:%M") for t in bars.index] == ["09:00", "09:03"]


def test_duplicate_ticks_are_dropped_and_counted() -> None:
    builder = MinuteBarBuilder()
    for t in [tick(1, 1.1), tick(2, 1.2), tick(1, 1.1), tick(2, 1.2)]:  # a snapshot resent
        builder.add(t)
    [bar] = builder.flush()
    assert bar.ticks == 2 and bar.close == pytest.approx(1.2)
    assert builder.stats.duplicates == 2


def test_an_out_of_order_tick_of_the_open_minute_is_placed_but_never_becomes_the_close() -> None:
    builder = MinuteBarBuilder()
    builder.add(tick(10, 1.10))
    builder.add(tick(30, 1.12))
    builder.add(tick(5, 1.05))  # older than the newest: it is the minute's first price
    builder.add(tick(20, 1.30))  # older than the newest: a new high, not the close
    [bar] = builder.flush()
    assert (bar.open, bar.high, bar.low, bar.close, bar.ticks) == pytest.approx((1.05, 1.30, 1.05, 1.12, 4))
    assert builder.stats.reordered == 2 and builder.stats.late == 0


def test_a_tick_for_a_minute_already_closed_is_dropped_and_the_bar_never_changes() -> None:
    builder = MinuteBarBuilder()
    builder.add(tick(10, 1.10))
    [closed] = builder.add(tick(65, 1.20))
    assert builder.add(tick(50, 9.99)) == []  # 09:00 is final
    assert builder.stats.late == 1
    [second] = builder.flush()
    assert closed.close == pytest.approx(1.10) and closed.ticks == 1
    assert second.minute == T0 + timedelta(minutes=1) and second.ticks == 1


def test_a_minute_closes_on_the_next_minutes_tick() -> None:
    builder = MinuteBarBuilder()
    assert builder.add(tick(10, 1.1)) == []
    assert builder.add(tick(59.999, 1.2)) == []
    closed = builder.add(tick(60, 1.3))
    assert closed == [MinuteBar(EUR, T0, pytest.approx(1.1), pytest.approx(1.2), pytest.approx(1.1),
                                pytest.approx(1.2), 2)]


def test_a_minute_closes_when_the_clock_passes_its_end_plus_grace() -> None:
    builder = MinuteBarBuilder(grace=timedelta(seconds=2))
    builder.add(tick(10, 1.1))
    assert builder.close_due(T0 + timedelta(seconds=61)) == []  # within the grace
    [bar] = builder.close_due(T0 + timedelta(seconds=62))
    assert bar.minute == T0 and bar.close == pytest.approx(1.1)
    assert builder.open_bars() == []
    assert builder.add(tick(61, 1.5)) == []  # a late tick of 09:01 opens 09:01, not 09:00
    assert builder.stats.late == 0 and builder.open_bars()[0].minute == T0 + timedelta(minutes=1)


def test_each_epic_has_its_own_minutes() -> None:
    builder = MinuteBarBuilder()
    builder.add(tick(10, 1.10, EUR))
    builder.add(tick(20, 1.27, GBP))
    [eur] = builder.add(tick(70, 1.11, EUR))  # closes EURUSD's 09:00 only
    assert eur.epic == EUR
    assert sorted(b.epic for b in builder.open_bars()) == [EUR, GBP]


def test_a_tick_without_both_sides_has_no_price_and_is_left_out() -> None:
    builder = MinuteBarBuilder()
    builder.add(T(EUR, T0 + timedelta(seconds=1), 1.10, None))
    builder.add(tick(2, 1.2))
    [bar] = builder.flush()
    assert bar.ticks == 1 and bar.open == pytest.approx(1.2)
    assert builder.stats.unpriced == 1


def test_naive_tick_times_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        MinuteBarBuilder().add(T(EUR, datetime(2024, 7, 1, 9, 0), 1.0, 1.1))
