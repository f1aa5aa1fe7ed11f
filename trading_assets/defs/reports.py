"""Metadata that people would rather look at: small tables (markdown or native)."""

from __future__ import annotations

import dagster as dg
import pandas as pd


def frame_markdown(frame: pd.DataFrame, max_rows: int = 20, floatfmt: str = ".4f") -> str:
    """A small frame as a markdown table (first `max_rows` rows)."""
    shown = frame.head(max_rows)
    cols = [str(c) for c in [shown.index.name or "", *shown.columns]]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, row in shown.iterrows():
        cells = [str(idx)] + [format(v, floatfmt) if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    if len(frame) > max_rows:
        lines.append(f"\n… {len(frame) - max_rows} more rows")
    return "\n".join(lines)


def _cell(value: object, money: bool) -> object:
    """A JSON-safe table cell: NaN/None become None, money is rounded to cents."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if isinstance(value, float):
        return round(value, 2) if money else value
    if isinstance(value, (int, bool, str)):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return _cell(value.item(), money)
    return str(value)


_TABLE_TYPES = {"f": "float", "i": "int", "u": "int", "b": "bool"}


def frame_table(frame: pd.DataFrame, money: tuple[str, ...] = (), max_rows: int = 50) -> dg.TableMetadataValue:
    """A frame as Dagster's native table metadata (typed columns, sortable in the UI).

    `money` columns are rounded to cents; only the last `max_rows` rows are sent (say so
    next to it with the row count)."""
    shown = frame.tail(max_rows)
    schema = dg.TableSchema(columns=[
        dg.TableColumn(str(c), _TABLE_TYPES.get(frame[c].dtype.kind, "string")) for c in frame.columns])
    records = [dg.TableRecord({str(c): _cell(v, c in money) for c, v in row.items()})
               for row in shown.to_dict("records")]
    return dg.MetadataValue.table(records=records, schema=schema)
