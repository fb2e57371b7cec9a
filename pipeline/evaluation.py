"""The evaluation job: dataset -> separate (the corpus job's transforms) or read estimates ->
museval per 1 s window -> Parquet, per-track medians, Table-1 medians, summary.csv, SDR box plot."""
from __future__ import annotations

import dataclasses
import sys
import time
from typing import Optional

import apache_beam as beam

from stembeam.launch.local import make_pipeline
from stembeam.pipeline.jobs import UsageError, dataset_tracks, drop_staging, help_requested, in_process, parse, require, run_with_progress, table_staging
from stembeam.pipeline.options import EvaluateOptions, JobOptions, StembeamOptions
from stembeam.pipeline.prepared_model import ModelRequest, prepare_model
from stembeam.pipeline.separation import SeparationRun, check_block_frames, check_options, earlier_rows, filter_name, metadata_rows, separate_step
from stembeam.pipeline.session import output_session
from stembeam.pipeline.summary import announce, counters, exit_status, timing
from stembeam.pipeline.tables import drop_stale_metadata
from stembeam.transforms import storage
from stembeam.model.encode import CODECS
from stembeam.transforms.dataset import STEM_NAMES, DatasetTrack, ReadDataset, stem_candidates
from stembeam.transforms.evaluate import TRACK_SCHEMA, TRACKS, WINDOW_SCHEMA, EvaluateTrack, failed_row
from stembeam.transforms.progress import DONE, FAILED, MarkProgress, progress_root
from stembeam.transforms.report import WriteReport
from stembeam.transforms.staged import WriteTable
from stembeam.transforms.write import WriteMetadata

COUNTERS = ("tracks_evaluated", "tracks_not_evaluated", "tracks_failed")


class JoinEstimates(beam.DoFn):
    """``(track_id, {"track": [DatasetTrack], "rows": [metadata rows]})`` -> ``(DatasetTrack,
    {stem: stem uri})``; tagged ``tracks``: an error row for a track whose separation failed."""

    def __init__(self, labels: dict):
        self._labels = labels

    def process(self, element):
        _, joined = element
        if not joined["track"]:
            return  # an input error without a track: recorded by the dataset's own error rows
        track: DatasetTrack = joined["track"][0]
        stems = {row["stem"]: row["stem_uri"] for row in joined["rows"] if row["status"] == "ok"}
        if stems:
            yield track, stems
            return
        reasons = "; ".join(row["error"] for row in joined["rows"] if row["error"]) or "no stems were written"
        yield beam.pvalue.TaggedOutput(TRACKS, failed_row(track.track_id, track.split, f"separation failed: {reasons}", self._labels))


class FindEstimates(beam.DoFn):
    """DatasetTrack -> ``(DatasetTrack, {stem: uri})`` from ``{estimates}/{track id}/{stem}.*``
    (or the pipeline's folder name of the id); tagged ``tracks``: an error row when the folder
    holds none, or when a stem has files of several codecs and ``codec`` does not say which
    one to score (a wav run after an mp3 run would otherwise score the older files)."""

    def __init__(self, estimates: str, labels: dict, codec: str | None = None):
        self._estimates, self._labels, self._codec = estimates, labels, codec

    def _folder(self, track: DatasetTrack) -> str:
        candidates = [storage.join(self._estimates, name) for name in dict.fromkeys((track.track_id, track.track().folder_name))]
        return next((folder for folder in candidates if stem_candidates(folder)), candidates[-1])

    def process(self, track: DatasetTrack):
        folder = self._folder(track)
        candidates = stem_candidates(folder)
        if self._codec:
            suffix = "." + CODECS[self._codec][0]
            candidates = {stem: [u for u in uris if u.endswith(suffix)] for stem, uris in candidates.items()}
            candidates = {stem: uris for stem, uris in candidates.items() if uris}
        ambiguous = {stem: uris for stem, uris in candidates.items() if len(uris) > 1}
        if ambiguous:
            listed = "; ".join(f"{stem}: {', '.join(uris)}" for stem, uris in sorted(ambiguous.items()))
            reason = f"estimates of several codecs under {folder} ({listed}); give --codec to say which to score"
            yield beam.pvalue.TaggedOutput(TRACKS, failed_row(track.track_id, track.split, reason, self._labels))
        elif candidates:
            yield track, {stem: uris[0] for stem, uris in candidates.items()}
        else:
            wanted = f"{self._codec} files" if self._codec else "files"
            yield beam.pvalue.TaggedOutput(TRACKS, failed_row(track.track_id, track.split, f"no estimate {wanted} ({', '.join(STEM_NAMES)}) under {folder}", self._labels))


def _dataset_error_row(error, labels):
    track_id, uri, reason = error
    return failed_row(track_id, None, reason, labels)


