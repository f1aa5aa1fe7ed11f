"""Fixtures of the deployment tests: the throwaway PostgreSQL cluster (moto comes from the
suite's conftest)."""

from trading_assets_tests.fakes.postgres import postgres_server  # noqa: F401  (fixture)
