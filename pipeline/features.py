"""``stembeam features``: MIR features of existing audio as a Beam job (local or gs://).

--input is a stembeam pipeline output (its ``metadata/`` lists each track's stems; the mixture
is the track's ``source_uri``) or a folder of track folders ``<track>/<source>.wav|flac|mp3...``
(MUSDB-HQ style, ``mixture`` one of the sources). Tables go to ``{output}/features/``; each
track's result is stored under ``{output}/features/_done/`` so a rerun only analyses what changed.
"""
from __future__ import annotations

import logging
import sys
import time

import apache_beam as beam

from stembeam.launch.local import make_pipeline
from stembeam.pipeline.jobs import UsageError, drop_staging, help_requested, parse, require, run_with_progress, table_staging, wants_report
from stembeam.pipeline.session import output_session
from stembeam.pipeline.options import FeatureOptions, JobOptions, StembeamOptions
from stembeam.pipeline.summary import announce, exit_status, failed_feature_lines, feature_counts, timing
from stembeam.transforms import storage
from stembeam.pipeline.tables import drop_stale_feature_tables
from stembeam.transforms.features import MIXTURE, ComputeFeatures, FeatureTrack, error_rows, features_root
from stembeam.transforms.progress import DONE, FAILED, MarkProgress, progress_root
from stembeam.transforms.records import Track

LOGGER = logging.getLogger("stembeam.features")


def _marker(output: str, folder: str) -> str:
    return storage.join(features_root(output), "_done", f"{folder}.json")


def _job(output: str, track_id: str, sources: dict) -> FeatureTrack:
    # The mixture's uri: a default id (name + 8 hex digits of the uri) keeps its plain folder name.
    folder = Track(track_id, sources[MIXTURE].uri if MIXTURE in sources else "").folder_name
    return FeatureTrack(track_id, folder, tuple(sorted(sources.items())), _marker(output, folder))


def _pipeline_output_tracks(root: str, output: str):
    """FeatureTracks from a pipeline output's metadata tables (transforms.features.feature_track:
    its ok stems, its mixture over the span the stems were made from, its stems' identity)."""
    from stembeam.transforms.features import feature_track

    by_track = {}
    for uri in storage.list_matching(storage.join(root, "metadata"), "*.parquet"):
        for row in storage.read_parquet(uri).to_pylist():
            by_track.setdefault(row["track_id"], []).append(row)
    for track_id in sorted(by_track):
        found = feature_track(track_id, by_track[track_id], lambda folder: _marker(output, folder))
        if found is not None:
            yield found


# Files a flat folder's tracks are read from (each file a track of its mixture alone).
AUDIO_SUFFIXES = (".wav", ".wave", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".aif", ".aiff", ".wma")


def _flat_tracks(root: str, output: str) -> list:
    """A flat folder of audio files as mixture-only tracks (each file's name without its suffix
    is the track id), or [] when ``root`` holds no audio file itself."""
    from stembeam.model.features.analysis import SourceInput

    files = [uri for uri in storage.list_matching(root, "*") if uri.lower().endswith(AUDIO_SUFFIXES) and not uri.lower().endswith(".stem.mp4")]
    return [_job(output, uri.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0], {MIXTURE: SourceInput(uri)}) for uri in files]


def _folder_tracks(root: str, output: str):
    """FeatureTracks of a folder of track folders (transforms.dataset's listing), of a flat folder
    of audio files (mixture-only tracks), or ``(track_id, uri, reason)``."""
    from stembeam.model.features.analysis import SourceInput
    from stembeam.transforms.dataset import DatasetTrack, list_dataset

    listed = list(list_dataset(root, split="all"))
    if not any(isinstance(item, DatasetTrack) for item in listed):
        flat = _flat_tracks(root, output)
        if flat:
            yield from flat
            return
    for item in listed:
        if not isinstance(item, DatasetTrack):
            yield item
            continue
        sources = {MIXTURE: SourceInput(item.mixture.uri, stream=item.mixture.stream)}
        sources.update({name: SourceInput(signal.uri, stream=signal.stream) for name, signal in item.stems})
        yield _job(output, item.track_id, sources)


