"""MIR features on Beam: AnalyseTracks (one track's sources -> rows of the three feature tables,
resumable through a per-track marker), WriteFeatureTables, and the corpus job's features stage."""
from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Optional

import apache_beam as beam
from apache_beam.metrics import Metrics

from stembeam.model.features import FEATURE_VERSION
from stembeam.model.features.schema import FRAMES_SCHEMA, SOURCE_COLUMNS, SOURCES_SCHEMA, TRACK_COLUMNS, TRACKS_SCHEMA
from stembeam.transforms import storage
from stembeam.transforms.records import Track
from stembeam.transforms.staged import WriteStaged

TRACKS, FRAMES = "tracks", "frames"
MIXTURE = "mixture"
CORPUS_MARKER = ".features.json"  # beside the stems marker: {output}/stems/{track folder}/.features.json
TABLES = ("sources", "tracks", "frames")


STEMS_CREATED_AT = "stems_created_at"  # every feature row: the identity of the stems it was computed from


@dataclasses.dataclass(frozen=True)
class FeatureTrack:
    """One track to analyse: ``sources`` ``((name, SourceInput), ...)``, ``folder`` its safe
    file name (for the plot), ``marker`` the uri of its stored result, ``stems_created_at`` the
    identity of its stems (latest_stems: ISO time of the newest ``created_at`` of its ok metadata
    rows; None for stems that are not a pipeline output's), stamped on every row it gives."""

    track_id: str
    folder: str
    sources: tuple
    marker: str
    stems_created_at: Optional[str] = None


def latest_stems(rows) -> dict:
    """``{track_id: datetime}``: the identity of each track's stems in metadata rows, the latest
    ``created_at`` of its ``ok`` stem rows. Every (re)write of a track's stems gives it new rows
    with new times, so rows computed from other stems carry another identity."""
    latest = {}
    for row in rows:
        if row.get("status") == "ok" and row.get("stem") and row.get("created_at") is not None:
            track_id = row["track_id"]
            latest[track_id] = max(latest.get(track_id, row["created_at"]), row["created_at"])
    return latest


def features_root(output: str) -> str:
    return storage.join(output, "features")


def plot_uri(output: str, folder: str) -> str:
    return storage.join(features_root(output), "plots", f"{folder}.png")


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
    import pyarrow.parquet as pq

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
    import os
    import tempfile

    import pyarrow as pa
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


def error_rows(track_id: str, sources: dict, reason: str) -> tuple:
    """``(source rows, track row)`` of a track that could not be analysed at all."""
    source_rows = []
    for name, uri in sorted(sources.items()):
        row = dict.fromkeys(SOURCE_COLUMNS)
        row.update(track_id=track_id, source=name, source_uri=uri, status="error", error=reason, feature_version=FEATURE_VERSION)
        source_rows.append(row)
    track = dict.fromkeys(TRACK_COLUMNS)
    track.update(track_id=track_id, beat_times_s=[], status="error", error=reason, feature_version=FEATURE_VERSION)
    return source_rows, track


def _file_identity(uri: str):
    """``[size, mtime]`` of a file (local or remote), None when it cannot be listed."""
    try:
        return list(storage.stat(uri))  # that very file: its name is never a pattern
    except Exception:  # noqa: BLE001 - a missing file is an identity too: it is recomputed once it appears
        return None


