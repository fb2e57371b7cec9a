"""The corpus job (``stembeam pipeline``): manifest -> per track, in one stage: decode -> chunk ->
RunInference -> mask/Wiener -> stems -> metadata (Parquet) -> features -> tables.

``run`` is the command: it parses the options, takes the output (pipeline/session.py), prepares
the model (pipeline/prepared_model.py), builds and runs the job's steps (``build``) and prints
the summary (pipeline/summary.py).
"""
from __future__ import annotations

import dataclasses
import datetime
import sys
import time
from typing import Optional

from stembeam.launch.local import make_pipeline
from stembeam.model.decode_worker import start_tfio_worker
from stembeam.pipeline.jobs import (
    UsageError, drop_staging, help_requested, in_process, parse, require, run_with_progress, table_staging, wants_report,
)
from stembeam.pipeline.options import FeatureOptions, JobOptions, StembeamOptions
from stembeam.pipeline.prepared_model import ModelRequest, prepare_model
from stembeam.pipeline.separation import (
    SeparationRun, check_block_frames, check_options, earlier_rows, mark_progress, metadata_rows, separate_step,
)
from stembeam.pipeline.session import output_session
from stembeam.pipeline.summary import (
    COUNTERS, announce, counters, counts_from_metadata, exit_status, failed_feature_lines, failure_lines, feature_counts, timing,
)
from stembeam.pipeline.tables import drop_stale_tables
from stembeam.transforms import features, storage
from stembeam.transforms.manifest import ManifestError, ReadManifest, check_manifest, parse_manifest
from stembeam.transforms.records import Track
from stembeam.transforms.write import WriteMetadata


def build(pipeline, run: SeparationRun) -> None:
    """The corpus job's steps, in order, wired into ``pipeline``."""
    options = run.options
    manifest = pipeline | "ReadManifest" >> ReadManifest(options.manifest, options.limit)
    separated = manifest["tracks"] | "SeparateTracks" >> separate_step(run)
    previous = earlier_rows(separated, run)
    rows = metadata_rows(manifest["errors"], separated, previous, run)
    rows | "WriteMetadata" >> WriteMetadata(run.output, run.staging)
    mark_progress(manifest["errors"], separated, previous, run)
    wanted = options.view_as(FeatureOptions)
    if wanted.features:
        features.add_to_corpus_job(rows, run.output, wanted, run.staging)


@dataclasses.dataclass(frozen=True)
class CorpusRun:
    """A finished corpus job: Beam's result (None for an empty manifest), its options, the last
    progress Status and the model's config."""

    result: object
    options: StembeamOptions
    status: object = None
    config: object = None


def run_pipeline(argv, dry_run: bool = False) -> CorpusRun:
    """Parse ``argv``, take the output, prepare the model, run the corpus job with its progress
    and wait for it; then the tables (pipeline/tables.py). ``dry_run``: build and run the graph
    (a runner that only stages it, e.g. a Dataflow template) without touching the output."""
    options = parse(argv, "pipeline")
    job = options.view_as(StembeamOptions)
    require("stembeam pipeline", {"--manifest": job.manifest, "--output": job.output})
    check_options(job)
    total, lengths, uris = manifest_tracks(job.manifest, job.limit)
    if not total:
        return CorpusRun(None, job)
    if in_process(options) and not dry_run:
        start_tfio_worker(uris)  # its TensorFlow import overlaps the model's load
    table_staging(job.output, None, options, check_only=True)  # a usage error before any work
    with output_session(job.output, "stembeam pipeline", dry_run) as run_id:
        model = prepare_model(ModelRequest(job.model, job.model_dir, job.precision), job.output, in_process(options), dry_run)
        check_block_frames(job, model.config)
        run = SeparationRun(job, model, run_id, table_staging(job.output, run_id, options))
        pipeline = make_pipeline(options)
        build(pipeline, run)
        if job.view_as(FeatureOptions).features and in_process(options) and not dry_run:
            features.import_after(model.wait)
        result, status = _run(pipeline, run, total, lengths, dry_run)
        if not dry_run:
            drop_stale_tables(job.output, job.view_as(FeatureOptions))
    return CorpusRun(result, job, status, model.config)


def _run(pipeline, run: SeparationRun, total: int, lengths: dict, dry_run: bool) -> tuple:
    """Run the job and wait for it: ``(result, last progress Status)``. A job that failed because
    its model did is that model's error (one line naming the file), not the runner's wrapper."""
    model = run.model
    if dry_run:
        result = pipeline.run()
        result.wait_until_finish()
        return result, None
    try:
        result, status = run_with_progress(pipeline, run.options, run.output, total, lengths)
    except Exception:
        if model.failure() is not None:
            raise model.failure() from None
        raise
    finally:
        drop_staging(run.staging)
        model.release()  # no model outlives its job, failed or not
    model.finish()
    return result, status


def manifest_tracks(manifest: str, limit: Optional[int]) -> tuple:
    """``(rows, {track_id: manifest duration or None}, [source uris])`` of the manifest, read by
    the launcher before the job starts: UsageError (one line) when it is missing, unreadable or
    has no uri column; the counts and lengths are what the progress shows."""
    try:
        check_manifest(manifest)
        items = list(parse_manifest(manifest, limit))
    except ManifestError as error:
        raise UsageError(str(error)) from None
    tracks = [item for item in items if isinstance(item, Track)]
    return len(items), {track.track_id: track.duration for track in tracks}, [track.source_uri for track in tracks]


def run(argv=None) -> int:
    """``stembeam pipeline``: parse options (StembeamOptions + any Beam option), run the job,
    print a summary; the exit status is 0, or 3 when some rows failed (pipeline.summary)."""
    argv = list(argv or [])
    if help_requested(argv, "pipeline"):
        return 0
    started, run_started = time.monotonic(), datetime.datetime.now(datetime.timezone.utc)
    report = wants_report(argv, "pipeline")
    finished = run_pipeline(argv)
    job = finished.options
    if finished.result is None:
        announce(f"stembeam pipeline: manifest {job.manifest} has no rows; nothing to do")
        return 0
    config = finished.config
    counts = counters(finished.result, COUNTERS) or counts_from_metadata(job.output, run_started, config.T * config.frame_step)
    announce(
        f"stembeam pipeline: {counts['tracks_ok']} tracks separated, {counts['tracks_skipped']} already done, "
        f"{counts['tracks_failed']} failed; {counts['audio_seconds_separated']} s of audio, {counts['chunks_inferred']} chunks inferred; "
        f"{timing(started, counts['audio_seconds_separated'])}; "
        f"stems under {storage.join(job.output, 'stems')}, metadata under {storage.join(job.output, 'metadata')}"
    )
    for line in failure_lines(job.output, counts["tracks_failed"]):
        announce(line)
    failed = counts["tracks_failed"]
    if job.view_as(FeatureOptions).features:
        found = feature_counts(job.output, finished.result)
        announce(f"stembeam pipeline: features of {found['analysed']} tracks analysed, {found['reused']} reused, {found['failed']} failed; "
                 f"tables under {storage.join(job.output, 'features')}")
        for line in failed_feature_lines(job.output):
            announce(line)
        failed += found["failed"]
    if report:
        from stembeam.pipeline.flags import given_flags
        from stembeam.pipeline.report import write_report

        announce(f"stembeam pipeline: report {write_report(job.output, run_started, run_flags=given_flags(argv, 'pipeline'))}")
    return exit_status(failed, job.view_as(JobOptions).allow_failures)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
