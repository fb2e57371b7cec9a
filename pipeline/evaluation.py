"""The evaluation job: dataset -> separate (the corpus job's transforms) or read estimates ->
museval per 1 s window -> Parquet, per-track medians, Table-1 medians, summary.csv, SDR box plot."""
from __future__ import annotations

import logging
import sys
import time

import apache_beam as beam

from stembeam.launch.local import make_pipeline
from stembeam.pipeline.corpus import check_block_frames, check_options, drop_stale_metadata, filter_name, output_session, prepare_model, separate_tracks
from stembeam.pipeline.jobs import (
    UsageError, announce, dataset_tracks, drop_staging, help_requested, in_process, parse, require, run_with_progress, summary, table_staging, timing,
)
from stembeam.pipeline.options import EvaluateOptions, StembeamOptions
from stembeam.transforms import storage
from stembeam.model.encode import CODECS
from stembeam.transforms.dataset import STEM_NAMES, DatasetTrack, ReadDataset, stem_candidates
from stembeam.transforms.evaluate import TRACK_SCHEMA, TRACKS, WINDOW_SCHEMA, EvaluateTrack, failed_row
from stembeam.transforms.progress import DONE, FAILED, MarkProgress, progress_root
from stembeam.transforms.report import WriteReport
from stembeam.transforms.staged import WriteStaged

LOGGER = logging.getLogger("stembeam.evaluate")
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


def build(pipeline: beam.Pipeline, job: StembeamOptions, evaluation: EvaluateOptions, model, labels: dict, description: str, run_id=None, codec=None,
          staging=None):
    """Wire the evaluation job's named transforms into ``pipeline``; its tables are written
    under ``staging`` (pipeline.jobs.table_staging) and moved into ``evaluation/`` when complete."""
    staging = staging or table_staging(job.output, run_id, job)
    dataset = pipeline | "ReadDataset" >> ReadDataset(evaluation.dataset, evaluation.split, job.limit, evaluation.dataset_root)
    input_failures = dataset["errors"] | "DatasetErrorRows" >> beam.Map(_dataset_error_row, labels)
    if evaluation.estimates:
        paired = dataset["tracks"] | "FindEstimates" >> beam.ParDo(FindEstimates(evaluation.estimates, labels, codec)).with_outputs(TRACKS, main="pairs")
    else:
        mixtures = dataset["tracks"] | "Mixtures" >> beam.Map(DatasetTrack.track)
        rows = separate_tracks(mixtures, dataset["errors"], job, model, run_id, progress=False, staging=staging)
        paired = (
            {
                "track": dataset["tracks"] | "KeyTracks" >> beam.Map(lambda t: (t.track_id, t)),
                "rows": rows | "KeyRows" >> beam.Map(lambda r: (r["track_id"], r)),
            }
            | "JoinStems" >> beam.CoGroupByKey()
            | "PairEstimates" >> beam.ParDo(JoinEstimates(labels)).with_outputs(TRACKS, main="pairs")
        )
    scored = paired.pairs | "Evaluate" >> beam.ParDo(EvaluateTrack(labels)).with_outputs(TRACKS, main="windows")
    track_rows = (scored[TRACKS], paired[TRACKS], input_failures) | "AllTrackRows" >> beam.Flatten()
    folder, staged = evaluation_output(job.output), storage.join(staging, "evaluation")
    scored.windows | "WriteWindows" >> WriteStaged(
        lambda prefix: beam.io.WriteToParquet(prefix, schema=WINDOW_SCHEMA, file_name_suffix=".parquet", num_shards=1), staged, folder, "windows")
    track_rows | "WriteTracks" >> WriteStaged(
        lambda prefix: beam.io.WriteToParquet(prefix, schema=TRACK_SCHEMA, file_name_suffix=".parquet", num_shards=1), staged, folder, "tracks")
    track_rows | "Report" >> WriteReport(job.output, description)
    track_rows | "ProgressOfRows" >> beam.Map(_progress_of_row) | "MarkProgress" >> beam.ParDo(MarkProgress(progress_root(job.output)))


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
    import io

    import pyarrow.parquet as pq

    rows = [r for path in storage.list_matching(evaluation_output(output), "tracks-*.parquet")
            for r in pq.read_table(io.BytesIO(storage.read_bytes(path))).to_pylist()]
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
    started = time.monotonic()
    options = parse(argv, "evaluate")
    job, evaluation = options.view_as(StembeamOptions), options.view_as(EvaluateOptions)
    if job.manifest:
        raise UsageError("stembeam evaluate: --manifest is the corpus job's option; give the dataset (folder or manifest) as --dataset")
    require("stembeam evaluate", {"--dataset": evaluation.dataset, "--output": job.output})
    check_options(job)
    total = dataset_tracks(evaluation.dataset, evaluation.split, job.limit)
    table_staging(job.output, None, options, check_only=True)
    with output_session(job.output, "stembeam evaluate") as run_id:
        model = None
        if evaluation.estimates:
            labels = {"model": f"estimates:{evaluation.estimates}", "filter": "as given"}
            description = f"estimates from {evaluation.estimates}"
        else:
            model = prepare_model(job.model, job.model_dir, job.output, in_process(options), precision=job.precision)
            check_block_frames(job, model.config)
            labels = {"model": job.model, "filter": filter_name(job)}
            description = f"{job.model}, " + ("multichannel Wiener filter" if job.mwf else "soft masks") + (
                f", {model.precision} U-nets" if model.precision != "float32" else "")
        staging = table_staging(job.output, run_id, options)
        pipeline = make_pipeline(options)
        # With --estimates a codec chooses among files only when it was given.
        codec = job.codec if any(a == "--codec" or a.startswith("--codec=") for a in argv) else None
        build(pipeline, job, evaluation, model, labels, description, run_id, codec, staging)
        try:
            result, status = run_with_progress(pipeline, options, job.output, total, {})
        finally:
            drop_staging(staging)
        drop_stale_evaluation(job.output)
        if model is not None:
            model.finish()
            drop_stale_metadata(job.output)
    counts = summary(result, COUNTERS) or _counts_from_tracks(job.output)
    table = storage.join(evaluation_output(job.output), "table.md")
    print(storage.read_bytes(table).decode("utf-8"), flush=True)
    announce(LOGGER, (
        f"stembeam evaluate: {counts['tracks_evaluated']} tracks evaluated, {counts['tracks_not_evaluated'] + counts['tracks_failed']} not evaluated "
        f"in {timing(started, status.separated if status else 0)}; "
        f"tables under {evaluation_output(job.output)}, summary in {storage.join(job.output, 'summary.csv')}"
    ))
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
