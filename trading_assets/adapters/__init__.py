"""Adapters: the outside world behind the core's small protocols, one package per venue
(alpaca, ig, tradovate, paper, replay, yfinance, twelve_data, sqlite). `safety` guards any
broker (kill switch, live gate); `ratelimit` paces any client."""
