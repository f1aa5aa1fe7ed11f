"""Twelve Data bars over its REST API."""
