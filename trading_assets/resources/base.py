"""What every resource of the project builds on: the abstract resources the assets
depend on (so a production resource only implements `get()`) and secret hiding."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar, get_args

import dagster as dg

from trading_assets.core.ports import Broker, Ledger, MarketData

if TYPE_CHECKING:
    from trading_assets.resources.messaging import AwsSecretsResource


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
    #: credential field -> its name in the environment (local) and in the JSON secret (aws)
    SECRET_KEYS: ClassVar[dict[str, str]] = {}

    def _outside_run_copy(self) -> Any:
        """A copy with every credential resolved, or None when all already are.

        Resolves `EnvVar` fields Dagster has not resolved (outside a run), and fills
        credentials left empty from the resource's `secrets` store (Secrets Manager in
        aws mode), read now, at run time, never at definitions load."""
        current: Any = self
        unresolved = {k: v for k, v in self.__dict__.items() if isinstance(v, _UNRESOLVED)}
        if unresolved:
            values = {}
            for name, var in unresolved.items():
                value = var.get_value()
                if value is None:
                    raise ValueError(f"{type(self).__name__}.{name}: environment variable {var.env_var_name} "
                                     "is not set")
                values[name] = value
            current = self.model_copy(update=values)  # type: ignore[attr-defined]
        missing = {f: k for f, k in self.SECRET_KEYS.items() if getattr(current, f, None) in (None, "")}
        if missing:
            secret_id, region = getattr(current, "secret_id", None), getattr(current, "secret_region", None)
            if not (secret_id and region):
                names = ", ".join(missing.values())
                raise ValueError(f"{type(self).__name__}: {names} not set (the environment locally, the "
                                 "Secrets Manager secret with TRADING_ENV=aws)")
            from trading_assets.resources.messaging import AwsSecretsResource

            secrets = AwsSecretsResource(region=region, secret_id=secret_id).get()
            fields = type(current).model_fields  # type: ignore[attr-defined]
            update = {}
            for name, key in missing.items():
                value = secrets.get(key)
                annotation = fields[name].annotation
                update[name] = int(value) if annotation is int or int in get_args(annotation) else value
            current = current.model_copy(update=update)
        return None if current is self else current

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():  # type: ignore[misc]
            yield name, ("***" if name in self.SECRET_FIELDS and value else value)


class Credentials(HidesSecrets, dg.ConfigurableResource):
    """A resource with credentials (`SECRET_KEYS`): `EnvVar`s locally; in aws mode left
    empty, and read at run time from the Secrets Manager secret named here."""

    secret_id: str | None = None
    secret_region: str | None = None


def credentials(resource: type[Credentials], secrets: AwsSecretsResource | None) -> dict[str, object]:
    """A resource's credential fields: `EnvVar`s by their key (local), or left empty with
    the Secrets Manager store that fills them at run time (aws)."""
    if secrets is not None:  # plain names, not a nested resource: the values are read in get()
        return {"secret_id": secrets.secret_id, "secret_region": secrets.region}
    fields = resource.model_fields  # type: ignore[attr-defined]
    return {f: (dg.EnvVar.int(k) if int in get_args(fields[f].annotation) else dg.EnvVar(k))
            for f, k in resource.SECRET_KEYS.items()}
