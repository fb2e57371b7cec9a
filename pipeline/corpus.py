"""The corpus job: manifest -> per track, in one stage: decode -> chunk -> RunInference -> mask/Wiener -> stems -> Parquet."""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import datetime
import functools
import io
import json
import hashlib
import logging
import os
import sys
import shutil
import tempfile
import threading
import time

import apache_beam as beam

from stembeam.model.audio import CODECS, TEMP_PREFIX, check_bit_depth, default_bit_depth
from stembeam.model.startup import collector_paused
from stembeam.pipeline import __version__
from stembeam.pipeline.jobs import (
    UsageError, announce, drop_staging, help_requested, in_process, parse, private_tempdir, require, run_with_progress, summary, table_staging,
    timing,
)
from stembeam.pipeline.options import FeatureOptions, StembeamOptions
from stembeam.pipeline.output_lock import OutputLock
from stembeam.transforms import features, storage, workspace
from stembeam.transforms.audio import DONE, ERRORS
from stembeam.transforms.inference import share_with_workers_in_process
from stembeam.transforms.manifest import ManifestError, ReadManifest, check_manifest, parse_manifest
from stembeam.transforms.progress import DECODED, FAILED, SKIPPED, MarkProgress, metadata_progress, progress_root
from stembeam.transforms.records import Track
from stembeam.transforms.resume import job_key
from stembeam.transforms.tracks import SeparateTracks
from stembeam.transforms.write import METADATA_FILE, ToErrorRows, WriteMetadata, rows_from_json

LOGGER = logging.getLogger("stembeam.pipeline")


@dataclasses.dataclass
class PreparedModel:
    """The model a job runs: its config, the ``model.keras`` workers load, a hash of its
    weights (part of every stem's resume key) and ``finish()``, which waits for a background
    export and re-raises its error."""

    config: object
    keras_uri: str
    fingerprint: str
    finish: object
    # The U-nets' precision the stems get: the --precision asked for, or float32 when workers in
    # this process run on a CPU without bfloat16 (model/precision.py).
    precision: str = "float32"


def prepare_model(model: str, model_dir: str | None, output: str, in_process: bool = False, dry_run: bool = False,
                  precision: str = "float32") -> PreparedModel:
    """The folder's own ``model.keras``, else an export under ``{output}/_model/`` (reused while
    it was made from weights with the same content hash).

    With ``in_process`` workers (the DirectRunner) the launcher's model is shared with them
    and traced (in ``precision``) while the job starts, and no export is written. A
    ``dry_run`` writes nothing.
    """
    with collector_paused():
        from stembeam.model.load import KERAS_FILE, config_for_dir, keras_file_fits, load_model, weights_fingerprint
        from stembeam.model.resolve import resolve_model_dir

    remote = next((uri for uri in (model_dir, model) if uri and not storage.is_local(uri)), None)
    if remote is not None:
        # A gs:// (or other remote) model folder is read through Beam FileSystems into a local
        # copy; workers read its model.keras from the remote folder itself.
        local, _ = storage.cached_folder(remote)
        model, model_dir = (model, local) if remote == model_dir else (local, None)
    folder = resolve_model_dir(model, model_dir)
    config = config_for_dir(folder, model)
    if config.n_channels != 2:
        # transforms/write.py opens writers with the model's channel count; mono models give stereo stems.
        raise SystemExit(f"--model {model}: a mono model (n_channels 1) is not supported by the Beam jobs yet; use `stembeam separate -p {model}`")
    fingerprint = weights_fingerprint(folder)
    keras_uri = storage.join(remote or folder, KERAS_FILE)
    target = storage.join(output, "_model", config.name.replace(":", "_"), KERAS_FILE)
    source = storage.join(output, "_model", config.name.replace(":", "_"), "source.json")
    # The export is the weights built for the config's segments (F: 1024 bins, or 1536 for the
    # 16 kHz models): reused only for the same weights and the same configuration.
    stamp = json.dumps({"weights_sha256": fingerprint, "config_sha256": hashlib.sha256(config.to_json().encode("utf-8")).hexdigest()})
    # The folder's own model.keras (read where it is, e.g. on gs://), unless it is built for other
    # segments (a 16 kHz name on an 11 kHz export): then the export under _model/ is.
    own_file = keras_file_fits(folder, config)
    exported = own_file or (storage.exists(target) and storage.exists(source) and storage.read_bytes(source).decode("utf-8") == stamp)
    uri = keras_uri if own_file else target
    if dry_run or (exported and not in_process):
        return PreparedModel(config, uri, fingerprint, lambda: None, precision)
    if not in_process:
        _save_export(load_model(model, model_dir)[1], target, source, stamp)
        return PreparedModel(config, uri, fingerprint, lambda: None, precision)
    from stembeam.model.precision import effective_precision

    if effective_precision(precision) == "float32":
        precision = "float32"
    # In-process workers get the launcher's model, loaded and traced in the background while
    # Beam starts and decodes the first tracks; they need no export (worker processes do).
    pending = concurrent.futures.Future()
    share_with_workers_in_process(uri, pending)
    task = _in_background(functools.partial(_load_and_trace, pending, model, model_dir, config, precision))

    def finish():
        task.join()
        if task.error is not None:
            raise task.error

    return PreparedModel(config, uri, fingerprint, finish, precision)


