"""The knn_shadow flow's training as assets: a training set of minute bars per day, and one
model per candidate configuration trained on it, scored and logged to MLflow.

- `knn_shadow/training_set` (daily, `knn_days`): the minute bars of the `days` UTC days
  ending with the partition's day (every epic, sorted by symbol then minute). Its lineage
  to `knn_shadow/minute_bars` is a fixed window of the `TRAINING_DAYS` (5) days ending
  with it (`TimeWindowPartitionMapping(start_offset=-4)`): a partition mapping cannot read
  run config, so `days` may shorten the window (1 to 5) but not lengthen it. The bars are
  read from the stream store's day files, the same read `minute_bars` makes (its Parquet
  IO manager loads one partition per input, not a window); the metadata names the days
  that fed it and which of them have a materialised `minute_bars` partition.
- `knn_shadow/models` (same partitions): for each candidate, `knn_forecast.train` on the
  epic's 1-minute closes of the whole window, scored in-sample; and, when the window has
  more than one day, the same configuration trained on the days before the last and
  scored on the last day (`holdout.*`: an honest estimate for the configuration, not a
  score of the logged model). Each model is logged to MLflow with the Dagster run id, the
  partition and the training window ([first day 00:00, day after the last 00:00) UTC). A
  model id is a hash of its data and parameters, and the registry returns the existing
  version for a known id, so re-materialising a partition whose bars did not change adds
  no version (today's partition, still growing, does train new models).
"""

import time
import warnings
from datetime import date, timedelta
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
from pydantic import Field

from trading_assets.core.bars import empty_bars, normalise_bars
from trading_assets.core.strategies import knn_forecast as knn
from trading_assets.defs.conventions import OWNERS, flow_tags
from trading_assets.defs.knn_shadow.partitions import day_minutes, day_of, knn_days
from trading_assets.defs.knn_shadow.stream_assets import MINUTE_BARS
from trading_assets.defs.reports import frame_markdown
from trading_assets.defs.tick_assets import elapsed_ms
from trading_assets.pool_wait import bounded_in_process_executor
from trading_assets.resources.model_registry import ModelRegistryResource
from trading_assets.resources.stream import StreamStoreResource

FLOW = knn.FLOW
TRAINING_SET = dg.AssetKey([FLOW, "training_set"])
MODELS = dg.AssetKey([FLOW, "models"])
TRAINING_DAYS = 5  # the window the partition mapping declares; `days` may only shorten it
DEFAULT_EPIC = "CS.D.EURUSD.MINI.IP"
with warnings.catch_warnings():  # the early partitions' windows start before 2025-01-01; the flag is beta
    warnings.simplefilter("ignore", dg.BetaWarning)
    WINDOW_MAPPING = dg.TimeWindowPartitionMapping(start_offset=-(TRAINING_DAYS - 1), end_offset=0,
                                                   allow_nonexistent_upstream_partitions=True)


class KnnCandidate(dg.Config):
    """One configuration to train: `k` neighbours, the abstention threshold's
    `distance_quantile`, the `horizon` (minutes ahead) and the return `tails` (minutes)."""

    k: int = 5
    distance_quantile: float = 0.8
    horizon: int = 3
    tails: list[int] = Field(default_factory=lambda: [1, 3, 5, 10])

    def params(self) -> knn.Params:
        return knn.Params(tails=tuple(self.tails), horizon=self.horizon, bar="1min", n_neighbors=self.k,
                          distance_quantile=self.distance_quantile)


def _default_candidates() -> list[KnnCandidate]:
    return [KnnCandidate(), KnnCandidate(k=10), KnnCandidate(k=5, distance_quantile=0.9, tails=[1, 5, 15])]


