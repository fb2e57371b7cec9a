"""A finished output read back: ``{output}/metadata/`` and ``{output}/features/`` as pyarrow
Tables, one row per track and stem with that stem's and its track's features (``read_output``)."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq

from stembeam.transforms import storage
from stembeam.transforms.records import METADATA_SCHEMA

# A column of the joined table (read_output) that is in more than one of the tables keeps its plain
# name for the metadata's; the sources table's copy ends in _source, the tracks table's in _track.
SUFFIXES = {"sources": "_source", "tracks": "_track"}
# read_output(legacy_names=True): the names of the release before (a feature column named like a
# metadata column got _features, a track feature column named like any other _track_features).
LEGACY_SUFFIXES = {"sources": "_features", "tracks": "_track_features"}
# Metadata columns a mixture row takes from its track's stem rows (the rest are a stem file's own).
TRACK_COLUMNS = ("source_uri", "model", "codec", "duration_s", "status", "error", "pipeline_version", "precision", "F",
                 "decode_warnings", "claimed_duration_s", "created_at")


@dataclasses.dataclass
class OutputTables(Mapping):
    """An output's tables as written, a read-only mapping by name.

    ``tables["sources"]``; ``list(tables)``: the names of the tables the output has.

    Attributes:
        metadata: a row per track and stem, a row per failed track (METADATA_SCHEMA); None for a
            ``stembeam features`` output.
        sources: with features, a row per track and source (each stem and the ``mixture``).
        tracks: with features, a row per track.
        frames: with features, the frame-level series.
    """

    metadata: Optional[pa.Table]
    sources: Optional[pa.Table] = None
    tracks: Optional[pa.Table] = None
    frames: Optional[pa.Table] = None

    def __getitem__(self, name: str) -> pa.Table:
        table = getattr(self, name, None) if name in _TABLES else None
        if table is None:
            raise KeyError(f"{name!r}: this output has the tables {', '.join(self) or 'none'}")
        return table

    def __iter__(self):
        return (name for name in _TABLES if getattr(self, name) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def to_pandas(self) -> dict:
        """The tables as pandas.

        Returns:
            ``{name: pandas.DataFrame}``, integer and boolean columns as pandas' nullable types.
        """
        return {name: as_pandas(table) for name, table in self.items()}

    def stems(self, legacy_names: bool = False) -> pa.Table:
        """The joined table of ``read_output`` (see there for its rows and column names).

        Args:
            legacy_names: the column names of the release before (``_features`` / ``_track_features``).
        Returns:
            pyarrow.Table: a row per track and source.
        """
        suffixes = LEGACY_SUFFIXES if legacy_names else SUFFIXES
        rows = self._rows()
        if self.sources is not None:
            clash = _clashes(self.sources, rows, self.tracks, legacy_names)
            rows = _left_join(rows, ("track_id", "stem"), self.sources, ("track_id", "source"), suffixes["sources"], clash)
        if self.tracks is not None:
            clash = _clashes(self.tracks, rows if legacy_names else self.metadata_like(), self.sources, legacy_names)
            rows = _left_join(rows, ("track_id",), self.tracks, ("track_id",), suffixes["tracks"], clash)
        return _sorted(rows)

    def metadata_like(self) -> pa.Table:
        """The metadata table, or an empty one of METADATA_SCHEMA when the output has none."""
        return self.metadata if self.metadata is not None else METADATA_SCHEMA.empty_table()

    def _rows(self) -> pa.Table:
        """The metadata rows, and a ``mixture`` row per track that has features."""
        metadata = self.metadata_like()
        if self.sources is None:
            return metadata
        listed = set(zip(metadata.column("track_id").to_pylist(), metadata.column("stem").to_pylist()))
        extra = [row for row in self.sources.select(["track_id", "source", "source_uri", "status"]).to_pylist()
                 if (row["track_id"], row["source"]) not in listed]
        if not extra:
            return metadata
        by_track = {}
        for row in metadata.to_pylist():
            if row["status"] == "ok" or row["track_id"] not in by_track:
                by_track.setdefault(row["track_id"], row)
        added = [_mixture_row(row, by_track.get(row["track_id"])) for row in extra]
        return pa.concat_tables([metadata, pa.Table.from_pylist(added, schema=metadata.schema)])


_TABLES = ("metadata", "sources", "tracks", "frames")


def _mixture_row(features: dict, track: Optional[dict]) -> dict:
    """A source that is no stem (the ``mixture``): its track's separation columns (status: the
    track's, or for a features-only output the features' own), its file as ``stem_uri``."""
    row = {"track_id": features["track_id"], "stem": features["source"], "stem_uri": features["source_uri"]}
    if track is not None:
        row.update({name: track[name] for name in TRACK_COLUMNS})
    else:
        row.update(source_uri=features["source_uri"], status=features["status"])
    return row


def _clashes(table: pa.Table, joined: pa.Table, other: Optional[pa.Table], legacy: bool) -> set:
    """The columns of ``table`` (a features table) that get its suffix in the joined table."""
    names = set(table.column_names)
    if legacy:
        return names & set(joined.column_names)
    return names & (set(METADATA_SCHEMA.names) | set(other.column_names if other is not None else ()))


def _sorted(table: pa.Table) -> pa.Table:
    """Rows by track, then the mixture, then the stems by name."""
    keys = list(zip(table.column("track_id").to_pylist(), table.column("stem").to_pylist()))
    order = sorted(range(len(keys)), key=lambda i: (keys[i][0] or "", keys[i][1] != "mixture", keys[i][1] or ""))
    return table.take(pa.array(order, pa.int64()))


def as_pandas(table: pa.Table):
    """``table`` as a pandas.DataFrame whose integer and boolean columns stay so where they hold nulls.

    Args:
        table: a pyarrow.Table.
    Returns:
        pandas.DataFrame (nullable Int8..Int64 and boolean columns).
    """
    import pandas as pd

    mapping = {pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype(),
               pa.bool_(): pd.BooleanDtype()}
    return table.to_pandas(types_mapper=mapping.get)


def read_tables(uri: str, frames: bool = True, to_pandas: bool = False):
    """The tables of the output folder ``uri`` (local or any Beam filesystem, e.g. gs://) of
    ``stembeam pipeline`` (with or without ``--features``) or ``stembeam features``.

    Args:
        uri: the output folder.
        frames: also the frame series (``table_batches`` reads them piece by piece).
        to_pandas: ``{name: pandas.DataFrame}`` instead of the OutputTables.
    Returns:
        OutputTables, a mapping of the tables by name (``metadata``, ``sources``, ``tracks``,
        ``frames``; those the output has).
    Raises:
        FileNotFoundError naming the folder when it holds neither ``metadata/tracks-*.parquet``
        nor ``features/sources-*.parquet``.
    """
    metadata = _read(storage.join(uri, "metadata"), "tracks")
    features = storage.join(uri, "features")
    names = ("sources", "tracks", "frames") if frames else ("sources", "tracks")
    tables = OutputTables(metadata, *(_read(features, name) for name in names))
    if metadata is None and tables.sources is None:
        raise FileNotFoundError(f"{uri}: no metadata/tracks-*.parquet and no features/sources-*.parquet (not a finished stembeam output)")
    return tables.to_pandas() if to_pandas else tables


def read_output(uri: str, to_pandas: bool = False, legacy_names: bool = False):
    """The output ``uri`` of ``stembeam pipeline`` (with or without ``--features``) or of
    ``stembeam features`` as one table, a row per track and source:

    - each stem's metadata row (a failed track: one row with ``status`` ``error``), and with
      features a ``mixture`` row per track (``stem`` "mixture", ``stem_uri`` the mixture's file,
      the track's own columns: status, model, source, times...);
    - each source's features (the ``sources`` table's columns) and its track's features (the
      ``tracks`` table's columns);
    - a name that two tables share is the metadata's plain, the sources table's with ``_source``,
      the tracks table's with ``_track`` (``status_source``, ``feature_version_track``...);
    - rows sorted by track, its mixture first, then its stems by name.

    Args:
        uri: the output folder (local or any Beam filesystem, e.g. gs://).
        to_pandas: a pandas.DataFrame, integer columns as pandas' nullable integers.
        legacy_names: the column names of the release before (``_features`` /
            ``_track_features``), for one release.
    Returns:
        pyarrow.Table (or pandas.DataFrame with ``to_pandas``).
    Raises:
        FileNotFoundError: ``uri`` is not a finished stembeam output (see read_tables).
    """
    table = read_tables(uri, frames=False).stems(legacy_names)
    return as_pandas(table) if to_pandas else table


def table_batches(uri: str, name: str, columns=None, batch_rows: int = 256):
    """Record batches of one feature table, file by file and row group by row group: a table larger
    than memory read once.

    Args:
        uri: the output folder.
        name: ``sources``, ``tracks`` or ``frames``.
        columns: only these columns (where the file has them); None: all.
        batch_rows: rows per batch at most.
    Returns:
        An iterator of pyarrow.RecordBatch; nothing when the output has no such table.
    """
    for file in storage.list_matching(storage.join(uri, "features"), f"{name}-*.parquet"):
        with storage.local_copy(file) as path, pq.ParquetFile(path) as table:
            present = None if columns is None else [c for c in columns if c in table.schema_arrow.names]
            yield from table.iter_batches(batch_size=batch_rows, columns=present)


def _read(folder: str, name: str) -> pa.Table | None:
    files = storage.list_matching(folder, f"{name}-*.parquet")
    if not files:
        return None
    return pa.concat_tables([storage.read_parquet(uri) for uri in files], promote_options="default")


def _left_join(left: pa.Table, left_keys: tuple, right: pa.Table, right_keys: tuple, suffix: str, clash: set) -> pa.Table:
    """``left`` with ``right``'s columns of the matching row (nulls where none), those in ``clash``
    suffixed. pyarrow's hash join refuses list columns (mfcc_mean, beat_times_s, ...): rows are
    taken by index instead, a null index giving a null row."""
    positions = {key: row for row, key in enumerate(zip(*(right.column(name).to_pylist() for name in right_keys)))}
    index = pa.array([positions.get(key) for key in zip(*(left.column(name).to_pylist() for name in left_keys))], pa.int64())
    taken = right.drop_columns(list(right_keys)).take(index)
    for name, column in zip(taken.column_names, taken.columns):
        left = left.append_column(name + suffix if name in clash else name, column)
    return left
