"""The parquet tables of a LeRobot v3 dataset, written and read with pyarrow.

``meta/tasks.parquet`` is what pandas writes for a frame indexed by the task strings (LeRobot reads
it with ``pandas.read_parquet`` and looks tasks up by that index), so it carries the pandas schema
metadata naming ``task`` as the index column. Vector features are fixed-size lists, scalars plain
columns, as the ``datasets`` library stores LeRobot's features.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from robokit.errors import DataError
from robokit.lerobot import layout as L


def to_arrow(values: np.ndarray, pa: Any) -> Any:
    """A numpy column as an arrow array: (N, D) -> fixed-size lists of D, (N,) -> plain."""
    values = np.ascontiguousarray(values)
    if values.ndim == 2:
        return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])
    return pa.array(values)


class DataFileWriter:
    """``data/chunk-*/file-*.parquet``: episodes appended in order, a new file once one passes
    LeRobot's data file size."""

    def __init__(self, root: Path, pq: Any) -> None:
        self.root, self.pq, self.pa = root, pq, L.require("pyarrow")
        self.file_number = 0
        self._writer: Any = None
        self._path: Path | None = None

    def write(self, columns: dict[str, np.ndarray]) -> dict[str, int]:
        """Append one episode's columns; returns its ``data/chunk_index`` and ``data/file_index``."""
        if self._writer is not None and self._path is not None and \
                self._path.stat().st_size >= L.DATA_FILE_MB * 1024 * 1024:
            self.close()
            self.file_number += 1
        table = self.pa.table({name: to_arrow(values, self.pa) for name, values in columns.items()})
        if self._writer is None:
            self._path = self.root / L.DATA_PATH.format(**L.chunk_file(self.file_number))
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = self.pq.ParquetWriter(str(self._path), table.schema, compression="snappy")
        self._writer.write_table(table)
        where = L.chunk_file(self.file_number)
        return {"data/chunk_index": where["chunk_index"], "data/file_index": where["file_index"]}

    def close(self) -> None:
        """Finish the current file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def write_tasks_table(path: Path, tasks: list[str], pq: Any) -> None:
    """``meta/tasks.parquet``: ``task_index`` per task string, the strings being pandas' index."""
    pa = L.require("pyarrow")
    table = pa.table({"task_index": pa.array(np.arange(len(tasks), dtype=np.int64)),
                      "task": pa.array(tasks, pa.string())})
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
    table = table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, str(path))


def write_episodes_table(path: Path, rows: list[dict[str, Any]], pq: Any) -> None:
    """``meta/episodes/chunk-000/file-000.parquet``: one row per episode."""
    pa = L.require("pyarrow")
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), str(path))


# -- reading ---------------------------------------------------------------------------------------
def _read(read: Callable[..., Any], path: Path, **kwargs: Any) -> Any:
    """``read(path, **kwargs)``, with a damaged or foreign file turned into one DataError line naming it."""
    pa = L.require("pyarrow")
    try:
        return read(str(path), **kwargs)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None


def _files(root: Path, folder: str) -> list[Path]:
    found = sorted((root / folder).glob("chunk-*/file-*.parquet"))
    if not found:
        raise DataError(f"{root}: no {folder}/chunk-*/file-*.parquet files")
    return found


def read_tasks(root: Path, pq: Any) -> dict[int, str]:
    """task_index -> task string from ``meta/tasks.parquet`` (index column or plain column alike)."""
    path = root / L.TASKS_PATH
    if not path.is_file():
        raise DataError(f"{root}: no {L.TASKS_PATH}")
    table = _read(pq.read_table, path)
    names = table.column_names
    text = next((n for n in ("task", "__index_level_0__") if n in names), None)
    if "task_index" not in names or text is None:
        raise DataError(f"{path}: expected columns 'task_index' and 'task', found {names}")
    return {int(i): str(t) for i, t in zip(table.column("task_index").to_pylist(),
                                           table.column(text).to_pylist(), strict=True)}


def read_episodes(root: Path, pq: Any) -> list[dict[str, Any]]:
    """Rows of ``meta/episodes/*/*.parquet`` (without the per-episode stats), by episode index."""
    rows: list[dict[str, Any]] = []
    for path in _files(root, L.EPISODES_DIR):
        keep = [n for n in _read(pq.read_schema, path).names if not n.startswith("stats/")]
        rows += _read(pq.read_table, path, columns=keep).to_pylist()
    for row in rows:
        for key in (L.EPISODE_INDEX, "length"):
            if not isinstance(row.get(key), int):
                raise DataError(f"{root}/{L.EPISODES_DIR}: an episode row has no integer {key!r}")
    return sorted(rows, key=lambda r: r[L.EPISODE_INDEX])


def read_data(root: Path, columns: list[str], pq: Any) -> dict[str, Any]:
    """The named columns of every ``data/*/*.parquet`` file, concatenated, as arrow chunked arrays."""
    pa = L.require("pyarrow")
    tables = []
    for path in _files(root, "data"):
        names = _read(pq.read_schema, path).names
        missing = [c for c in columns if c not in names]
        if missing:
            raise DataError(f"{path}: no column {missing[0]!r} (it has {', '.join(names)})")
        tables.append(_read(pq.read_table, path, columns=columns))
    table = pa.concat_tables(tables)
    return {name: table.column(name) for name in columns}


def column_array(column: Any, name: str, width: int | None = None) -> np.ndarray:
    """An arrow column as numpy: a list column -> (N, width), a scalar column -> (N,)."""
    pa = L.require("pyarrow")
    array = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    if pa.types.is_list(array.type) or pa.types.is_fixed_size_list(array.type) \
            or pa.types.is_large_list(array.type):
        flat = np.asarray(array.flatten().to_numpy(zero_copy_only=False))
        if width is None or flat.size != len(array) * width:
            raise DataError(f"column {name!r}: rows are not all {width} values long")
        return flat.reshape(len(array), width)
    return np.asarray(array.to_numpy(zero_copy_only=False))
