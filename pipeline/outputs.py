"""A finished output read back: ``{output}/metadata/`` and ``{output}/features/`` as pyarrow
Tables, one row per track and stem with that stem's and its track's features (``read_output``)."""
from __future__ import annotations

import dataclasses

import pyarrow as pa
import pyarrow.parquet as pq

from stembeam.transforms import storage
from stembeam.transforms.records import METADATA_SCHEMA

# Feature columns named like a metadata column get these suffixes in the joined table.
SOURCE_SUFFIX = "_features"
TRACK_SUFFIX = "_track_features"


@dataclasses.dataclass
class OutputTables:
    """An output's tables as written: ``metadata`` (a row per track and stem, a row per failed
    track; None for a ``stembeam features`` output), and when features were computed
    ``sources`` (a row per track and source: each stem and the ``mixture``), ``tracks`` (a row
    per track) and ``frames`` (frame-level series)."""

    metadata: pa.Table | None
    sources: pa.Table | None = None
    tracks: pa.Table | None = None
    frames: pa.Table | None = None

    def stems(self) -> pa.Table:
        """A row per track and stem (``metadata``; with features also one per track for its
        ``mixture``, ``stem`` "mixture", whose metadata columns are null) with that source's
        ``sources`` features and its track's ``tracks`` features (nulls where there are none,
        e.g. failed tracks). Feature columns that share a metadata column's name are suffixed
        ``_features`` and ``_track_features``."""
        rows = self._rows()
        if self.sources is not None:
            rows = _left_join(rows, ("track_id", "stem"), self.sources, ("track_id", "source"), SOURCE_SUFFIX)
        if self.tracks is not None:
            rows = _left_join(rows, ("track_id",), self.tracks, ("track_id",), TRACK_SUFFIX)
        return rows

    def _rows(self) -> pa.Table:
        metadata = self.metadata if self.metadata is not None else METADATA_SCHEMA.empty_table()
        if self.sources is None:
            return metadata
        listed = set(zip(metadata.column("track_id").to_pylist(), metadata.column("stem").to_pylist()))
        extra = [row for row in self.sources.select(["track_id", "source"]).to_pylist() if (row["track_id"], row["source"]) not in listed]
        if not extra:
            return metadata
        added = pa.Table.from_pylist([{"track_id": row["track_id"], "stem": row["source"]} for row in extra], schema=metadata.schema)
        return pa.concat_tables([metadata, added])


def read_tables(uri: str, frames: bool = True) -> OutputTables:
    """The tables of the output folder ``uri`` (local or any Beam filesystem, e.g. gs://) of
    ``stembeam pipeline`` (with or without ``--features``) or ``stembeam features``; without
    ``frames``, not the frame series (``table_batches`` reads them piece by piece).

    Raises FileNotFoundError naming the folder when it holds neither ``metadata/tracks-*.parquet``
    nor ``features/sources-*.parquet``."""
    metadata = _read(storage.join(uri, "metadata"), "tracks")
    features = storage.join(uri, "features")
    names = ("sources", "tracks", "frames") if frames else ("sources", "tracks")
    tables = OutputTables(metadata, *(_read(features, name) for name in names))
    if metadata is None and tables.sources is None:
        raise FileNotFoundError(f"{uri}: no metadata/tracks-*.parquet and no features/sources-*.parquet (not a finished stembeam output)")
    return tables


def read_output(uri: str, to_pandas: bool = False):
    """The output ``uri`` of ``stembeam pipeline`` (with or without ``--features``) or of
    ``stembeam features`` as one table: a row per track and stem with the stem's metadata and
    features and its track's features, plus a ``mixture`` row per track when features were
    computed (OutputTables.stems); a failed track is one row with ``status`` ``error``. A
    ``pandas.DataFrame`` with ``to_pandas``. ``read_tables`` gives the tables one by one."""
    table = read_tables(uri).stems()
    return table.to_pandas() if to_pandas else table


def table_batches(uri: str, name: str, columns=None, batch_rows: int = 256):
    """Record batches of the feature table ``name`` (``sources``, ``tracks`` or ``frames``) of the
    output ``uri``, file by file and row group by row group (``columns``: only these, where the
    file has them): a table larger than memory read once. Nothing when there is no such table."""
    for file in storage.list_matching(storage.join(uri, "features"), f"{name}-*.parquet"):
        with storage.local_copy(file) as path, pq.ParquetFile(path) as table:
            present = None if columns is None else [c for c in columns if c in table.schema_arrow.names]
            yield from table.iter_batches(batch_size=batch_rows, columns=present)


def _read(folder: str, name: str) -> pa.Table | None:
    files = storage.list_matching(folder, f"{name}-*.parquet")
    if not files:
        return None
    return pa.concat_tables([storage.read_parquet(uri) for uri in files], promote_options="default")


def _left_join(left: pa.Table, left_keys: tuple, right: pa.Table, right_keys: tuple, suffix: str) -> pa.Table:
    # pyarrow's hash join refuses list columns (mfcc_mean, beat_times_s, ...): rows are taken
    # by index instead, a null index giving a null row.
    positions = {key: row for row, key in enumerate(zip(*(right.column(name).to_pylist() for name in right_keys)))}
    index = pa.array([positions.get(key) for key in zip(*(left.column(name).to_pylist() for name in left_keys))], pa.int64())
    taken = right.drop_columns(list(right_keys)).take(index)
    for name, column in zip(taken.column_names, taken.columns):
        left = left.append_column(name + suffix if name in left.column_names else name, column)
    return left