@dataclasses.dataclass(frozen=True)
class Scoring:
    """One evaluation run: its options, the labels and description of its tables, how the
    estimates are made (``separation``: None with --estimates, which are read instead), the codec
    that picks among estimate files (None: any) and where its tables are staged."""

    options: StembeamOptions
    evaluation: EvaluateOptions
    labels: dict
    description: str
    separation: Optional[SeparationRun] = None
    codec: Optional[str] = None
    staging: Optional[str] = None


def build(pipeline: beam.Pipeline, scoring: Scoring) -> None:
    """The evaluation job's steps, in order; its tables are written under ``scoring.staging``
    (pipeline.jobs.table_staging) and moved into ``evaluation/`` when complete."""
    job, evaluation, labels = scoring.options, scoring.evaluation, scoring.labels
    dataset = pipeline | "ReadDataset" >> ReadDataset(evaluation.dataset, evaluation.split, job.limit, evaluation.dataset_root)
    input_failures = dataset["errors"] | "DatasetErrorRows" >> beam.Map(_dataset_error_row, labels)
    if scoring.separation is None:
        finder = FindEstimates(evaluation.estimates, labels, scoring.codec)
        paired = dataset["tracks"] | "FindEstimates" >> beam.ParDo(finder).with_outputs(TRACKS, main="pairs")
    else:
        paired = _separated(dataset, scoring.separation, labels)
    scored = paired.pairs | "Evaluate" >> beam.ParDo(EvaluateTrack(labels)).with_outputs(TRACKS, main="windows")
    track_rows = (scored[TRACKS], paired[TRACKS], input_failures) | "AllTrackRows" >> beam.Flatten()
    folder, staged = evaluation_output(job.output), storage.join(scoring.staging, "evaluation")
    scored.windows | "WriteWindows" >> WriteTable(WINDOW_SCHEMA, staged, folder, "windows")
    track_rows | "WriteTracks" >> WriteTable(TRACK_SCHEMA, staged, folder, "tracks")
    track_rows | "Report" >> WriteReport(job.output, scoring.description)
    track_rows | "ProgressOfRows" >> beam.Map(_progress_of_row) | "MarkProgress" >> beam.ParDo(MarkProgress(progress_root(job.output)))


def _separated(dataset, run: SeparationRun, labels: dict):
    """The dataset's mixtures separated by the corpus job's own steps (stems and metadata under
    the output), each track paired with its stems."""
    mixtures = dataset["tracks"] | "Mixtures" >> beam.Map(DatasetTrack.track)
    separated = mixtures | "SeparateTracks" >> separate_step(run)
    rows = metadata_rows(dataset["errors"], separated, earlier_rows(separated, run), run)
    rows | "WriteMetadata" >> WriteMetadata(run.output, run.staging)
    return (
        {
            "track": dataset["tracks"] | "KeyTracks" >> beam.Map(lambda t: (t.track_id, t)),
            "rows": rows | "KeyRows" >> beam.Map(lambda r: (r["track_id"], r)),
        }
        | "JoinStems" >> beam.CoGroupByKey()
        | "PairEstimates" >> beam.ParDo(JoinEstimates(labels)).with_outputs(TRACKS, main="pairs")
    )


def _progress_of_row(row: dict) -> tuple:
    """A per-track (and stem) score row as a progress mark: every stem's row of a track names
    the same mark; its audio length is its count of 1-s windows."""
    if row["status"] == "ok":
        return row["track_id"], DONE, float(row["windows"] or 0), ""
    return row["track_id"], FAILED, None, row["error"] or ""


def evaluation_output(output: str) -> str:
    return storage.join(output, "evaluation")


# What a run writes under evaluation/ (each file replaced when the new one is written).
EVALUATION_FILES = ("windows-00000-of-00001.parquet", "tracks-00000-of-00001.parquet", "table.md", "table.csv", "track_medians.csv",
                    "track_medians.md", "sdr_boxplot.png")


def drop_stale_evaluation(output: str) -> None:
    """evaluation/ describes the latest run: after the job, drop files it did not write (an
    earlier layout's shards). Earlier results are never removed before the new ones are written."""
    folder = evaluation_output(output)
    kept = {storage.join(folder, name) for name in EVALUATION_FILES}
    storage.delete([uri for uri in storage.list_matching(folder, "*") if uri not in kept])


# Spleeter's `evaluate` flags -> ours (its -a/--adapter and --verbose have no meaning here).
SPLEETER_FLAGS = {"-p": "--model", "--params_filename": "--model", "--mus_dir": "--dataset", "-o": "--output", "--output_path": "--output"}
SPLEETER_IGNORED_FLAGS = {"-a": 1, "--adapter": 1, "--verbose": 0}


