"""Flow `ema_concentration`: concentrate into a target ETF while its EMAs are bullish.

`assets.py` holds the tick's assets (bars -> indicators -> signals -> orders ->
transactions -> equity) and the job; `schedules.py` when it runs; `backtest.py` the same
rules over a date range (backtest = live).
"""