class AnalyseTracks(beam.DoFn):
    """FeatureTrack -> source rows (main), ``tracks`` rows, ``frames`` rows.

    A track whose marker holds the same key (feature version, options, and each source's uri,
    span, size and mtime) is not recomputed: its stored rows are emitted. Otherwise the track is
    analysed (sources read through Beam FileSystems, so gs:// works), its plot written, and
    its rows stored in the marker (atomically) before they are emitted.
    """

    def __init__(self, output: str, vocal_pitch: bool = False, frames: bool = False, plots: bool = False):
        self._output, self._pitch, self._frames, self._plots = output, vocal_pitch, frames, plots
        self._done = Metrics.counter("stembeam", "features_tracks_ok")
        self._reused = Metrics.counter("stembeam", "features_tracks_reused")
        self._failed = Metrics.counter("stembeam", "features_tracks_failed")

    def setup(self):
        import stembeam.model.features.analysis  # noqa: F401 - imported once per worker process, before its first track

    def _key(self, job: FeatureTrack) -> dict:
        sources = {
            name: [source.uri, source.offset, source.duration, source.stream, _file_identity(source.uri)] for name, source in job.sources
        }
        key = {"feature_version": FEATURE_VERSION, "vocal_pitch": self._pitch, "feature_frames": self._frames, "feature_plots": self._plots, "sources": sources,
               STEMS_CREATED_AT: job.stems_created_at}
        return json.loads(json.dumps(key))

    def _stored(self, job: FeatureTrack, key: dict) -> Optional[dict]:
        try:
            if not storage.exists(job.marker):
                return None
            stored = json.loads(storage.read_bytes(job.marker))
        except Exception:  # noqa: BLE001 - an unreadable marker means: analyse again
            return None
        if stored.get("key") != key:
            return None
        if self._plots and not storage.exists(plot_uri(self._output, job.folder)):
            return None
        return stored

    def _analyse(self, job: FeatureTrack) -> dict:
        from stembeam.model.features.analysis import analyse_track

        result = analyse_track(job.track_id, dict(job.sources), self._pitch, self._frames, storage.local_copy)
        if self._plots:
            from stembeam.model.features.analysis import SHORT_TERM_STEP_TICKS
            from stembeam.model.features.loudness import TICK_S
            from stembeam.model.features.plot import plot_track

            png = plot_track(job.track_id, result.short_term, SHORT_TERM_STEP_TICKS * TICK_S, result.track, result.duration_s)
            storage.write_bytes_atomic(plot_uri(self._output, job.folder), png)
        return {"sources": result.sources, "track": result.track, "frames": result.frames}

    def process(self, job: FeatureTrack):
        key = self._key(job)
        stored = self._stored(job, key)
        if stored is not None:
            self._reused.inc()
            rows = stored
        else:
            try:
                rows = self._analyse(job)
                storage.write_bytes_atomic(job.marker, json.dumps({"key": key, **rows}, ensure_ascii=False, allow_nan=False).encode("utf-8"))
            except Exception as error:  # noqa: BLE001 - the track becomes error rows, the job goes on
                sources, track = error_rows(job.track_id, {name: s.uri for name, s in job.sources}, f"{job.track_id}: features failed: {type(error).__name__}: {error}")
                rows = {"sources": sources, "track": track, "frames": []}
            (self._failed if rows["track"]["status"] == "error" else self._done).inc()
        # Every row says which stems it describes (drop_stale_feature_rows compares it with metadata/).
        stamp = {STEMS_CREATED_AT: datetime.datetime.fromisoformat(job.stems_created_at) if job.stems_created_at else None}
        yield from ({**row, **stamp} for row in rows["sources"])
        yield beam.pvalue.TaggedOutput(TRACKS, {**rows["track"], **stamp})
        for frame in rows["frames"]:
            yield beam.pvalue.TaggedOutput(FRAMES, {**frame, **stamp})


class WriteFeatureTables(beam.PTransform):
    """``{"sources", "tracks", "frames"}`` row PCollections -> ``{output}/features/{name}-*.parquet``,
    each written under ``staging`` (storage.staging_folder) and moved into place when complete."""

    def __init__(self, output: str, frames: bool = False, staging: Optional[str] = None):
        super().__init__()
        self._output, self._frames = output, frames
        self._staging = staging or storage.staging_folder(output)

    def expand(self, tables):
        schemas = {"sources": SOURCES_SCHEMA, "tracks": TRACKS_SCHEMA, "frames": FRAMES_SCHEMA}
        for name in TABLES:
            if name == "frames" and not self._frames:
                continue
            def sink(prefix, schema=schemas[name]):
                return beam.io.WriteToParquet(prefix, schema=schema, file_name_suffix=".parquet", num_shards=1, shard_name_template="-SSSSS-of-NNNNN")

            tables[name] | f"Write{name.title()}" >> WriteStaged(sink, storage.join(self._staging, "features"), features_root(self._output), name)
        return tables


