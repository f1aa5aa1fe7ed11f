"""Tradovate (futures): the broker over Tradovate's REST API."""
