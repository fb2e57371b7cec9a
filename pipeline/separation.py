"""The separating part of the jobs that write stems (``stembeam pipeline``, ``stembeam evaluate``):
their options checked, the resume key, the SeparateTracks step, the metadata rows and the
progress marks, from the job's options and its prepared model."""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Optional

import apache_beam as beam

from stembeam.model.encode import CODECS, check_bit_depth, check_bitrate, default_bit_depth
from stembeam.pipeline import __version__
from stembeam.pipeline.jobs import UsageError
from stembeam.pipeline.options import StembeamOptions
from stembeam.pipeline.prepared_model import PreparedModel
from stembeam.transforms.audio import ERRORS, FINISHED_EARLIER, LENGTHS, Decoding
from stembeam.transforms.inference import Separation
from stembeam.transforms.progress import DECODED, FAILED, SKIPPED, MarkProgress, metadata_progress, progress_root
from stembeam.transforms.records import RowContext
from stembeam.transforms.resume import job_key
from stembeam.transforms.stem_files import StemFiles, rows_from_json
from stembeam.transforms.tracks import SeparateTracks
from stembeam.transforms.write import ToErrorRows


def check_options(job: StembeamOptions) -> None:
    """UsageError naming the flag for a value the job cannot use (before any work)."""
    if job.codec not in CODECS:
        raise UsageError(f"--codec {job.codec!r}: choose one of {sorted(CODECS)}")
    try:
        check_bit_depth(job.codec, job.bit_depth)
    except ValueError as error:
        raise UsageError(f"--bit_depth {job.bit_depth} with --codec {job.codec}: {error}") from None
    try:
        check_bitrate(job.codec, job.bitrate)
    except ValueError as error:
        raise UsageError(f"--bitrate: {error}") from None
    if job.batch_size < 1:
        raise UsageError(f"--batch_size {job.batch_size}: must be at least 1")
    if job.limit is not None and job.limit < 1:
        raise UsageError(f"--limit {job.limit}: must be at least 1")


def check_block_frames(job: StembeamOptions, config) -> None:
    """UsageError unless --mwf_block_frames lies within a segment of ``config``."""
    if not 1 <= job.mwf_block_frames <= config.T:
        raise UsageError(f"--mwf_block_frames {job.mwf_block_frames}: must be between 1 and T={config.T} (blocks lie within a segment)")


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


@dataclasses.dataclass(frozen=True)
class SeparationRun:
    """One run of a job that separates: its options, its prepared model, the run's id (None: a
    dry run) and where its tables are staged (pipeline.jobs.table_staging)."""

    options: StembeamOptions
    model: PreparedModel
    run_id: Optional[str] = None
    staging: Optional[str] = None

    @property
    def output(self) -> str:
        return self.options.output

    @property
    def bit_depth(self) -> int:
        options = self.options
        return default_bit_depth(options.codec) if options.bit_depth is None else options.bit_depth

    @property
    def row_context(self) -> RowContext:
        return RowContext(self.options.model, self.options.codec, __version__, self.model.precision, self.bit_depth, self.model.config.F)


def separate_step(run: SeparationRun) -> SeparateTracks:
    """The SeparateTracks transform of ``run`` (with the accelerator hint, if any)."""
    options = run.options
    separation = Separation(run.model.source, options.batch_size, options.mwf, options.mwf_block_frames, options.residual)
    files = StemFiles(options.output, resume_key(options, run.model), options.bitrate, run.bit_depth, __version__, run.run_id, options.skip_existing)
    step = SeparateTracks(separation, files, Decoding(strict=options.strict_decoding))
    if options.inference_accelerator:
        step = step.with_resource_hints(accelerator=options.inference_accelerator)
    return step


def earlier_rows(separated: dict, run: SeparationRun):
    """The stored metadata rows of the tracks an earlier run finished (their markers' rows)."""
    return separated[FINISHED_EARLIER] | "PreviousRows" >> beam.FlatMap(rows_from_json, bit_depth=run.bit_depth, F=run.model.config.F)


def metadata_rows(input_errors, separated: dict, previous, run: SeparationRun):
    """Every metadata row of the run: written stems' rows, the ``previous`` rows of tracks
    finished earlier, and an error row per input error and per track that could not be decoded."""
    failures = (
        (input_errors, separated[ERRORS])
        | "AllFailures" >> beam.Flatten()
        | "ErrorRows" >> beam.ParDo(ToErrorRows(run.row_context))
    )
    return (separated["rows"], previous, failures) | "AllRows" >> beam.Flatten()


def mark_progress(input_errors, separated: dict, previous, run: SeparationRun) -> None:
    """A progress mark per track (transforms/progress.py): written, done earlier, failed, and
    its length once decoded. Marked on each branch, not after a Flatten: a Flatten of several
    stages' outputs runs once they have all finished, and the marks would come at the very end."""
    first, root = run.model.config.instruments[0], progress_root(run.output)
    separated["rows"] | "WrittenProgress" >> beam.FlatMap(metadata_progress, first) | "MarkWritten" >> beam.ParDo(MarkProgress(root))
    previous | "SkippedProgress" >> beam.FlatMap(metadata_progress, first, SKIPPED) | "MarkSkipped" >> beam.ParDo(MarkProgress(root))
    for name, errors in (("Input", input_errors), ("Decode", separated[ERRORS])):
        errors | f"{name}FailedProgress" >> beam.Map(_failed_progress) | f"Mark{name}Failed" >> beam.ParDo(MarkProgress(root))
    separated[LENGTHS] | "DecodedProgress" >> beam.Map(_decoded_progress) | "MarkDecoded" >> beam.ParDo(MarkProgress(root))


def _failed_progress(error) -> tuple:
    track_id, _, reason = error
    return track_id, FAILED, None, reason


def _decoded_progress(element) -> tuple:
    track_id, seconds = element
    return track_id, DECODED, seconds, ""
