"""One module per flow: pure functions shared by the backtester and the live assets."""