class KnnCandidates(dg.Config):
    """The training window (`days` daily partitions of minute bars ending with the
    partition, 1 to 5), the `epic` to train on and the `candidates` to train."""

    days: int = TRAINING_DAYS
    epic: str = DEFAULT_EPIC
    candidates: list[KnnCandidate] = Field(default_factory=_default_candidates)

    def problems(self) -> list[str]:
        """Every bad value, each naming its field (empty = good)."""
        out = []
        if not 1 <= self.days <= TRAINING_DAYS:
            out.append(f"days: must be 1 to {TRAINING_DAYS} (the window the partition mapping declares), "
                       f"got {self.days}")
        if not self.epic.strip():
            out.append("epic: must name an epic, got an empty string")
        if not self.candidates:
            out.append("candidates: need at least one candidate")
        seen: dict[tuple, int] = {}
        for i, c in enumerate(self.candidates):
            where = f"candidates[{i}]"
            if c.k < 1:
                out.append(f"{where}.k: must be >= 1, got {c.k}")
            if not 0 < c.distance_quantile <= 1:
                out.append(f"{where}.distance_quantile: must be in (0, 1], got {c.distance_quantile}")
            if c.horizon < 1:
                out.append(f"{where}.horizon: must be >= 1 minute, got {c.horizon}")
            if not c.tails or any(t < 1 for t in c.tails) or len(set(c.tails)) != len(c.tails):
                out.append(f"{where}.tails: must be distinct positive minute counts, got {c.tails}")
            key = (c.k, c.distance_quantile, c.horizon, tuple(c.tails))
            if key in seen:
                out.append(f"{where}: the same configuration as candidates[{seen[key]}]")
            seen.setdefault(key, i)
        if not out:  # anything else the model itself refuses
            for i, c in enumerate(self.candidates):
                try:
                    c.params()
                except ValueError as exc:
                    out.append(f"candidates[{i}]: {exc}")
        return out

    def check(self) -> None:
        problems = self.problems()
        if problems:
            raise dg.Failure(f"bad {FLOW} training config: " + "; ".join(problems),
                             metadata={"problems": dg.MetadataValue.json(problems)})

    def window_days(self, partition_key: str) -> list[date]:
        last = day_of(partition_key)
        return [last - timedelta(days=n) for n in range(self.days - 1, -1, -1)]


def _window(days: list[date]) -> tuple[pd.Timestamp, pd.Timestamp]:
    return pd.Timestamp(day_minutes(days[0])[0]), pd.Timestamp(day_minutes(days[-1])[1])


@dg.asset(
    key=TRAINING_SET, group_name=FLOW, partitions_def=knn_days, tags=flow_tags(FLOW, "training"), owners=OWNERS,
    deps=[dg.AssetDep(MINUTE_BARS, partition_mapping=WINDOW_MAPPING)], kinds={"pandas"},
    description="The minute bars (every epic) of the `days` UTC days ending with this one (at most 5: the "
                "partition mapping's fixed window), read from the stream's day files, sorted by symbol and minute.",
)
def training_set(context: dg.AssetExecutionContext, config: KnnCandidates,
                 stream_store: StreamStoreResource) -> dg.Output[pd.DataFrame]:
    t0 = time.perf_counter()
    config.check()
    days = config.window_days(context.partition_key)
    store = stream_store.get()
    frames = [f for f in (store.bars(d) for d in days) if len(f)]
    frame = normalise_bars(pd.concat(frames)) if frames else empty_bars()
    keys = [d.isoformat() for d in days]
    materialised = context.instance.get_materialized_partitions(MINUTE_BARS)
    by_epic = {str(e): g for e, g in frame.groupby("symbol", sort=True)} if len(frame) else {}
    rows_per_day = frame.index.floor("D").strftime("%Y-%m-%d").value_counts().to_dict() if len(frame) else {}
    context.log.info(f"{context.partition_key}: {len(frame)} bars of {len(by_epic)} epics over {keys}")
    return dg.Output(frame, metadata={
        "dagster/row_count": len(frame),
        "rows_per_epic": dg.MetadataValue.json({e: len(g) for e, g in by_epic.items()}),
        "rows_per_day": dg.MetadataValue.json({k: int(rows_per_day.get(k, 0)) for k in keys}),
        "first_minute": frame.index.min().isoformat() if len(frame) else "",
        "last_minute": frame.index.max().isoformat() if len(frame) else "",
        "window_days": dg.MetadataValue.json(keys),
        "minute_bars_partitions": dg.MetadataValue.json(keys),
        "minute_bars_not_materialised": dg.MetadataValue.json([k for k in keys if k not in materialised]),
        "work_ms": elapsed_ms(t0),
    })


def _prices(bars: pd.DataFrame, epic: str) -> pd.Series:
    """The epic's 1-minute closes (minutes without a bar stay missing: no feature or
    target spans them)."""
    closes = bars.loc[bars["symbol"] == epic, "close"].astype("float64")
    return closes[~closes.index.duplicated(keep="last")].sort_index()


def _metric_values(prefix: str, scores: dict[str, float]) -> dict[str, float]:
    return {f"{prefix}.{k}": float(v) for k, v in scores.items() if np.isfinite(v)}


