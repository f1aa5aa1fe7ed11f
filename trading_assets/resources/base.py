"""What every resource of the project builds on: the abstract resources the assets
depend on (so a production resource only implements `get()`) and secret hiding."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar

import dagster as dg

from trading_assets.core.ports import Broker, Ledger, MarketData


class BrokerResource(dg.ConfigurableResource, ABC):
    """A broker account for the flows; `get()` returns a `core.ports.Broker`."""

    @abstractmethod
    def get(self) -> Broker: ...


class MarketDataResource(dg.ConfigurableResource, ABC):
    @abstractmethod
    def get(self) -> MarketData: ...


class LedgerResource(dg.ConfigurableResource, ABC):
    @abstractmethod
    def get(self) -> Ledger: ...


_UNRESOLVED = (dg.EnvVar, type(dg.EnvVar.int("_")))


class HidesSecrets:
    """Mask secret fields in `repr()`/`str()`: a resource is easy to log or put into
    metadata by accident (`context.log.info(f"{broker}")`), and pydantic's default repr
    prints every resolved field, EnvVar secrets included.

    Also resolves `EnvVar` fields when `get()` is called outside a run (a script, a
    sensor helper): there Dagster has not resolved them, and the field would hold the
    variable's *name*."""

    SECRET_FIELDS: ClassVar[tuple[str, ...]] = ()

    def _outside_run_copy(self) -> Any:
        """A resolved copy if some field is still an unresolved EnvVar, else None."""
        if any(isinstance(v, _UNRESOLVED) for v in self.__dict__.values()):
            return self.process_config_and_initialize()  # type: ignore[attr-defined]
        return None

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():  # type: ignore[misc]
            yield name, ("***" if name in self.SECRET_FIELDS and value else value)
