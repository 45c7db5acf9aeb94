"""Parquet tables of the layout: frame rows (``data/``), episode rows (``meta/episodes/``), tasks.

Frame tables use the Arrow types lerobot's writer gets from ``datasets`` (4.x): a (1,) feature is a plain
value, a (n,) feature a ``fixed_size_list``, a 2-D feature ``Array2D`` (stored as nested lists), and the
schema carries the ``huggingface`` features metadata, so ``datasets`` reads the files without being told
the features. Every episode is one row group, as in lerobot.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .store import RecordingError

_ARROW = {"float32": pa.float32(), "float64": pa.float64(), "int16": pa.int16(), "int32": pa.int32(),
          "int64": pa.int64(), "bool": pa.bool_(), "string": pa.string()}


def frame_columns(features: dict[str, dict]) -> list[str]:
    return [k for k, f in features.items() if f["dtype"] not in ("video", "image")]


def _arrow_type(ft: dict) -> pa.DataType:
    base = _ARROW[ft["dtype"]]
    shape = tuple(ft["shape"])
    if shape == (1,) or ft["dtype"] == "string":
        return base
    if len(shape) == 1:
        return pa.list_(base, shape[0])
    if len(shape) == 2:
        return pa.list_(pa.list_(base))
    raise ValueError(f"unsupported feature shape {shape}")


def _hf_feature(ft: dict) -> dict[str, Any]:
    shape = tuple(ft["shape"])
    if shape == (1,) or ft["dtype"] == "string":
        return {"dtype": ft["dtype"], "_type": "Value"}
    if len(shape) == 1:
        return {"feature": {"dtype": ft["dtype"], "_type": "Value"}, "length": shape[0], "_type": "List"}
    return {"shape": list(shape), "dtype": ft["dtype"], "_type": f"Array{len(shape)}D"}


def frame_schema(features: dict[str, dict]) -> pa.Schema:
    cols = frame_columns(features)
    hf = {"info": {"features": {k: _hf_feature(features[k]) for k in cols}}}
    return pa.schema([pa.field(k, _arrow_type(features[k])) for k in cols],
                     metadata={b"huggingface": json.dumps(hf).encode()})


def frame_table(columns: dict[str, np.ndarray | list], features: dict[str, dict]) -> pa.Table:
    schema = frame_schema(features)
    arrays = []
    for fld in schema:
        ft = features[fld.name]
        v = columns[fld.name]
        shape = tuple(ft["shape"])
        if ft["dtype"] == "string":
            arrays.append(pa.array(list(v), type=pa.string()))
        elif shape == (1,):
            arrays.append(pa.array(np.asarray(v).reshape(-1).astype(ft["dtype"]), type=fld.type))
        elif len(shape) == 1:
            flat = np.asarray(v, dtype=ft["dtype"]).reshape(-1)
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(flat, type=_ARROW[ft["dtype"]]), shape[0]))
        else:
            a = np.asarray(v, dtype=ft["dtype"])
            arrays.append(pa.array([x.tolist() for x in a], type=fld.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def write_episodes_grouped(path: Path, table: pa.Table) -> None:
    """Write ``table`` with one row group per episode (its ``episode_index`` runs are contiguous)."""
    ep = table.column("episode_index").to_numpy()
    starts = np.concatenate(([0], np.nonzero(np.diff(ep))[0] + 1)) if len(ep) else np.zeros(0, int)
    stops = np.append(starts[1:], len(ep))
    with pq.ParquetWriter(str(path), table.schema, compression="snappy", use_dictionary=True) as w:
        for a, b in zip(starts, stops):
            w.write_table(table.slice(int(a), int(b - a)), row_group_size=int(b - a))


def read_table(path: Path, what: str) -> pa.Table:
    try:
        return pq.read_table(str(path))
    except FileNotFoundError as e:
        raise RecordingError(f"{what} {path} is missing") from e
    except Exception as e:                                           # noqa: BLE001 - ArrowInvalid and kin
        raise RecordingError(f"{what} {path} is unreadable (damaged or not Parquet): {e}") from e


def check_readable(path: Path, what: str) -> None:
    try:
        pq.read_metadata(str(path))
    except FileNotFoundError as e:
        raise RecordingError(f"{what} {path} is missing") from e
    except Exception as e:                                           # noqa: BLE001
        raise RecordingError(f"{what} {path} is unreadable (damaged or not Parquet): {e}") from e


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def episodes_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist([{k: _jsonable(v) for k, v in r.items()} for r in rows])


def tasks_table(tasks: Sequence[str]) -> pa.Table:
    """``meta/tasks.parquet`` as pandas writes lerobot's DataFrame: index ``task`` (the strings), column
    ``task_index``. The pandas metadata makes ``pd.read_parquet`` restore the index, as lerobot expects."""
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
             "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    schema = pa.schema([pa.field("task_index", pa.int64()), pa.field("task", pa.string())],
                       metadata={b"pandas": json.dumps(pandas_meta).encode()})
    return pa.Table.from_arrays([pa.array(range(len(tasks)), pa.int64()), pa.array(list(tasks), pa.string())],
                                schema=schema)


def read_tasks(path: Path) -> list[str]:
    t = read_table(path, "the task table")
    if "task" not in t.column_names or "task_index" not in t.column_names:
        raise RecordingError(f"the task table {path} has no task/task_index columns")
    pairs = sorted(zip(t.column("task_index").to_pylist(), t.column("task").to_pylist()))
    if [i for i, _ in pairs] != list(range(len(pairs))):
        raise RecordingError(f"the task table {path} does not number its tasks 0..{len(pairs) - 1}")
    return [s for _, s in pairs]