class ComputeFeatures(beam.PTransform):
    """FeatureTracks -> the three tables written under ``{output}/features/``; returns the rows
    (``failed_tracks``: track rows of what could not even be listed, added to the tracks table).
    No resource hint: on Dataflow this stage runs on CPU workers."""

    def __init__(self, output: str, vocal_pitch: bool = False, frames: bool = False, plots: bool = False, failed_tracks=None,
                 staging: Optional[str] = None):
        super().__init__()
        self._output, self._pitch, self._frames, self._plots = output, vocal_pitch, frames, plots
        self._failed_tracks, self._staging = failed_tracks, staging

    def expand(self, jobs):
        rows = jobs | "Analyse" >> beam.ParDo(AnalyseTracks(self._output, self._pitch, self._frames, self._plots)).with_outputs(TRACKS, FRAMES, main="sources")
        tracks = rows[TRACKS]
        if self._failed_tracks is not None:
            tracks = (tracks, self._failed_tracks) | "AllTrackRows" >> beam.Flatten()
        tables = {"sources": rows.sources, "tracks": tracks, "frames": rows[FRAMES]}
        tables | "WriteTables" >> WriteFeatureTables(self._output, self._frames, self._staging)
        return tables


def feature_track(track_id: str, rows: list, marker) -> Optional[FeatureTrack]:
    """The FeatureTrack of a pipeline output's track from its metadata ``rows``: its ok stems, and
    its mixture read over the span the stems were made from (the rows' source offset, duration
    and stream); None when it has no stems. ``marker``: the uri of the stored result, from the
    track's folder name (``marker(folder)``). Both the corpus job's features stage and
    ``stembeam features`` on a pipeline output build them here."""
    from stembeam.model.features.analysis import SourceInput

    ok = [row for row in rows if row.get("status") == "ok" and row.get("stem")]
    if not ok:
        return None
    first = ok[0]
    sources = {row["stem"]: SourceInput(row["stem_uri"]) for row in ok}
    sources[MIXTURE] = SourceInput(first["source_uri"], first.get("source_offset_s") or 0.0, first.get("source_duration_s"), first.get("source_stream"))
    folder = Track(track_id, first["source_uri"]).folder_name
    # The same rows the metadata table gets: the identity a later run compares with.
    identity = latest_stems(rows).get(track_id)
    return FeatureTrack(track_id, folder, tuple(sorted(sources.items())), marker(folder), identity.isoformat() if identity else None)


def _corpus_jobs(element, output: str):
    """``(track_id, [metadata rows])`` -> the track's FeatureTrack, its result stored beside its stems."""
    track_id, rows = element
    found = feature_track(track_id, list(rows), lambda folder: storage.join(output, "stems", folder, CORPUS_MARKER))
    if found is not None:
        yield found


def import_in_background(in_process: bool) -> None:
    """With ``in_process`` workers (the DirectRunner), import the analysis (scipy.signal and the
    rest: ~1.5 s of one core) while the job starts and separates, not when the first track
    reaches the features stage (a DoFn importing it meanwhile waits for this import)."""
    import importlib
    import threading

    if in_process:
        threading.Thread(target=importlib.import_module, args=("stembeam.model.features.analysis",), daemon=True).start()


def add_to_corpus_job(rows, output: str, features, in_process: bool, staging: Optional[str] = None) -> dict:
    """The corpus job's features stage: after the stem writers, every track with written (or
    previously finished) stems is analysed: its stems, and its mixture over the same span; only
    metadata rows (stem uris and spans) cross to it. ``features``: the job's feature options
    (``vocal_pitch``, ``feature_frames``, ``feature_plots``). The tables are rewritten whole
    (drop_stale_feature_tables after the job)."""
    import_in_background(in_process)
    jobs = (
        rows
        | "FeatureRowsById" >> beam.Map(lambda row: (row["track_id"], row))
        | "RowsOfTracks" >> beam.GroupByKey()
        | "FeatureJobs" >> beam.FlatMap(_corpus_jobs, output)
    )
    return jobs | "Features" >> ComputeFeatures(output, features.vocal_pitch, features.feature_frames, features.feature_plots, staging=staging)
