"""After a corpus job: the output's tables describe this run and nothing older (no metadata shard
of an earlier layout, no stale feature table, no feature row outliving its stems)."""
from __future__ import annotations

import os
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq

from stembeam.model.features.schema import FRAMES_SCHEMA, SOURCES_SCHEMA, TRACKS_SCHEMA
from stembeam.transforms import storage
from stembeam.transforms.features import MIXTURE, STEMS_CREATED_AT, TABLES, features_root, latest_stems, plot_uri
from stembeam.transforms.records import Track
from stembeam.transforms.write import METADATA_FILE


def drop_stale_metadata(output: str) -> None:
    """metadata/ describes the latest run over the whole manifest. The new table replaces the
    old one when it is written; other files (an earlier layout's shards) are dropped after."""
    written = storage.join(output, "metadata", METADATA_FILE)
    storage.delete([p for p in storage.list_matching(storage.join(output, "metadata"), "tracks*.parquet") if p != written])


def drop_stale_tables(output: str, wanted) -> None:
    """The tables after a corpus run with the feature options ``wanted`` (FeatureOptions)."""
    drop_stale_metadata(output)
    if wanted.features:
        drop_stale_feature_tables(output, wanted.feature_frames)
    # Every run, --features or not: no feature row may outlive the stems it describes.
    drop_stale_feature_rows(output)


def drop_stale_feature_tables(output: str, frames: bool) -> None:
    """The tables describe the latest run over every track. Each new table replaces the old one
    under the same name when it is written (never before, so a failed job keeps the old ones);
    after the job, other files (the frames table of a run without ``--feature_frames``, shards
    of another layout) are dropped."""
    root = features_root(output)
    kept = {storage.join(root, f"{name}-00000-of-00001.parquet") for name in TABLES if frames or name != "frames"}
    storage.delete([p for name in TABLES for p in storage.list_matching(root, f"{name}-*.parquet") if p not in kept])


def current_stems(output: str) -> Optional[dict]:
    """latest_stems of ``{output}/metadata/`` (the stems the latest run lists), None without a metadata table."""

    files = storage.list_matching(storage.join(output, "metadata"), "*.parquet")
    if not files:
        return None
    rows = []
    for uri in files:
        with storage.local_copy(uri) as path:
            rows += pq.read_table(path, columns=["track_id", "stem", "status", "created_at"]).to_pylist()
    return latest_stems(rows)


def _without_stale_rows(uri: str, name: str, current: dict, stale: dict, kept: set) -> int:
    """Rewrite the table at ``uri`` without the rows whose ``stems_created_at`` is not their
    track's identity in ``current`` (None both for a track without stems in the metadata and for
    a row without an identity); a table of an older layout (no such column) loses every row.
    The new table is written aside and replaces the old one whole (storage.move); nothing is
    written when every row is current. ``stale`` gets ``{track_id: mixture uri}`` of what was
    dropped, ``kept`` the track ids kept. Streams row group by row group; returns the number of rows dropped."""
    import tempfile

    import pyarrow.parquet as pq

    schema = {"sources": SOURCES_SCHEMA, "tracks": TRACKS_SCHEMA, "frames": FRAMES_SCHEMA}[name]
    fd, local = tempfile.mkstemp(suffix=".parquet")
    os.close(fd)
    try:
        with storage.local_copy(uri) as path, pq.ParquetFile(path) as table:
            stamped = STEMS_CREATED_AT in table.schema_arrow.names
            columns = ["track_id"] + ([STEMS_CREATED_AT] if stamped else []) + (["source", "source_uri"] if name == "sources" else [])
            keys = table.read(columns=columns).to_pylist()
            keep = [stamped and current.get(row["track_id"]) == row[STEMS_CREATED_AT] for row in keys]
            for row, current_row in zip(keys, keep):
                if current_row:
                    kept.add(row["track_id"])
                    continue
                stale.setdefault(row["track_id"], None)
                if row.get("source") == MIXTURE:
                    stale[row["track_id"]] = row["source_uri"]
            dropped = keep.count(False)
            if not dropped:
                return 0
            if not stamped:
                pq.write_table(schema.empty_table(), local)
            else:
                with pq.ParquetWriter(local, table.schema_arrow) as writer:
                    first = 0
                    for group in range(table.num_row_groups):
                        piece = table.read_row_group(group)
                        writer.write_table(piece.filter(pa.array(keep[first : first + piece.num_rows], pa.bool_())))
                        first += piece.num_rows
        storage.move(local, uri)
    finally:
        if os.path.exists(local):
            os.unlink(local)
    return dropped


def drop_stale_feature_rows(output: str) -> dict:
    """After every pipeline run (with or without ``--features``), under the output's lock: drop
    from each feature table the rows computed from other stems than the ones ``metadata/`` now
    lists (their ``stems_created_at`` is not the track's latest stem ``created_at``: the track was
    separated again, by this run or by a killed one whose markers this run reused, or it has no
    stems any more), and the plots of those tracks. A reader joining metadata to features thus
    never gets features of other stems. ``{table: rows dropped}``; nothing without a metadata table."""
    current = current_stems(output)
    if current is None:
        return {}
    root, dropped, stale, kept = features_root(output), {}, {}, set()
    for name in TABLES:
        for uri in storage.list_matching(root, f"{name}-*.parquet"):
            dropped[name] = dropped.get(name, 0) + _without_stale_rows(uri, name, current, stale, kept)
    # A dropped track's plot shows those stems too (its folder named as the job that drew it
    # named it: from the track id and the mixture's uri).
    storage.delete([plot_uri(output, Track(track_id, uri or "").folder_name) for track_id, uri in stale.items() if track_id not in kept])
    return dropped