def _holdout(prices: pd.Series, params: knn.Params, last_day: date) -> dict[str, float]:
    """Train on the days before `last_day`, score on `last_day` (empty when either side
    has too little data)."""
    start = pd.Timestamp(day_minutes(last_day)[0])
    before, held = prices[prices.index < start], prices[prices.index >= start]
    try:
        model = knn.train(before, params)
        return knn.score(model, held)
    except ValueError:
        return {}


@dg.asset(
    key=MODELS, group_name=FLOW, partitions_def=knn_days, tags=flow_tags(FLOW, "training"), owners=OWNERS,
    ins={"bars": dg.AssetIn(TRAINING_SET)}, kinds={"scikitlearn", "mlflow"},
    description="One KNN model per candidate configuration, trained on the epic's closes in the training set, "
                "scored in-sample and on the window's last day held out, logged to MLflow (one version each).",
)
def models(context: dg.AssetExecutionContext, config: KnnCandidates, bars: pd.DataFrame,
           model_registry: ModelRegistryResource) -> dg.Output[pd.DataFrame]:
    t0 = time.perf_counter()
    config.check()  # before any training
    days = config.window_days(context.partition_key)
    start, end = _window(days)
    prices = _prices(bars[(bars.index >= start) & (bars.index < end)], config.epic)
    if prices.empty:
        raise dg.Failure(f"no {config.epic} bars in the training window {days[0]} to {days[-1]}")
    registry = model_registry.get()
    rows: list[dict[str, Any]] = []
    for i, candidate in enumerate(config.candidates):
        params = candidate.params()
        try:
            model = knn.train(prices, params)
        except ValueError as exc:
            raise dg.Failure(f"candidates[{i}] cannot be trained on {len(prices)} {config.epic} bars: {exc}") from exc
        in_sample = knn.score(model, prices)
        holdout = _holdout(prices, params, days[-1]) if len(days) > 1 else {}
        metrics = {**_metric_values("in_sample", in_sample), **_metric_values("holdout", holdout)}
        logged = registry.log_model(params, model, metrics, training_window=(start, end),
                                    dagster_run_id=context.run.run_id, partition=context.partition_key)
        rows.append({
            "candidate": i, "model_id": model.model_id, "registered_model": logged.name,
            "mlflow_version": int(logged.version), "mlflow_run_id": logged.run_id,
            "dagster_run_id": context.run.run_id, "partition": context.partition_key, "epic": config.epic,
            "window_start": start.isoformat(), "window_end": end.isoformat(),
            "k": candidate.k, "distance_quantile": float(candidate.distance_quantile),
            "horizon": candidate.horizon, "tails": ",".join(map(str, candidate.tails)),
            "n_train": model.n_train, "threshold": float(model.threshold),
            **{f"in_sample_{k}": float(v) for k, v in in_sample.items()},
            **{f"holdout_{k}": float(holdout.get(k, np.nan)) for k in ("rows", "predictions", "coverage",
                                                                         "hit_rate", "mae")},
        })
        context.log.info(f"candidates[{i}] {model.model_id}: version {logged.version}, "
                         f"in-sample coverage {in_sample['coverage']:.1%}")
    frame = pd.DataFrame(rows)
    shown = frame.loc[:, ["candidate", "model_id", "mlflow_version", "k", "distance_quantile", "horizon", "tails",
                          "n_train", "in_sample_coverage", "in_sample_hit_rate", "holdout_coverage",
                          "holdout_hit_rate", "holdout_mae"]].set_index("candidate")
    return dg.Output(frame, metadata={
        "dagster/row_count": len(frame),
        "candidates": dg.MetadataValue.md(frame_markdown(shown, max_rows=40)),
        "model_ids": dg.MetadataValue.json(frame["model_id"].tolist()),
        "mlflow_versions": dg.MetadataValue.json([int(v) for v in frame["mlflow_version"]]),
        "epic": config.epic,
        "training_bars": len(prices),
        "window": f"{start.isoformat()} to {end.isoformat()}",
        "work_ms": elapsed_ms(t0),
    })


knn_shadow_training_job = dg.define_asset_job(
    name="knn_shadow_training_job",
    selection=dg.AssetSelection.assets(training_set, models),
    executor_def=bounded_in_process_executor,
    description="A day's training set (the minute bars of the window ending with it) and one KNN model per "
                "candidate configuration, logged to MLflow.",
)
