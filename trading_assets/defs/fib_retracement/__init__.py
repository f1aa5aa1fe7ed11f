"""Flow `fib_retracement`: buy a pull-back (sell a bounce) that stops at a Fibonacci level
of the last price swing, with the take-profit and stop-loss at the ends of that swing.

`backtest.py` holds its backtest over a watchlist and a date range.
"""
