"""The knn_shadow flow's model registry (MLflow tracking + registry) as a Dagster resource."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import dagster as dg
from pydantic import PrivateAttr

if TYPE_CHECKING:
    from trading_assets.adapters.mlflow_registry import ModelRegistry


class ModelRegistryResource(dg.ConfigurableResource):
    """`get()` returns the `adapters.mlflow_registry.ModelRegistry` over `tracking_uri`
    (`settings.mlflow_tracking_uri()`: SQLite under the data directory by default), new
    artifacts under `artifact_root` (`settings.mlflow_artifact_root()`; local or S3).
    MLflow is imported on the first `get()` (~1.3 s), not when the code location loads."""

    tracking_uri: str
    artifact_root: str | None = None
    registered_model: str = "knn_shadow"

    _registry: Any = PrivateAttr(default=None)

    @classmethod
    def from_settings(cls, registered_model: str = "knn_shadow") -> ModelRegistryResource:
        from trading_assets import settings

        return cls(tracking_uri=settings.mlflow_tracking_uri(), artifact_root=settings.mlflow_artifact_root(),
                   registered_model=registered_model)

    def get(self) -> ModelRegistry:
        if self._registry is None:
            from trading_assets.adapters.mlflow_registry import ModelRegistry

            self._registry = ModelRegistry(self.tracking_uri, self.artifact_root, name=self.registered_model)
        return self._registry
