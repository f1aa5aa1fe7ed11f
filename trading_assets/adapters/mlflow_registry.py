"""The `knn_shadow` models in MLflow: tracking (params, metrics, tags, the fitted model as an
artifact) and the model registry (one registered model per flow, a version per trained
configuration, the `champion` alias, shadow versions, an audit trail of promotions).

Choices:
- Explicit clients, no global state: every `ModelRegistry` holds its own
  `MlflowClient(tracking_uri=..., registry_uri=...)`; nothing calls `mlflow.set_tracking_uri`
  or starts an active run, so two registries (two backends, or two processes on one) never
  see each other's configuration, only each other's writes.
- The fitted model is a plain pickle (`model/model.pkl`) of the `knn_forecast.KNNModel`
  dataclass, with its SHA-256 as a tag: it loads back as the very object that was logged
  (same scaler, neighbours and threshold, so the same predictions and abstentions), needs
  no pyfunc wrapper, conda/virtualenv spec or model signature, and a damaged file is
  detected before it is unpickled. A pickle executes code when loaded: the tracking store
  and artifact root are the project's own, never a third party's.
- Ids both ways: the run and the model version carry the project's deterministic model id
  (`trading.model_id`); the run carries the registered name and version once registered.
  `find` takes either. Logging a model id that is already registered returns the existing
  version (a rerun of the same training partition registers nothing new).
- Champion: the registry alias `champion`. `promote` moves it and records why; `demote`
  gives it back to the version the demoted one had replaced (or removes it). Every move is
  an audit entry, a tag on the registered model (`audit.<time>.<nonce>`: JSON with action,
  version, model id, previous champion, reason, when), listed by `audit()`.
- Shadow: a version is in shadow when tagged `shadow=true` (`add_shadow`/`remove_shadow`)
  or when the flow's configuration lists it (`shadow(listed=...)`, by version or model id:
  "list a model in config and it is deployed"). `shadow()` never includes the champion.
- Not atomic across writers: MLflow has no compare-and-set on aliases, so two concurrent
  promotions end with whichever wrote last (both audited).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import platform
import tempfile
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from trading_assets.core.strategies import knn_forecast as knn

DEFAULT_NAME = knn.FLOW  # one registered model (and one experiment) per flow
CHAMPION = "champion"
ARTIFACT_DIR = "model"
ARTIFACT_FILE = "model.pkl"

MODEL_ID_TAG = "trading.model_id"
SHA256_TAG = "trading.artifact_sha256"
DAGSTER_RUN_TAG = "dagster.run_id"
PARTITION_TAG = "dagster.partition"
WINDOW_START_TAG = "training.window_start"
WINDOW_END_TAG = "training.window_end"
REGISTERED_NAME_TAG = "registry.name"
REGISTERED_VERSION_TAG = "registry.version"
SHADOW_TAG = "shadow"
PREVIOUS_CHAMPION_TAG = "champion.previous"
REASON_TAG = "champion.reason"
AUDIT_PREFIX = "audit."


class ModelLoadError(RuntimeError):
    """A registered model could not be loaded; the message names it and the cause."""


class UnknownModel(LookupError):
    """No version of the registered model matches the reference."""


class LoggedModel(NamedTuple):
    run_id: str
    name: str
    version: int


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    model_id: str | None
    run_id: str | None
    source: str
    aliases: tuple[str, ...]
    tags: Mapping[str, str]

    @property
    def in_shadow(self) -> bool:
        return self.tags.get(SHADOW_TAG) == "true"


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    action: str  # promote | demote
    version: int
    model_id: str | None
    previous: int | None  # the champion before
    champion: int | None  # the champion after
    reason: str


def _iso(value: Any) -> str:
    if value is None:
        return ""
    return pd.Timestamp(value).isoformat()


def config_params(config: knn.Params) -> dict[str, str]:
    """The candidate configuration as MLflow params (strings; tails as `1,3,5,10`)."""
    out = {}
    for key, value in asdict(config).items():
        if isinstance(value, tuple | list):
            value = ",".join(map(str, value))
        out[key] = "" if value is None else str(value)
    out["k"] = str(config.n_neighbors)
    out["threshold_quantile"] = str(config.distance_quantile)
    return out


class ModelRegistry:
    """MLflow tracking + registry for one flow's models (registered name `name`)."""

    def __init__(self, tracking_uri: str, artifact_root: str | None = None, name: str = DEFAULT_NAME,
                 experiment: str | None = None) -> None:
        if not tracking_uri:
            raise ValueError("ModelRegistry needs a tracking URI (e.g. sqlite:///.trading_data/mlflow.sqlite)")
        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root.rstrip("/") if artifact_root else None
        self.name = name
        self.experiment = experiment or name
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._experiment_id: str | None = None

    def __repr__(self) -> str:
        return f"ModelRegistry({self.tracking_uri!r}, name={self.name!r})"

    # ------------------------------------------------------------------ setup

    def experiment_id(self) -> str:
        if self._experiment_id is None:
            found = self.client.get_experiment_by_name(self.experiment)
            if found is None:
                location = f"{self.artifact_root}/{self.experiment}" if self.artifact_root else None
                try:
                    self._experiment_id = self.client.create_experiment(self.experiment,
                                                                        artifact_location=location)
                except MlflowException as exc:  # another writer created it first
                    if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                        raise
                    self._experiment_id = self.client.get_experiment_by_name(self.experiment).experiment_id
            else:
                self._experiment_id = found.experiment_id
        return self._experiment_id

    def _ensure_registered_model(self) -> None:
        try:
            self.client.create_registered_model(
                self.name, description=f"The {self.name} flow's models; alias `{CHAMPION}` trades.")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    # ------------------------------------------------------------------ logging

    def log_model(self, config: knn.Params, fitted_model: knn.KNNModel, metrics: Mapping[str, float],
                  training_window: tuple[Any, Any], dagster_run_id: str | None = None,
                  partition: str | None = None, model_id: str | None = None) -> LoggedModel:
        """Log one trained configuration as an MLflow run and register it as a version.

        Returns (MLflow run id, registered name, version). A model id already registered
        returns that version unchanged."""
        model_id = model_id or fitted_model.model_id
        if model_id != fitted_model.model_id:
            raise ValueError(f"model_id {model_id!r} is not the fitted model's id {fitted_model.model_id!r}")
        if config != fitted_model.params:
            raise ValueError(f"model {model_id} was fitted with {fitted_model.params}, not {config}")
        existing = self._version_for_model_id(model_id)
        if existing is not None:
            return LoggedModel(existing.run_id or "", self.name, existing.version)

        blob = pickle.dumps(fitted_model, protocol=pickle.HIGHEST_PROTOCOL)
        sha = hashlib.sha256(blob).hexdigest()
        start, end = training_window
        import sklearn

        tags = {
            MODEL_ID_TAG: model_id,
            WINDOW_START_TAG: _iso(start),
            WINDOW_END_TAG: _iso(end),
            SHA256_TAG: sha,
            "trading.flow": self.name,
            "sklearn.version": sklearn.__version__,
            "python.version": platform.python_version(),
        }
        if dagster_run_id:
            tags[DAGSTER_RUN_TAG] = dagster_run_id
        if partition:
            tags[PARTITION_TAG] = partition
        fitted = {"fit.threshold": fitted_model.threshold, "fit.n_train": float(fitted_model.n_train)}
        now_ms = int(time.time() * 1000)
        params = {**config_params(config), "features": ",".join(fitted_model.feature_names)}

        run = self.client.create_run(self.experiment_id(), tags=tags, run_name=model_id)
        run_id = run.info.run_id
        try:
            self.client.log_batch(
                run_id,
                metrics=[Metric(k, float(v), now_ms, 0) for k, v in {**fitted, **metrics}.items()],
                params=[Param(k, v) for k, v in params.items()],
            )
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / ARTIFACT_FILE
                path.write_bytes(blob)
                (Path(tmp) / "model.json").write_text(json.dumps(fitted_model.describe(), indent=2))
                self.client.log_artifacts(run_id, tmp, artifact_path=ARTIFACT_DIR)
            self._ensure_registered_model()
            version = self.client.create_model_version(
                self.name, source=f"{run.info.artifact_uri}/{ARTIFACT_DIR}", run_id=run_id,
                tags={k: v for k, v in tags.items() if k in (MODEL_ID_TAG, SHA256_TAG, DAGSTER_RUN_TAG,
                                                             PARTITION_TAG, WINDOW_START_TAG, WINDOW_END_TAG)},
                description=f"{model_id}: {params['features']}, k={config.n_neighbors}",
            )
            self.client.log_batch(run_id, tags=[RunTag(REGISTERED_NAME_TAG, self.name),
                                                RunTag(REGISTERED_VERSION_TAG, str(version.version))])
        except BaseException:
            self.client.set_terminated(run_id, status="FAILED")
            raise
        self.client.set_terminated(run_id)
        return LoggedModel(run_id, self.name, int(version.version))

    # ------------------------------------------------------------------ finding and loading

    def _info(self, mv: Any) -> ModelVersion:
        return ModelVersion(name=mv.name, version=int(mv.version), model_id=mv.tags.get(MODEL_ID_TAG),
                            run_id=mv.run_id, source=mv.source, aliases=tuple(mv.aliases or ()),
                            tags=dict(mv.tags))

    def _version_for_model_id(self, model_id: str) -> ModelVersion | None:
        if "'" in model_id:
            raise ValueError(f"not a model id: {model_id!r}")
        try:
            found = self.client.search_model_versions(
                f"name = '{self.name}' and tags.`{MODEL_ID_TAG}` = '{model_id}'")
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        if not found:
            return None
        return self._info(min(found, key=lambda mv: int(mv.version)))

    def versions(self) -> list[ModelVersion]:
        """Every version of the registered model, oldest first."""
        found = self.client.search_model_versions(f"name = '{self.name}'")
        return sorted((self._info(mv) for mv in found), key=lambda v: v.version)

    def find(self, ref: int | str) -> ModelVersion:
        """A version by number (3, "3"), alias ("@champion") or project model id ("knn-...")."""
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            try:
                return self._info(self.client.get_model_version(self.name, str(int(ref))))
            except MlflowException as exc:
                raise UnknownModel(f"{self.name}: no version {ref}") from exc
        if isinstance(ref, str) and ref.startswith("@"):
            try:
                return self._info(self.client.get_model_version_by_alias(self.name, ref[1:]))
            except MlflowException as exc:
                raise UnknownModel(f"{self.name}: no version has the alias {ref[1:]!r}") from exc
        found = self._version_for_model_id(str(ref))
        if found is None:
            raise UnknownModel(f"{self.name}: no version is model {ref}")
        return found

    def run(self, ref: int | str) -> Any:
        """The MLflow run (params, metrics, tags) that logged a version."""
        return self.client.get_run(self.find(ref).run_id)

    def load(self, ref: int | str) -> knn.KNNModel:
        """The fitted model of a version (by number, alias or model id), exactly as logged."""
        mv = self.find(ref)
        label = f"{self.name} version {mv.version} (model {mv.model_id})"
        try:
            with tempfile.TemporaryDirectory() as tmp:
                local = self.client.download_artifacts(mv.run_id, f"{ARTIFACT_DIR}/{ARTIFACT_FILE}", tmp)
                blob = Path(local).read_bytes()
        except (MlflowException, OSError) as exc:
            raise ModelLoadError(f"{label}: artifact {ARTIFACT_DIR}/{ARTIFACT_FILE} could not be read from "
                                 f"{mv.source}: {exc}") from exc
        expected = mv.tags.get(SHA256_TAG)
        if expected and hashlib.sha256(blob).hexdigest() != expected:
            raise ModelLoadError(f"{label}: artifact {mv.source}/{ARTIFACT_FILE} is corrupt "
                                 f"(SHA-256 differs from the one logged)")
        try:
            model = pickle.loads(blob)
        except Exception as exc:  # unpickling can raise nearly anything
            raise ModelLoadError(f"{label}: artifact {mv.source}/{ARTIFACT_FILE} does not unpickle: "
                                 f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(model, knn.KNNModel) or model.model_id != mv.model_id:
            raise ModelLoadError(f"{label}: the artifact holds {type(model).__name__} "
                                 f"{getattr(model, 'model_id', '?')}, not model {mv.model_id}")
        return model

    # ------------------------------------------------------------------ aliases, shadow, audit

    def set_alias(self, alias: str, version: int | str) -> None:
        self.client.set_registered_model_alias(self.name, alias, str(self.find(version).version))

    def champion(self) -> ModelVersion | None:
        try:
            return self._info(self.client.get_model_version_by_alias(self.name, CHAMPION))
        except MlflowException:
            return None

    def add_shadow(self, ref: int | str) -> ModelVersion:
        mv = self.find(ref)
        self.client.set_model_version_tag(self.name, str(mv.version), SHADOW_TAG, "true")
        return self.find(mv.version)

    def remove_shadow(self, ref: int | str) -> None:
        mv = self.find(ref)
        if mv.in_shadow:
            self.client.delete_model_version_tag(self.name, str(mv.version), SHADOW_TAG)

    def shadow(self, listed: Iterable[int | str] = ()) -> list[ModelVersion]:
        """Versions in shadow: tagged `shadow=true`, or listed (by version or model id) in the
        flow's configuration; the champion is not among them. A listed model that is not
        registered is an `UnknownModel` error naming it."""
        chosen = {mv.version: mv for mv in self.versions() if mv.in_shadow}
        for ref in listed:
            mv = self.find(ref)
            chosen[mv.version] = mv
        champion = self.champion()
        return [mv for v, mv in sorted(chosen.items()) if champion is None or v != champion.version]

    def _audit(self, action: str, mv: ModelVersion, previous: int | None, after: int | None, reason: str) -> None:
        at = datetime.now(UTC)
        entry = {"at": at.isoformat(), "action": action, "version": mv.version, "model_id": mv.model_id,
                 "previous": previous, "champion": after, "reason": reason}
        key = f"{AUDIT_PREFIX}{time.time_ns():020d}.{uuid.uuid4().hex[:8]}"
        self.client.set_registered_model_tag(self.name, key, json.dumps(entry))

    def promote(self, ref: int | str, reason: str) -> ModelVersion:
        """Make a version the champion; records the reason on it and in the audit."""
        if not reason.strip():
            raise ValueError("promote needs a reason (it is recorded)")
        mv = self.find(ref)
        before = self.champion()
        previous = None if before is None else before.version
        if previous == mv.version:
            return mv
        self.client.set_registered_model_alias(self.name, CHAMPION, str(mv.version))
        version = str(mv.version)
        self.client.set_model_version_tag(self.name, version, REASON_TAG, reason)
        self.client.set_model_version_tag(self.name, version, PREVIOUS_CHAMPION_TAG,
                                          "" if previous is None else str(previous))
        self._audit("promote", mv, previous, mv.version, reason)
        return self.find(mv.version)

    def demote(self, ref: int | str, reason: str) -> ModelVersion | None:
        """Take the champion alias from a version: it goes back to the version it replaced
        (if that still exists), else nobody is champion. Returns the new champion."""
        if not reason.strip():
            raise ValueError("demote needs a reason (it is recorded)")
        mv = self.find(ref)
        current = self.champion()
        if current is None or current.version != mv.version:
            holder = "nobody" if current is None else f"version {current.version}"
            raise ValueError(f"{self.name} version {mv.version} is not the champion ({holder} is)")
        back: ModelVersion | None = None
        previous = mv.tags.get(PREVIOUS_CHAMPION_TAG, "")
        if previous:
            try:
                back = self.find(int(previous))
            except UnknownModel:
                back = None
        if back is None:
            self.client.delete_registered_model_alias(self.name, CHAMPION)
        else:
            self.client.set_registered_model_alias(self.name, CHAMPION, str(back.version))
        self.client.set_model_version_tag(self.name, str(mv.version), "champion.demoted_reason", reason)
        self._audit("demote", mv, mv.version, None if back is None else back.version, reason)
        return self.champion()

    def audit(self) -> list[AuditEntry]:
        """Every promotion and demotion, oldest first."""
        try:
            tags = self.client.get_registered_model(self.name).tags
        except MlflowException:
            return []
        out = []
        for key in sorted(k for k in tags if k.startswith(AUDIT_PREFIX)):
            e = json.loads(tags[key])
            out.append(AuditEntry(at=datetime.fromisoformat(e["at"]), action=e["action"], version=e["version"],
                                  model_id=e["model_id"], previous=e["previous"], champion=e["champion"],
                                  reason=e["reason"]))
        return out
