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
from stembeam.transforms.staged import WriteTable

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
    rows; None for stems that are not a pipeline output's), stamped on every row it gives.

    Attributes:
        track_id: the track.
        folder: its safe file name.
        sources: ``((name, SourceInput), ...)``.
        marker: the uri of its stored result.
        stems_created_at: see above.
    """

    track_id: str
    folder: str
    sources: tuple
    marker: str
    stems_created_at: Optional[str] = None


def latest_stems(rows) -> dict:
    """The identity of each track's stems: the latest ``created_at`` of its ``ok`` stem rows. Every
    (re)write of a track's stems gives it new rows with new times, so rows computed from other
    stems carry another identity.

    Args:
        rows: metadata rows (dicts).
    Returns:
        ``{track_id: datetime}``.
    """
    latest = {}
    for row in rows:
        if row.get("status") == "ok" and row.get("stem") and row.get("created_at") is not None:
            track_id = row["track_id"]
            latest[track_id] = max(latest.get(track_id, row["created_at"]), row["created_at"])
    return latest


def features_root(output: str) -> str:
    """``{output}/features``: where the feature tables, plots and markers go."""
    return storage.join(output, "features")


def plot_uri(output: str, folder: str) -> str:
    """The uri of a track's plot PNG under ``output`` (``folder``: the track's safe file name)."""
    return storage.join(features_root(output), "plots", f"{folder}.png")


def error_rows(track_id: str, sources: dict, reason: str) -> tuple:
    """The rows of a track that could not be analysed at all.

    Args:
        track_id: the track.
        sources: ``{name: SourceInput}``.
        reason: one line naming the file and why.
    Returns:
        ``(source rows, track row)``, every row with ``status`` error.
    """
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

    Args:
        output: the output folder (markers and plots go under ``{output}/features/``).
        vocal_pitch: the vocals' pitch (pYIN) too.
        frames: the ``frames`` rows too.
        plots: a PNG per track.
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
    each written under ``staging`` (storage.staging_folder) and moved into place when complete.

    Args:
        output: the output folder.
        frames: write the ``frames`` table too.
        staging: where the tables are staged (None: storage.staging_folder(output)).
    """

    def __init__(self, output: str, frames: bool = False, staging: Optional[str] = None):
        super().__init__()
        self._output, self._frames = output, frames
        self._staging = staging or storage.staging_folder(output)

    def expand(self, tables):
        schemas = {"sources": SOURCES_SCHEMA, "tracks": TRACKS_SCHEMA, "frames": FRAMES_SCHEMA}
        for name in TABLES:
            if name == "frames" and not self._frames:
                continue
            tables[name] | f"Write{name.title()}" >> WriteTable(schemas[name], storage.join(self._staging, "features"), features_root(self._output), name)
        return tables


class ComputeFeatures(beam.PTransform):
    """FeatureTracks -> the three tables written under ``{output}/features/``; returns the rows
    (``failed_tracks``: track rows of what could not even be listed, added to the tracks table).
    No resource hint: on Dataflow this stage runs on CPU workers.

    Args:
        output, vocal_pitch, frames, plots: as AnalyseTracks.
        failed_tracks: a PCollection of track rows, or None.
        staging: as WriteFeatureTables.
    """

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
    """The FeatureTrack of a pipeline output's track: its ok stems, and its mixture read over the
    span the stems were made from (the rows' source offset, duration and stream). Both the corpus
    job's features stage and ``stembeam features`` on a pipeline output build them here.

    Args:
        track_id: the track.
        rows: its metadata rows (dicts).
        marker: ``marker(folder)`` gives the uri of the stored result from the track's folder name.
    Returns:
        FeatureTrack, or None when it has no stems.
    """
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


def import_after(ready) -> None:
    """Import the analysis (scipy.signal and the rest: ~0.8 s of one core) in a thread once
    ``ready()`` returns, so that the features stage of a job whose workers run in this process
    finds it imported. Give it what ends the job's start-up (the model's load): importing it
    while the job starts delayed the first stems by 0.9-1.7 s (3 paired runs), the imports
    contending for the interpreter, and importing it when the stage starts cost 0.8 s of wall.
    """
    import importlib
    import threading

    def run():
        ready()
        importlib.import_module("stembeam.model.features.analysis")

    threading.Thread(target=run, name="stembeam-features-import", daemon=True).start()


def add_to_corpus_job(rows, output: str, features, staging: Optional[str] = None) -> dict:
    """The corpus job's features stage: after the stem writers, every track with written (or
    previously finished) stems is analysed: its stems, and its mixture over the same span; only
    metadata rows (stem uris and spans) cross to it. The tables are rewritten whole
    (drop_stale_feature_tables after the job).

    Args:
        rows: the PCollection of metadata rows of the run (written and finished earlier).
        output: the output folder.
        features: the job's feature options (``vocal_pitch``, ``feature_frames``, ``feature_plots``).
        staging: where the tables are staged (storage.staging_folder).
    Returns:
        ComputeFeatures' result: ``{"sources", "tracks", "frames"}`` row PCollections.
    """
    jobs = (
        rows
        | "FeatureRowsById" >> beam.Map(lambda row: (row["track_id"], row))
        | "RowsOfTracks" >> beam.GroupByKey()
        | "FeatureJobs" >> beam.FlatMap(_corpus_jobs, output)
    )
    return jobs | "Features" >> ComputeFeatures(output, features.vocal_pitch, features.feature_frames, features.feature_plots, staging=staging)
