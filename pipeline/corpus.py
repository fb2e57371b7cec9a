"""The corpus job: manifest -> decode -> chunk -> RunInference -> regroup -> mask/Wiener -> stems + Parquet."""
from __future__ import annotations

import json
import functools
import logging
import os
import sys
import tempfile
import threading

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from model.audio import CODECS, TEMP_PREFIX
from pipeline import __version__
from pipeline.jobs import announce, help_requested, in_process, parse, require, summary
from pipeline.options import FeatureOptions, StembeamOptions
from transforms import features, spool, storage
from transforms.audio import DONE, DecodeAndChunk
from transforms.inference import SeparateChunks, share_with_workers_in_process
from transforms.manifest import ReadManifest
from transforms.regroup import RegroupTracks
from transforms.write import ToErrorRows, WriteMetadata, WriteStems, rows_from_json

LOGGER = logging.getLogger("stembeam.pipeline")


def prepare_model(model: str, model_dir: str | None, output: str, in_process: bool = False):
    """``(config, model.keras uri, finish)``: the folder's own file, else an export under
    ``{output}/_model/`` (reused while it comes from the same checkpoint files).

    With ``in_process`` workers (the DirectRunner) the launcher's model is shared with them
    and traced while the job starts; the export is then saved in the background, and
    ``finish()`` waits for it.
    """
    from model.load import KERAS_FILE, config_for_dir, load_model
    from model.resolve import resolve_model_dir

    remote = next((uri for uri in (model_dir, model) if uri and not storage.is_local(uri)), None)
    if remote is not None:
        # A gs:// (or other remote) model folder is read through Beam FileSystems into a local
        # copy; workers read its model.keras from the remote folder itself.
        local, remote_files = storage.cached_folder(remote)
        model, model_dir = (model, local) if remote == model_dir else (local, None)
    folder = resolve_model_dir(model, model_dir)
    config = config_for_dir(folder, model if model.startswith("spleeter:") else None)
    keras_uri = storage.join(remote or folder, KERAS_FILE)
    target = storage.join(output, "_model", config.name.replace(":", "_"), KERAS_FILE)
    source = storage.join(output, "_model", config.name.replace(":", "_"), "source.json")
    if remote is None:
        stamp = json.dumps({"folder": folder, "files": sorted((m.path, m.size_in_bytes) for m in _matching_metadata(storage.join(folder, "*")))})
    else:
        stamp = json.dumps({"folder": remote, "files": remote_files})
    own_file = FileSystems.exists(keras_uri)
    exported = own_file or (FileSystems.exists(target) and FileSystems.exists(source) and storage.read_bytes(source).decode("utf-8") == stamp)
    uri = keras_uri if own_file else target
    if exported and not in_process:
        return config, uri, lambda: None
    _, keras_model = load_model(model, model_dir)
    tasks = []
    if in_process:
        share_with_workers_in_process(uri, keras_model)
        tasks.append(_warm_up(keras_model, config))
    if not exported:
        save = functools.partial(_save_export, keras_model, target, source, stamp)
        if in_process:
            tasks.append(_in_background(save))
        else:
            save()

    def finish():
        for task in tasks:
            task.join()
            if task.error is not None:
                raise task.error

    return config, uri, finish


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


def _warm_up(keras_model, config) -> _Task:
    """Trace the segment graph once (about a second) while Beam starts and decodes."""
    import numpy as np

    from model.segment_graph import separator_for

    return _in_background(lambda: separator_for(keras_model, config).soft(np.zeros((1, config.segment_samples, 2), np.float32)))


