"""TradingView continuous tickers resolve to the broker's front-month contract."""

from datetime import date

import pytest

from trading_assets.core.instruments import front_month, resolve_instrument, third_friday


def test_third_fridays_of_known_quarters():
    assert third_friday(2026, 12) == date(2026, 12, 18)
    assert third_friday(2027, 3) == date(2027, 3, 19)
    assert third_friday(2026, 9) == date(2026, 9, 18)


@pytest.mark.parametrize(("on", "contract"), [
    (date(2026, 12, 2), "MNQZ6"),    # December is front until its roll
    (date(2026, 12, 9), "MNQZ6"),    # the day before the roll (expiry 12-18, roll 12-10)
    (date(2026, 12, 10), "MNQH7"),   # rolled to March
    (date(2026, 12, 31), "MNQH7"),
    (date(2027, 1, 15), "MNQH7"),
    (date(2027, 3, 11), "MNQM7"),    # March expires 03-19, rolled on 03-11
    (date(2029, 11, 30), "MNQZ9"),
])
def test_front_month_rolls_eight_days_before_expiry(on, contract):
    assert front_month("MNQ", on) == contract


def test_mapping_resolves_front_fixed_and_unmapped():
    mapping = {"MNQ1!": "MNQ@front", "ES1!": "ESH7", "TQQQ": "TQQQ"}
    assert resolve_instrument("MNQ1!", mapping, date(2026, 12, 2)) == "MNQZ6"
    assert resolve_instrument("ES1!", mapping, date(2026, 12, 2)) == "ESH7"
    assert resolve_instrument("NQ1!", mapping, date(2026, 12, 2)) is None
