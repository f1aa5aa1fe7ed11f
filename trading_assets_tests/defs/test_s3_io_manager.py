"""S3 Parquet IO manager against a real moto S3: one object per partition, overwrite,
clear errors for a partition never materialised and for a bucket that does not exist."""

import boto3
import dagster as dg
import pandas as pd
import pytest

from trading_assets.adapters.aws.clients import AwsSetupError
from trading_assets.resources.io_managers import S3ParquetIOManager

parts = dg.StaticPartitionsDefinition(["2025-11-26-10:00", "2025-11-26-10:30"])
SCALE = {"factor": 1.0}


@dg.asset(key_prefix=["ema_concentration"], partitions_def=parts)
def bars(context: dg.AssetExecutionContext) -> pd.DataFrame:
    idx = pd.DatetimeIndex(["2025-11-26 15:00", "2025-11-26 15:30"], tz="UTC", name="ts")
    return pd.DataFrame({"close": [50.0 * SCALE["factor"], 51.5], "symbol": ["TQQQ", "TQQQ"]}, index=idx)


@dg.asset(key_prefix=["ema_concentration"], partitions_def=parts)
def doubled(bars: pd.DataFrame) -> pd.DataFrame:
    return bars.assign(close=bars["close"] * 2)


def _io(aws_env, bucket=None):
    return S3ParquetIOManager(bucket=bucket or aws_env.bucket, prefix="assets", region=aws_env.region)


@pytest.fixture
def bucket(aws_env):
    boto3.client("s3").create_bucket(Bucket=aws_env.bucket)
    return aws_env.bucket


def _keys(bucket):
    return sorted(o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket).get("Contents", []))


def test_round_trip_per_partition_keeps_index_dtypes_and_tz(aws_env, bucket):
    result = dg.materialize([bars, doubled], resources={"io_manager": _io(aws_env)}, partition_key="2025-11-26-10:30")
    assert result.success
    assert _keys(bucket) == ["assets/ema_concentration/bars/2025-11-26-10:30.parquet",
                             "assets/ema_concentration/doubled/2025-11-26-10:30.parquet"]
    [mat] = [m for m in result.asset_materializations_for_node("ema_concentration__doubled")]
    assert mat.metadata["uri"].value == f"s3://{bucket}/assets/ema_concentration/doubled/2025-11-26-10:30.parquet"
    defs = dg.Definitions(assets=[bars, doubled], resources={"io_manager": _io(aws_env)})
    out = defs.load_asset_value(["ema_concentration", "doubled"], partition_key="2025-11-26-10:30")
    assert list(out["close"]) == [100.0, 103.0] and str(out.index.tz) == "UTC" and out.index.name == "ts"
    assert out["symbol"].tolist() == ["TQQQ", "TQQQ"]


def test_rematerialising_a_partition_overwrites_only_that_object(aws_env, bucket):
    io = _io(aws_env)
    dg.materialize([bars], resources={"io_manager": io}, partition_key="2025-11-26-10:00")
    dg.materialize([bars], resources={"io_manager": io}, partition_key="2025-11-26-10:30")
    SCALE["factor"] = 2.0
    try:
        dg.materialize([bars], resources={"io_manager": io}, partition_key="2025-11-26-10:00")
    finally:
        SCALE["factor"] = 1.0
    defs = dg.Definitions(assets=[bars], resources={"io_manager": io})
    def first_close(key):
        return defs.load_asset_value(["ema_concentration", "bars"], partition_key=key)["close"].iloc[0]

    assert first_close("2025-11-26-10:00") == 100.0 and first_close("2025-11-26-10:30") == 50.0
    assert len(_keys(bucket)) == 2


def test_a_partition_never_materialised_is_a_clear_error(aws_env, bucket):
    with pytest.raises(Exception, match=r"has not been materialised for 2025-11-26-10:00 \(no s3://"):
        dg.materialize([bars, doubled], resources={"io_manager": _io(aws_env)},
                       partition_key="2025-11-26-10:00", selection=[doubled])


def test_a_missing_bucket_names_the_bucket_and_the_bootstrap_command(aws_env):
    with pytest.raises(AwsSetupError, match=r"S3 bucket nope-bucket does not exist: create it with `python -m "
                                            r"trading_assets aws-bootstrap`"):
        dg.materialize([bars], resources={"io_manager": _io(aws_env, bucket="nope-bucket")},
                       partition_key="2025-11-26-10:00")