def _save_export(keras_model, target: str, source: str, stamp: str) -> None:
    from model.load import KERAS_FILE

    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, KERAS_FILE)
        keras_model.save(local)
        if storage.is_local(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
        storage.put_file(local, target)
    storage.write_bytes_atomic(source, stamp.encode("utf-8"))


def _matching_metadata(pattern: str) -> list:
    return [m for result in FileSystems.match([pattern]) for m in result.metadata_list]


def clear_metadata(output: str) -> None:
    """metadata/ describes the latest run over the whole manifest: drop the previous run's files."""
    storage.delete_matching(storage.join(output, "metadata", "tracks*.parquet"))


def clear_leftovers(output: str) -> None:
    """Remove the spool and unfinished stem files (also those of an earlier, killed run)."""
    spool.delete_quietly([spool.work_root(output)])
    spool.delete_quietly(storage.matching(storage.join(output, "stems", "*", TEMP_PREFIX + "*")))


def filter_name(options: StembeamOptions) -> str:
    """How the stems were filtered: ``soft``, or ``mwf`` with its block length (0: whole track)."""
    return f"mwf-{options.mwf_block_frames}" if options.mwf else "soft"


def separate_tracks(tracks, input_errors, options: StembeamOptions, config, keras_uri: str):
    """Tracks (and ``(track_id, uri, reason)`` errors of the input) -> metadata rows: a row per
    written stem, a row per failed track; also written as Parquet under ``{output}/metadata/``."""
    model_name, codec, variant = options.model, options.codec, filter_name(options)
    decoded = tracks | "DecodeAndChunk" >> beam.ParDo(
        DecodeAndChunk(config, options.output, model_name, codec, options.skip_existing, variant)
    ).with_outputs("errors", DONE, main="chunks")
    parts = decoded.chunks | "Separate" >> SeparateChunks(
        config, keras_uri, options.output, options.batch_size, options.mwf, options.mwf_block_frames, options.inference_accelerator
    )
    grouped = parts | "Regroup" >> RegroupTracks()
    written = grouped.tracks | "WriteStems" >> beam.ParDo(
        WriteStems(config, options.output, model_name, codec, options.bitrate, __version__, variant)
    )
    previous = decoded[DONE] | "PreviousRows" >> beam.FlatMap(rows_from_json)
    failures = (
        (input_errors, decoded.errors, grouped.errors)
        | "AllFailures" >> beam.Flatten()
        | "ErrorRows" >> beam.ParDo(ToErrorRows(model_name, codec, __version__))
    )
    rows = (written, previous, failures) | "AllRows" >> beam.Flatten()
    rows | "WriteMetadata" >> WriteMetadata(options.output)
    features.add_to_corpus_job(tracks, rows, options)  # only with --features
    return rows


def build(pipeline: beam.Pipeline, options: StembeamOptions, config, keras_uri: str) -> None:
    """Wire the named transforms of the corpus job into ``pipeline``."""
    manifest = pipeline | "ReadManifest" >> ReadManifest(options.manifest, options.limit)
    separate_tracks(manifest["tracks"], manifest["errors"], options, config, keras_uri)


COUNTERS = ("tracks_ok", "tracks_failed", "tracks_skipped", "audio_seconds_separated", "chunks_inferred")


def check_options(job: StembeamOptions) -> None:
    """Exit with a message naming the flag for a value the job cannot use."""
    if job.codec not in CODECS:
        raise SystemExit(f"--codec {job.codec!r}: choose one of {sorted(CODECS)}")
    if job.batch_size < 1:
        raise SystemExit("--batch_size must be at least 1")


def check_block_frames(job: StembeamOptions, config) -> None:
    if not 1 <= job.mwf_block_frames <= config.T:
        raise SystemExit(f"--mwf_block_frames must be between 1 and T={config.T} (blocks lie within a segment)")


def run_pipeline(argv) -> tuple:
    """Parse ``argv``, prepare the model, run the corpus job and wait for it: ``(result, options)``."""
    options = parse(argv)
    job = options.view_as(StembeamOptions)
    require("stembeam pipeline", {"--manifest": job.manifest, "--output": job.output})
    check_options(job)
    config, keras_uri, finish_model = prepare_model(job.model, job.model_dir, job.output, in_process(options))
    check_block_frames(job, config)
    clear_metadata(job.output)
    clear_leftovers(job.output)
    pipeline = beam.Pipeline(options=options)
    build(pipeline, job, config, keras_uri)
    result = pipeline.run()
    result.wait_until_finish()
    finish_model()
    clear_leftovers(job.output)
    return result, job


def run(argv=None) -> int:
    """Parse options (StembeamOptions + any Beam option), run the job, log a summary line."""
    argv = list(argv or [])
    if help_requested(argv, "stembeam pipeline", "Separate every track of a manifest on Apache Beam.", StembeamOptions._add_argparse_args, FeatureOptions._add_argparse_args):
        return 0
    result, job = run_pipeline(argv)
    counts = summary(result, COUNTERS)
    announce(LOGGER, (
        f"stembeam pipeline: {counts['tracks_ok']} tracks separated, {counts['tracks_skipped']} already done, "
        f"{counts['tracks_failed']} failed; {counts['audio_seconds_separated']} s of audio, {counts['chunks_inferred']} chunks inferred; "
        f"stems under {storage.join(job.output, 'stems')}, metadata under {storage.join(job.output, 'metadata')}"
    ))
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
