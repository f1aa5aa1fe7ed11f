"""The code location: everything under `defs/`, loaded the current (1.13) way, with each
asset linked to its source (the UI's "code references" open the file at the asset)."""

import warnings
from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    loaded = dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
    with warnings.catch_warnings():
        # code references are a beta API; its warning would print once per asset on every load
        warnings.simplefilter("ignore", dg.BetaWarning)
        assets = dg.with_source_code_references(list(loaded.assets or []))
    return dg.Definitions(
        assets=assets, asset_checks=loaded.asset_checks, schedules=loaded.schedules, sensors=loaded.sensors,
        jobs=loaded.jobs, resources=loaded.resources, executor=loaded.executor, loggers=loaded.loggers,
        metadata=loaded.metadata,
    )
