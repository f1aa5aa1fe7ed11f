"""The floor a tick is measured against: a trivial job with the EMA flow's shape (six
chained assets, two checks, one per-tick partition) and no work, on a *static*
partitions definition, run the same ways the flow is run.

    python benchmarks/_floor.py KEY [KEY ...]   # 13 ticks in process on DAGSTER_HOME (make run's floor)
"""

import sys

import dagster as dg

NAMES = ["bars", "indicators", "signals", "orders", "transactions", "equity"]


def _noop(name: str, checked: bool):
    def compute(context: dg.AssetExecutionContext):
        yield dg.Output(None, metadata={"work_ms": 0.0})
        if checked:
            yield dg.AssetCheckResult(check_name="ok", asset_key=dg.AssetKey(["floor", name]), passed=True)

    return compute


def floor_assets(keys: list[str]) -> list[dg.AssetsDefinition]:
    """Six chained no-op assets (first and last with a check) over static partitions `keys`."""
    partitions = dg.StaticPartitionsDefinition(keys)
    out: list[dg.AssetsDefinition] = []
    for i, name in enumerate(NAMES):
        deps = [out[-1]] if out else []
        checks = [dg.AssetCheckSpec("ok", asset=dg.AssetKey(["floor", name]))] if i in (0, 5) else []

        out.append(dg.asset(name=name, key_prefix=["floor"], partitions_def=partitions, deps=deps,
                            check_specs=checks, io_manager_key="mem")(_noop(name, bool(checks))))
    return out


def floor_tick_wall(keys: list[str]) -> float:
    """Median wall of a floor tick run like the flows' benchmarks run theirs
    (dagster.materialize, ephemeral instance, quiet logs), the first key a warm-up."""
    import statistics
    import time

    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    assets = floor_assets(keys)
    walls = []
    for i, key in enumerate(keys):
        t0 = time.perf_counter()
        dg.materialize(assets, resources={"mem": dg.InMemoryIOManager()}, partition_key=key, run_config=quiet)
        if i > 0:
            walls.append(time.perf_counter() - t0)
    return statistics.median(walls)


def floor_job(keys: list[str]) -> dg.JobDefinition:
    defs = dg.Definitions(assets=floor_assets(keys), resources={"mem": dg.InMemoryIOManager()},
                          jobs=[dg.define_asset_job("floor_job", executor_def=dg.in_process_executor)])
    return defs.resolve_job_def("floor_job")


def main(keys: list[str]) -> None:
    job = floor_job(keys)
    instance = dg.DagsterInstance.get()
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    for key in keys:
        assert job.execute_in_process(partition_key=key, instance=instance, run_config=quiet).success


if __name__ == "__main__":
    main(sys.argv[1:])
