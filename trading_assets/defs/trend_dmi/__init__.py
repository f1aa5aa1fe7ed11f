"""Flow `trend_dmi`: trade TradingView alerts, entering when the trend colour flips, leaving
on a DI cross against the position and re-entering on a DI cross back with the trend.

`backtest.py` holds its backtest, on alerts rebuilt from bars (a backtest has no alerts).
"""
