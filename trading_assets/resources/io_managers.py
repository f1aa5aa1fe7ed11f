"""Parquet IO managers: one file per (asset, partition), written atomically.

Per-partition paths mean two overlapping runs of the same asset never share a file (the
concurrent-run `EOFError` in dagster-latency.md came from one shared pickle path), and a
write goes to a temporary file that is renamed into place, so a reader never sees half a
file and a crashed write leaves the previous version intact.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import dagster as dg
import pandas as pd


class LocalParquetIOManager(dg.ConfigurableIOManager):
    """DataFrames as Parquet under `base_dir/<asset key path>/<partition>.parquet`."""

    base_dir: str

    def _path(self, context: dg.OutputContext | dg.InputContext) -> Path:
        key = context.asset_key.path
        partition = context.asset_partition_key if context.has_asset_partitions else "__unpartitioned__"
        safe = partition.replace("/", "_")
        return Path(self.base_dir, *key, f"{safe}.parquet")

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | None) -> None:
        if obj is None:
            return
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(
                f"{context.asset_key.to_user_string()} returned {type(obj).__name__}; "
                "this IO manager stores pandas DataFrames only")
        path = self._path(context)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            obj.to_parquet(tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        path = self._path(context)
        if not path.exists():
            raise FileNotFoundError(
                f"{context.asset_key.to_user_string()} has not been materialised for "
                f"{context.asset_partition_key if context.has_asset_partitions else 'this asset'} "
                f"(no {path}); materialise it first")
        return pd.read_parquet(path)