def list_feature_tracks(root: str, output: str):
    """FeatureTracks of the input ``root`` (a pipeline output or a folder of track folders), and
    ``(track_id, uri, reason)`` for what cannot be used."""
    is_pipeline_output = bool(storage.list_matching(storage.join(root, "metadata"), "*.parquet"))
    return (_pipeline_output_tracks if is_pipeline_output else _folder_tracks)(root, output)


def _mixture_mark(row: dict):
    """A progress mark per track, from its mixture's source row (or a track that failed whole)."""
    if row["source"] == MIXTURE:
        done = row["status"] == "ok"
        yield row["track_id"], DONE if done else FAILED, row["duration_s"] if done else None, row["error"] or ""


class ListFeatureTracks(beam.DoFn):
    """Input uri -> FeatureTracks; tagged ``errors``: source and track error rows for what cannot be used."""

    def __init__(self, output: str):
        self._output = output

    def process(self, root: str):
        for item in list_feature_tracks(root, self._output):
            if isinstance(item, FeatureTrack):
                yield item
            else:
                track_id, uri, reason = item
                _, track = error_rows(track_id or uri, {}, reason)
                yield beam.pvalue.TaggedOutput("errors", track)


def build(pipeline: beam.Pipeline, job: StembeamOptions, features: FeatureOptions, staging: str | None = None) -> None:
    """Wire the job: list the input's tracks, analyse each, write the tables (through ``staging``)."""
    listed = (
        pipeline
        | "InputUri" >> beam.Create([features.input])
        | "ListTracks" >> beam.ParDo(ListFeatureTracks(job.output)).with_outputs("errors", main="tracks")
    )
    jobs = listed.tracks | "Spread" >> beam.Reshuffle()
    tables = jobs | "Features" >> ComputeFeatures(job.output, features.vocal_pitch, features.feature_frames, features.feature_plots, failed_tracks=listed.errors,
                                                  staging=staging)
    root = progress_root(job.output)
    tables["sources"] | "ProgressOfSources" >> beam.FlatMap(_mixture_mark) | "MarkAnalysed" >> beam.ParDo(MarkProgress(root))
    listed.errors | "ProgressOfErrors" >> beam.Map(lambda row: (row["track_id"], FAILED, None, row["error"] or "")) | "MarkUnusable" >> beam.ParDo(MarkProgress(root))


def run(argv=None) -> int:
    argv = list(argv or [])
    if help_requested(argv, "features"):
        return 0
    report = wants_report(argv, "features")
    options = parse(argv, "features")
    job, features = options.view_as(StembeamOptions), options.view_as(FeatureOptions)
    require("stembeam features", {"--input": features.input, "--output": job.output})
    started = time.monotonic()
    if not storage.list_matching(features.input, "*"):
        raise UsageError(f"stembeam features: --input {features.input}: no such folder, or an empty one")
    listed = list(list_feature_tracks(features.input, job.output))
    if not any(isinstance(item, FeatureTrack) for item in listed):
        reasons = "; ".join(dict.fromkeys(item[2] for item in listed)) or f"{features.input}: nothing to analyse"
        raise UsageError(f"stembeam features: no usable tracks in {features.input}: {reasons}")
    total = len(listed)
    # One job at a time per output (the features of a pipeline output may share its folder).
    table_staging(job.output, None, options, check_only=True)
    with output_session(job.output, "stembeam features") as run_id:
        staging = table_staging(job.output, run_id, options)
        pipeline = make_pipeline(options)
        build(pipeline, job, features, staging)
        try:
            result, status = run_with_progress(pipeline, options, job.output, total, {})
        finally:
            drop_staging(staging)
        drop_stale_feature_tables(job.output, features.feature_frames)
    counts = feature_counts(job.output, result)
    announce((
        f"stembeam features: {counts['analysed']} tracks analysed, {counts['reused']} reused, {counts['failed']} failed "
        f"in {timing(started, status.separated if status else 0)}; tables under {features_root(job.output)}"
    ))
    for line in failed_feature_lines(job.output):
        announce(line)
    if report:
        from stembeam.pipeline.flags import given_flags
        from stembeam.pipeline.report import write_report

        announce(f"stembeam features: report {write_report(job.output, run_flags=given_flags(argv, 'features'))}")
    return exit_status(counts["failed"], job.view_as(JobOptions).allow_failures)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
