"""Flow `knn_shadow`: nearest-neighbour models forecast a symbol's return over the next
3 minutes and trade only when the past patterns they match are close enough, each trade
with a limit, a stop and a 3-minute life. Models run in shadow, to be promoted once
their record is good.

`backtest.py` holds its walk-forward backtest over 1-minute bars.
"""