def spleeter_aliases(argv: list) -> list:
    """``-p MODEL --mus_dir DIR -o OUT`` (Spleeter's evaluate) as ``--model --dataset --output``."""
    out, i = [], 0
    while i < len(argv):
        flag, _, value = argv[i].partition("=")
        if flag in SPLEETER_IGNORED_FLAGS:
            i += 1 + (SPLEETER_IGNORED_FLAGS[flag] if not value else 0)
            continue
        if flag in SPLEETER_FLAGS:
            out.append(SPLEETER_FLAGS[flag] + ("=" + value if value else ""))
        else:
            out.append(argv[i])
        i += 1
    return out


def _counts_from_tracks(output: str) -> dict:
    """The summary's counts from the per-track table the job wrote (runners without metrics)."""
    rows = [r for path in storage.list_matching(evaluation_output(output), "tracks-*.parquet")
            for r in storage.read_parquet(path).to_pylist()]
    return {
        "tracks_evaluated": len({r["track_id"] for r in rows if r["status"] == "ok"}),
        "tracks_not_evaluated": sum(r["status"] != "ok" for r in rows),
        "tracks_failed": 0,
    }


def run(argv=None) -> int:
    """Parse options, run the evaluation job, print the Table-1-style medians and a summary line."""
    argv = spleeter_aliases(list(argv or []))
    if help_requested(argv, "evaluate"):
        return 0
    if any(arg == "--manifest" or arg.startswith("--manifest=") for arg in argv):
        raise UsageError("stembeam evaluate: --manifest is the corpus job's option; give the dataset (folder or manifest) as --dataset")
    started = time.monotonic()
    options = parse(argv, "evaluate")
    job, evaluation = options.view_as(StembeamOptions), options.view_as(EvaluateOptions)
    require("stembeam evaluate", {"--dataset": evaluation.dataset, "--output": job.output})
    check_options(job)
    total = dataset_tracks(evaluation.dataset, evaluation.split, job.limit, needs_references="stembeam evaluate")
    table_staging(job.output, None, options, check_only=True)
    # With --estimates a codec chooses among files only when it was given.
    codec = job.codec if any(a == "--codec" or a.startswith("--codec=") for a in argv) else None
    with output_session(job.output, "stembeam evaluate") as run_id:
        staging = table_staging(job.output, run_id, options)
        scoring = _scoring(options, run_id, staging, codec)
        pipeline = make_pipeline(options)
        build(pipeline, scoring)
        try:
            result, status = run_with_progress(pipeline, options, job.output, total, {})
        finally:
            drop_staging(staging)
            if scoring.separation is not None:
                scoring.separation.model.release()
        drop_stale_evaluation(job.output)
        if scoring.separation is not None:
            scoring.separation.model.finish()
            drop_stale_metadata(job.output)
    counts = counters(result, COUNTERS) or _counts_from_tracks(job.output)
    table = storage.join(evaluation_output(job.output), "table.md")
    print(storage.read_bytes(table).decode("utf-8"), flush=True)
    announce(
        f"stembeam evaluate: {counts['tracks_evaluated']} tracks evaluated, {counts['tracks_not_evaluated'] + counts['tracks_failed']} not evaluated "
        f"in {timing(started, status.separated if status else 0)}; "
        f"tables under {evaluation_output(job.output)}, summary in {storage.join(job.output, 'summary.csv')}"
    )
    return exit_status(counts["tracks_not_evaluated"] + counts["tracks_failed"], job.view_as(JobOptions).allow_failures)


def _scoring(options, run_id: Optional[str], staging: str, codec: Optional[str]) -> Scoring:
    """What this evaluation scores: estimates read from --estimates, or the model's separation."""
    job, evaluation = options.view_as(StembeamOptions), options.view_as(EvaluateOptions)
    if evaluation.estimates:
        labels = {"model": f"estimates:{evaluation.estimates}", "filter": "as given"}
        return Scoring(job, evaluation, labels, f"estimates from {evaluation.estimates}", codec=codec, staging=staging)
    model = prepare_model(ModelRequest(job.model, job.model_dir, job.precision), job.output, in_process(options))
    check_block_frames(job, model.config)
    run = SeparationRun(job, model, run_id, staging)
    return Scoring(job, evaluation, {"model": job.model, "filter": filter_name(job)}, describe_separation(job, model.precision),
                   run, codec, staging)


def describe_separation(job: StembeamOptions, precision: str) -> str:
    """The scores table's heading for stems this job separates: model, filter, --residual, precision."""
    parts = [job.model, "multichannel Wiener filter" if job.mwf else "soft masks"]
    if getattr(job, "residual", False):
        parts.append("last stem the mixture minus the others (--residual)")
    if precision != "float32":
        parts.append(f"{precision} U-nets")
    return ", ".join(parts)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