def _load_and_trace(pending, model: str, model_dir, config, precision: str) -> None:
    """Load the Keras model into the ``pending`` future, then trace its segment graph (about half
    a second); a failure is the future's (the workers') and the task's error."""
    with collector_paused():
        from stembeam.model.load import load_model
        from stembeam.model.segment_graph import separator_for

        try:
            _, keras_model = load_model(model, model_dir)
        except BaseException as error:
            pending.set_exception(error)
            raise
        pending.set_result(keras_model)
        separator_for(keras_model, config, precision).warm_up()


class _Task(threading.Thread):
    def __init__(self, work):
        super().__init__(daemon=True)
        self._work, self.error = work, None

    def run(self):
        try:
            self._work()
        except Exception as error:  # noqa: BLE001 - re-raised by finish()
            self.error = error


def _in_background(work) -> _Task:
    task = _Task(work)
    task.start()
    return task


def _save_export(keras_model, target: str, source: str, stamp: str) -> None:
    from stembeam.model.load import KERAS_FILE

    # The stamp vouches for the file: drop it before the file is replaced.
    storage.delete([source])
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, KERAS_FILE)
        keras_model.save(local)
        if storage.is_local(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
        storage.put_file(local, target)
    storage.write_bytes_atomic(source, stamp.encode("utf-8"))


def drop_stale_metadata(output: str) -> None:
    """metadata/ describes the latest run over the whole manifest. The new table replaces the
    old one when it is written; other files (an earlier layout's shards) are dropped after."""
    written = storage.join(output, "metadata", METADATA_FILE)
    storage.delete([p for p in storage.list_matching(storage.join(output, "metadata"), "tracks*.parquet") if p != written])


# Folders where Beam file sinks of earlier releases wrote under the output itself (their
# ``beam-temp-*`` folders, left by a killed job, held complete Parquet files: extra rows).
SINK_FOLDERS = ("", "metadata", "features", "evaluation")


def clear_leftovers(output: str) -> None:
    """Remove the staged tables and progress marks (``_work/``, local or gs://), local work files
    (decoded samples), unfinished stem files and Beam's ``beam-temp-*`` folders (also those of an
    earlier, killed run). Called only while the job holds the output's lock."""
    workspace.delete_quietly([workspace.work_root(output)])
    shutil.rmtree(workspace.local_work_dir(output), ignore_errors=True)
    workspace.delete_quietly(storage.list_matching(storage.join(output, "stems"), "*", TEMP_PREFIX + "*"))
    for folder in SINK_FOLDERS:
        workspace.delete_quietly(storage.list_matching(storage.join(output, folder) if folder else output, "beam-temp-*"))


@contextlib.contextmanager
def output_session(output: str, job: str, dry_run: bool = False):
    """Hold ``output`` for one job (refusing while another live job holds it) and sweep what
    killed runs left, before and after; yields the run id. While the job runs, Python's
    temporary folder is one of this run (pipeline.jobs.private_tempdir), removed after it.
    A dry run touches nothing."""
    if dry_run:
        yield None
        return
    with OutputLock(output, job) as lock:
        clear_leftovers(output)
        with private_tempdir():
            yield lock.run_id
        lock.check()  # a job whose lock was taken over leaves the output to its new holder
        clear_leftovers(output)


def filter_name(options: StembeamOptions) -> str:
    """How the stems were filtered: ``soft``, or ``mwf`` with its block length (0: whole track);
    ``+residual`` when the last stem is the mixture minus the others."""
    name = f"mwf-{options.mwf_block_frames}" if options.mwf else "soft"
    return name + "+residual" if getattr(options, "residual", False) else name


def resume_key(options: StembeamOptions, model: PreparedModel) -> dict:
    """The job's part of every track's resume key (transforms.resume): every option that
    changes the bytes of a stem."""
    # The configuration shapes the stems too (mask extension, exponent, STFT), and a Spleeter
    # config JSON given as --model can change in place.
    config_sha256 = hashlib.sha256(model.config.to_json().encode("utf-8")).hexdigest()
    # float32 stems are the same bytes as before --precision existed: their key stays as it was.
    more = {} if model.precision == "float32" else {"precision": model.precision}
    # So are stems in their codec's default bit depth (wav 16, flac 24).
    if options.bit_depth is not None and options.bit_depth != default_bit_depth(options.codec):
        more["bit_depth"] = options.bit_depth
    return job_key(options.model, model.fingerprint, options.codec, options.bitrate, filter_name(options), config_sha256=config_sha256, **more)


def separate_tracks(tracks, input_errors, options: StembeamOptions, model: PreparedModel, run_id: str | None = None, progress: bool = True,
                    staging: str | None = None):
    """Tracks (and ``(track_id, uri, reason)`` errors of the input) -> metadata rows: a row per
    written stem, a row per failed track; also written as Parquet under ``{output}/metadata/``
    (through ``staging``, pipeline.jobs.table_staging); with ``progress``, a progress mark per
    track (transforms/progress.py)."""
    staging = staging or table_staging(options.output, run_id, options)
    config, model_name, codec = model.config, options.model, options.codec
    bit_depth = default_bit_depth(codec) if options.bit_depth is None else options.bit_depth
    key = resume_key(options, model)
    step = SeparateTracks(
        config, options.output, key, model.keras_uri, skip_existing=options.skip_existing, batch_size=options.batch_size, mwf=options.mwf,
        mwf_block_frames=options.mwf_block_frames, precision=model.precision, bitrate=options.bitrate, version=__version__, run_id=run_id,
        bit_depth=bit_depth, residual=options.residual,
    )
    if options.inference_accelerator:
        step = step.with_resource_hints(accelerator=options.inference_accelerator)
    separated = tracks | "SeparateTracks" >> step
    written = separated["rows"]
    previous = separated[DONE] | "PreviousRows" >> beam.FlatMap(rows_from_json, bit_depth=bit_depth, F=config.F)
    failures = (
        (input_errors, separated[ERRORS])
        | "AllFailures" >> beam.Flatten()
        | "ErrorRows" >> beam.ParDo(ToErrorRows(model_name, codec, __version__, model.precision, bit_depth, config.F))
    )
    rows = (written, previous, failures) | "AllRows" >> beam.Flatten()
    rows | "WriteMetadata" >> WriteMetadata(options.output, staging)
    if progress:
        # Marked on each branch, not after a Flatten: a Flatten of several stages' outputs runs
        # once they have all finished, and the marks would come at the very end.
        first, root = config.instruments[0], progress_root(options.output)
        written | "WrittenProgress" >> beam.FlatMap(metadata_progress, first) | "MarkWritten" >> beam.ParDo(MarkProgress(root))
        previous | "SkippedProgress" >> beam.FlatMap(metadata_progress, first, SKIPPED) | "MarkSkipped" >> beam.ParDo(MarkProgress(root))
        for name, errors in (("Input", input_errors), ("Decode", separated[ERRORS])):
            errors | f"{name}FailedProgress" >> beam.Map(_failed_progress) | f"Mark{name}Failed" >> beam.ParDo(MarkProgress(root))
        separated[DECODED] | "DecodedProgress" >> beam.Map(_decoded_progress) | "MarkDecoded" >> beam.ParDo(MarkProgress(root))
    wanted = options.view_as(FeatureOptions)
    if wanted.features:
        features.add_to_corpus_job(tracks, rows, options.output, wanted, in_process(options), staging)
    return rows


def _failed_progress(error) -> tuple:
    track_id, _, reason = error
    return track_id, FAILED, None, reason


def _decoded_progress(element) -> tuple:
    track_id, seconds = element
    return track_id, DECODED, seconds, ""


def build(pipeline: beam.Pipeline, options: StembeamOptions, model: PreparedModel, run_id: str | None = None, staging: str | None = None) -> None:
    """Wire the named transforms of the corpus job into ``pipeline``."""
    manifest = pipeline | "ReadManifest" >> ReadManifest(options.manifest, options.limit)
    separate_tracks(manifest["tracks"], manifest["errors"], options, model, run_id, staging=staging)


COUNTERS = ("tracks_ok", "tracks_failed", "tracks_skipped", "audio_seconds_separated", "chunks_inferred")


def check_options(job: StembeamOptions) -> None:
    """Exit with a message naming the flag for a value the job cannot use."""
    if job.codec not in CODECS:
        raise UsageError(f"--codec {job.codec!r}: choose one of {sorted(CODECS)}")
    try:
        check_bit_depth(job.codec, job.bit_depth)
    except ValueError as error:
        raise UsageError(f"--bit_depth {job.bit_depth} with --codec {job.codec}: {error}") from None
    if job.batch_size < 1:
        raise UsageError("--batch_size must be at least 1")


def check_block_frames(job: StembeamOptions, config) -> None:
    if not 1 <= job.mwf_block_frames <= config.T:
        raise UsageError(f"--mwf_block_frames must be between 1 and T={config.T} (blocks lie within a segment)")


def manifest_tracks(manifest: str, limit) -> tuple:
    """``(rows, {track_id: manifest duration or None})`` of the manifest, read by the launcher
    before the job starts: UsageError (one line) when it is missing, unreadable or has no uri
    column; the counts and lengths are what the progress shows."""
    try:
        check_manifest(manifest)
        items = list(parse_manifest(manifest, limit))
    except ManifestError as error:
        raise UsageError(str(error)) from None
    return len(items), {item.track_id: item.duration for item in items if isinstance(item, Track)}


def run_pipeline(argv, dry_run: bool = False) -> tuple:
    """Parse ``argv``, prepare the model, run the corpus job with its progress and wait for it:
    ``(result, options, last progress Status)``; ``(None, options, None)`` for an empty manifest.
    ``dry_run``: build and run the graph (a runner that only stages it, e.g. a Dataflow
    template) without touching the output."""
    options = parse(argv, "pipeline")
    job = options.view_as(StembeamOptions)
    require("stembeam pipeline", {"--manifest": job.manifest, "--output": job.output})
    check_options(job)
    total, lengths = manifest_tracks(job.manifest, job.limit)
    if not total:
        return None, job, None
    table_staging(job.output, None, options, check_only=True)  # a usage error before any work
    with output_session(job.output, "stembeam pipeline", dry_run) as run_id:
        model = prepare_model(job.model, job.model_dir, job.output, in_process(options), dry_run, job.precision)
        check_block_frames(job, model.config)
        staging = table_staging(job.output, run_id, options)
        pipeline = beam.Pipeline(options=options)
        build(pipeline, job, model, run_id, staging)
        if dry_run:
            result, status = pipeline.run(), None
            result.wait_until_finish()
        else:
            try:
                result, status = run_with_progress(pipeline, options, job.output, total, lengths)
            finally:
                drop_staging(staging)
        model.finish()
        if not dry_run:
            drop_stale_metadata(job.output)
            if job.view_as(FeatureOptions).features:
                features.drop_stale_feature_tables(job.output, job.view_as(FeatureOptions).feature_frames)
            # Every run, --features or not: no feature row may outlive the stems it describes.
            features.drop_stale_feature_rows(job.output)
    return result, job, status


def counts_from_metadata(output: str, started: datetime.datetime) -> dict:
    """The summary's counts read from the metadata table the job wrote, for runners that report
    no metrics: rows created since ``started`` are this run's, older ok rows came from markers."""
    import pyarrow.parquet as pq

    rows = pq.read_table(io.BytesIO(storage.read_bytes(storage.join(output, "metadata", METADATA_FILE)))).to_pylist()
    ok = {row["track_id"]: row for row in rows if row["status"] == "ok"}
    new = [row for row in ok.values() if row["created_at"] >= started]
    samples_per_chunk = 512 * 1024
    return {
        "tracks_ok": len(new),
        "tracks_skipped": len(ok) - len(new),
        "tracks_failed": sum(row["status"] == "error" for row in rows),
        "audio_seconds_separated": int(round(sum(row["duration_s"] for row in new))),
        "chunks_inferred": sum(-(-round(row["duration_s"] * row["sample_rate"]) // samples_per_chunk) for row in new),
    }


def run(argv=None) -> int:
    """Parse options (StembeamOptions + any Beam option), run the job, print a summary line."""
    argv = list(argv or [])
    if help_requested(argv, "pipeline"):
        return 0
    started = time.monotonic()
    run_started = datetime.datetime.now(datetime.timezone.utc)
    result, job, status = run_pipeline(argv)
    if result is None:
        announce(LOGGER, f"stembeam pipeline: manifest {job.manifest} has no rows; nothing to do")
        return 0
    counts = summary(result, COUNTERS) or counts_from_metadata(job.output, run_started)
    announce(LOGGER, (
        f"stembeam pipeline: {counts['tracks_ok']} tracks separated, {counts['tracks_skipped']} already done, "
        f"{counts['tracks_failed']} failed; {counts['audio_seconds_separated']} s of audio, {counts['chunks_inferred']} chunks inferred; "
        f"{timing(started, counts['audio_seconds_separated'])}; "
        f"stems under {storage.join(job.output, 'stems')}, metadata under {storage.join(job.output, 'metadata')}"
    ))
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
