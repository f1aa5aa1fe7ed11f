"""Flow `ma_crossover`: go long when a symbol's fast moving average crosses above its slow
one, leave (or go short, if allowed) when it crosses back below.

`backtest.py` holds its backtest over a watchlist and a date range.
"""
