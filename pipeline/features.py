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
from stembeam.pipeline.jobs import drop_staging, help_requested, parse, require, run_with_progress, table_staging, wants_report
from stembeam.pipeline.session import output_session
from stembeam.pipeline.summary import announce, counters, timing
from stembeam.pipeline.options import FeatureOptions, StembeamOptions
from stembeam.transforms import storage
from stembeam.transforms.features import MIXTURE, ComputeFeatures, FeatureTrack, drop_stale_feature_tables, error_rows, features_root
from stembeam.transforms.progress import DONE, FAILED, MarkProgress, progress_root
from stembeam.transforms.records import Track

LOGGER = logging.getLogger("stembeam.features")
COUNTERS = ("features_tracks_ok", "features_tracks_reused", "features_tracks_failed")


def _marker(output: str, folder: str) -> str:
    return storage.join(features_root(output), "_done", f"{folder}.json")


def _job(output: str, track_id: str, sources: dict) -> FeatureTrack:
    # The mixture's uri: a default id (name + 8 hex digits of the uri) keeps its plain folder name.
    folder = Track(track_id, sources[MIXTURE].uri if MIXTURE in sources else "").folder_name
    return FeatureTrack(track_id, folder, tuple(sorted(sources.items())), _marker(output, folder))


def _pipeline_output_tracks(root: str, output: str):
    """FeatureTracks from a pipeline output's metadata tables (ok stem rows, mixture = source_uri),
    each with its stems' identity (transforms.features.latest_stems)."""
    import dataclasses

    import pyarrow.parquet as pq

    from stembeam.model.features.analysis import SourceInput
    from stembeam.transforms.features import latest_stems

    stems, rows = {}, []
    for uri in storage.list_matching(storage.join(root, "metadata"), "*.parquet"):
        with storage.local_copy(uri) as path:
            rows += pq.read_table(path, columns=["track_id", "source_uri", "stem", "stem_uri", "status", "created_at"]).to_pylist()
    for row in rows:
        if row["status"] == "ok" and row["stem"]:
            stems.setdefault(row["track_id"], {MIXTURE: SourceInput(row["source_uri"])})[row["stem"]] = SourceInput(row["stem_uri"])
    identities = latest_stems(rows)
    for track_id in sorted(stems):
        identity = identities.get(track_id)
        yield dataclasses.replace(_job(output, track_id, stems[track_id]), stems_created_at=identity.isoformat() if identity else None)


def _folder_tracks(root: str, output: str):
    """FeatureTracks of a folder of track folders (transforms.dataset's listing), or ``(track_id, uri, reason)``."""
    from stembeam.model.features.analysis import SourceInput
    from stembeam.transforms.dataset import DatasetTrack, list_dataset

    for item in list_dataset(root, split="all"):
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
    total = sum(1 for _ in list_feature_tracks(features.input, job.output))
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
    counts = counters(result, COUNTERS) or dict.fromkeys(COUNTERS, "?")  # "?": a runner without metrics
    announce((
        f"stembeam features: {counts['features_tracks_ok']} tracks analysed, {counts['features_tracks_reused']} reused, "
        f"{counts['features_tracks_failed']} with errors in {timing(started, status.separated if status else 0)}; "
        f"tables under {features_root(job.output)}"
    ))
    if report:
        from stembeam.pipeline.flags import given_flags
        from stembeam.pipeline.report import write_report

        announce(f"stembeam features: report {write_report(job.output, run_flags=given_flags(argv, 'features'))}")
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
