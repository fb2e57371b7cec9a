"""Beam file sinks written aside, then moved into place file by file.

A Beam file sink (WriteToParquet, WriteToTFRecord...) globs ``{prefix}*`` while it finalizes and
deletes what matches; it also leaves ``beam-temp-*`` folders next to its files when the job is
killed. So no sink is ever given a prefix under the output itself: it writes under a staging
folder (storage.staging_folder: ``{output}/_work/tables/<run>/``, or a private temporary
folder when the output's path holds glob characters), and each file it finishes is moved,
literally, into its final folder. A table or record shard is thus replaced only by a whole new
one, when it is written, and a killed job's pieces stay under ``_work/`` (swept by the next run).
"""
from __future__ import annotations

import apache_beam as beam

from stembeam.transforms import storage


def move_into(uri: str, folder: str) -> str:
    """Move the finished file ``uri`` into ``folder`` under its own name; its new uri."""
    target = storage.join(folder, uri.rstrip("/").rsplit("/", 1)[-1])
    storage.move(uri, target)
    return target


class WriteStaged(beam.PTransform):
    """Elements -> ``sink(prefix)`` under ``staging`` (the sink's prefix is ``{staging}/{name}``),
    then every file it wrote moved into ``folder``; outputs the final uris.

    Args:
        sink: ``sink(prefix)`` -> a PTransform writing files and outputting their uris.
        staging: the staging folder (storage.staging_folder); no glob characters.
        folder: where the finished files go.
        name: the files' name prefix.
    Raises:
        ValueError: ``staging`` has glob characters.
    """

    def __init__(self, sink, staging: str, folder: str, name: str):
        super().__init__()
        if storage.has_glob(staging):
            raise ValueError(f"{staging}: a Beam sink's prefix must have no glob characters")
        self._sink, self._staging, self._folder, self._name = sink, staging, folder, name

    def expand(self, pcoll):
        written = pcoll | "Write" >> self._sink(storage.join(self._staging, self._name))
        return written | "MoveIntoPlace" >> beam.Map(move_into, self._folder)


def parquet_sink(schema):
    """The sink of a one-file Parquet table.

    Args:
        schema: its pyarrow.Schema.
    Returns:
        ``sink(prefix)``, a PTransform writing ``{prefix}-00000-of-00001.parquet``.
    """
    return lambda prefix: beam.io.WriteToParquet(prefix, schema=schema, file_name_suffix=".parquet", num_shards=1, shard_name_template="-SSSSS-of-NNNNN")


class WriteTable(WriteStaged):
    """Rows -> the Parquet table ``{folder}/{name}-00000-of-00001.parquet`` of ``schema``, written
    under ``staging`` and moved into place whole (every table stembeam writes).

    Args:
        schema: the table's pyarrow.Schema.
        staging, folder, name: as WriteStaged.
    """

    def __init__(self, schema, staging: str, folder: str, name: str):
        super().__init__(parquet_sink(schema), staging, folder, name)
