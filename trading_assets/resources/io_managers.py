"""Parquet IO managers: one object per (asset, partition), locally or in S3.

Per-partition keys mean two overlapping runs of the same asset never share a file (the
concurrent-run `EOFError` in dagster-latency.md came from one shared pickle path). Locally
a write goes to a temporary file that is renamed into place, so a reader never sees half
a file and a crashed write leaves the previous version intact; an S3 PUT is atomic by
itself. dagster-aws has no Parquet IO manager, and s3fs conflicts with current boto3
(aws-notes.md), so the S3 one is pyarrow + boto3 directly.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path, PurePosixPath

import dagster as dg
import pandas as pd

UNPARTITIONED = "__unpartitioned__"


def object_path(context: dg.OutputContext | dg.InputContext) -> PurePosixPath:
    """`<asset key path>/<partition>.parquet`, the same layout on disk and in S3."""
    partition = context.asset_partition_key if context.has_asset_partitions else UNPARTITIONED
    return PurePosixPath(*context.asset_key.path, f"{partition.replace('/', '_')}.parquet")


def _check_frame(context: dg.OutputContext, obj: object) -> pd.DataFrame:
    if not isinstance(obj, pd.DataFrame):
        raise TypeError(
            f"{context.asset_key.to_user_string()} returned {type(obj).__name__}; "
            "this IO manager stores pandas DataFrames only")
    return obj


def _not_materialised(context: dg.InputContext, where: str) -> FileNotFoundError:
    what = context.asset_partition_key if context.has_asset_partitions else "this asset"
    return FileNotFoundError(
        f"{context.asset_key.to_user_string()} has not been materialised for {what} (no {where}); "
        "materialise it first")


class LocalParquetIOManager(dg.ConfigurableIOManager):
    """DataFrames as Parquet under `base_dir/<asset key path>/<partition>.parquet`."""

    base_dir: str

    def _path(self, context: dg.OutputContext | dg.InputContext) -> Path:
        return Path(self.base_dir, *object_path(context).parts)

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | None) -> None:
        if obj is None:
            return
        frame = _check_frame(context, obj)
        path = self._path(context)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        try:
            frame.to_parquet(tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        path = self._path(context)
        if not path.exists():
            raise _not_materialised(context, str(path))
        return pd.read_parquet(path)


class S3ParquetIOManager(dg.ConfigurableIOManager):
    """DataFrames as Parquet objects `s3://bucket/prefix/<asset key path>/<partition>.parquet`.

    Credentials and endpoint come from boto3's own chain (`AWS_ENDPOINT_URL` for moto)."""

    bucket: str
    prefix: str = "assets"
    region: str

    def _key(self, context: dg.OutputContext | dg.InputContext) -> str:
        return str(PurePosixPath(self.prefix.strip("/"), object_path(context))) if self.prefix.strip("/") \
            else str(object_path(context))

    def _client(self):
        from trading_assets.adapters.aws.clients import client

        return client("s3", self.region)

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | None) -> None:
        if obj is None:
            return
        frame = _check_frame(context, obj)
        buffer = io.BytesIO()
        frame.to_parquet(buffer)
        key = self._key(context)
        try:
            self._client().put_object(Bucket=self.bucket, Key=key, Body=buffer.getvalue(),
                                      ContentType="application/vnd.apache.parquet")
        except Exception as exc:
            _raise_setup_error(exc, self.bucket)
            raise
        context.add_output_metadata({
            "uri": dg.MetadataValue.path(f"s3://{self.bucket}/{key}"),
            "bytes": buffer.tell(),
        })

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        key = self._key(context)
        try:
            body = self._client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as exc:
            from trading_assets.adapters.aws.clients import error_code

            if error_code(exc) in ("NoSuchKey", "404"):
                raise _not_materialised(context, f"s3://{self.bucket}/{key}") from exc
            _raise_setup_error(exc, self.bucket)
            raise
        return pd.read_parquet(io.BytesIO(body))


def _raise_setup_error(exc: Exception, bucket: str) -> None:
    """Raise a clear AwsSetupError if `exc` is a setup problem (missing bucket, no
    credentials); otherwise return, and the caller re-raises `exc` as it is."""
    from trading_assets.adapters.aws.clients import explain

    setup = explain(exc, f"S3 bucket {bucket}")
    if setup is not None:
        raise setup from exc
