"""The training-data job: dataset -> random T-frame crops -> sharded TFRecords + stats.json."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import sys
import time
from typing import Optional

import apache_beam as beam

from stembeam.launch.local import make_pipeline
from stembeam.model.config import ModelConfig, get_config, load_config_file
from stembeam.model.training import TRAIN, VALIDATION
from stembeam.pipeline.jobs import (
    UsageError, dataset_tracks, drop_staging, help_requested, parse, require, run_with_progress, table_staging,
)
from stembeam.pipeline.session import output_session
from stembeam.pipeline.summary import announce, counters, exit_status, timing
from stembeam.pipeline.options import EvaluateOptions, JobOptions, PrepareOptions, StembeamOptions
from stembeam.transforms import storage
from stembeam.transforms.dataset import ReadDataset
from stembeam.transforms.progress import DONE, FAILED, MarkProgress, progress_root
from stembeam.transforms.staged import WriteStaged
from stembeam.transforms.training_examples import ERRORS, SUMMARY, MakeExamples

LOGGER = logging.getLogger("stembeam.prepare")
STATS_FILE = "stats.json"
CONFIG_FILE = "config.json"
SOURCE_FILE = "source.json"  # what the records were made from, for reuse as a cache


def model_config(value: str) -> ModelConfig:
    """``spleeter:2stems`` (or 4/5 stems, or their ``-16kHz`` versions) or the path of a configuration JSON (stembeam's or Spleeter's)."""
    if value.lower().endswith(".json"):
        return load_config_file(value)[0]
    return get_config(value)


def statistics(summaries: list, errors: list, config: ModelConfig, options: PrepareOptions) -> dict:
    """The small JSON written next to the records."""
    stats = {"model_config": config.name, "instruments": list(config.instruments), "T": config.T, "F": config.F,
             "seed": options.seed, "repeat": options.repeat, "augment": options.augment, "mixture_from_stems": options.mixture_from_stems}
    for split in (TRAIN, VALIDATION):
        rows = [s for s in summaries if s["split"] == split]
        stats[split] = {"tracks": len(rows), "examples": sum(s["examples"] for s in rows), "audio_seconds": round(sum(s["seconds"] for s in rows), 3)}
    stats["failed"] = [{"track_id": t, "uri": u, "reason": r} for t, u, r in sorted(errors)]
    return stats


class _WriteStats(beam.DoFn):
    def __init__(self, output, config, options):
        self._output, self._config, self._options = output, config, options

    def process(self, _, summaries, errors, *written):
        # After the new records are in place (``written``: their uris): drop other shards (an
        # earlier run's with another --shards), then the stats, which say the records are complete.
        kept = {uri for uris in written for uri in uris}
        storage.delete([uri for split in (TRAIN, VALIDATION) for uri in storage.list_matching(self._output, f"{split}-*.tfrecord") if uri not in kept])
        stats = statistics(summaries, errors, self._config, self._options)
        storage.write_bytes_atomic(storage.join(self._output, STATS_FILE), json.dumps(stats, indent=2).encode("utf-8"))
        storage.write_bytes_atomic(storage.join(self._output, CONFIG_FILE), self._config.to_json().encode("utf-8"))
        yield stats


@dataclasses.dataclass(frozen=True)
class DatasetSource:
    """The tracks a training-data job reads.

    Attributes:
        uri: a dataset (transforms.dataset's layouts: folders, ``.stem.mp4``, a manifest or
            Spleeter's CSV).
        limit: the first ``limit`` tracks only (None: all).
        root: the folder a manifest's relative paths start from (None: the manifest's).
        split: every track in this split (Spleeter's separate train and validation CSVs);
            None: ``test``/``valid`` tracks are validation, the rest training.
        mix_name: Spleeter's CSV column ``<mix_name>_path`` of the mixture.
    """

    uri: str
    limit: Optional[int] = None
    root: Optional[str] = None
    split: Optional[str] = None
    mix_name: str = "mix"


def build(pipeline: beam.Pipeline, options: PrepareOptions, config: ModelConfig, source: DatasetSource, output: str,
          staging: Optional[str] = None) -> None:
    """Wire the training-data job's named transforms into ``pipeline``.

    Args:
        pipeline: the Beam pipeline to add to.
        options: the job's PrepareOptions (seed, repeat, augment, shards...).
        config: the model whose inputs the records hold ([T, F, 2] magnitudes).
        source: the tracks (DatasetSource).
        output: where the records, ``stats.json`` and ``config.json`` go.
        staging: where records are written before each shard is moved into ``output``
            (default: storage.staging_folder(output)); ``stats.json`` is written last.
    """
    staging = staging or storage.staging_folder(output)
    written = []
    dataset = pipeline | "ReadDataset" >> ReadDataset(source.uri, "all", source.limit, source.root, source.mix_name)
    tracks = dataset["tracks"]
    if source.split is not None:
        tracks = tracks | "SetSplit" >> beam.Map(dataclasses.replace, split=source.split)
    made = tracks | "MakeExamples" >> beam.ParDo(
        MakeExamples(config, options.seed, options.repeat, options.augment, options.mixture_from_stems)
    ).with_outputs(ERRORS, SUMMARY, main="examples")
    for split in (TRAIN, VALIDATION):
        written.append(
            made.examples
            | f"Only{split.title()}" >> beam.Filter(lambda item, wanted: item[0] == wanted, split)
            | f"{split.title()}Bytes" >> beam.Values()
            | f"Write{split.title()}" >> WriteStaged(
                lambda prefix: beam.io.WriteToTFRecord(prefix, file_name_suffix=".tfrecord", num_shards=options.shards),
                storage.join(staging, "records"), output, split)
        )
    errors = (dataset[ERRORS], made[ERRORS]) | "AllErrors" >> beam.Flatten()
    # marked on each branch: a Flatten of two stages would only run once both have finished
    made[SUMMARY] | "DoneProgress" >> beam.Map(lambda s: (s["track_id"], DONE, s["seconds"], "")) | "MarkDone" >> beam.ParDo(MarkProgress(progress_root(output)))
    made[ERRORS] | "FailedProgress" >> beam.Map(lambda e: (e[0], FAILED, None, e[2])) | "MarkFailed" >> beam.ParDo(MarkProgress(progress_root(output)))
    dataset[ERRORS] | "InputProgress" >> beam.Map(lambda e: (e[0], FAILED, None, e[2])) | "MarkInput" >> beam.ParDo(MarkProgress(progress_root(output)))
    (
        pipeline
        | "StatsTrigger" >> beam.Create([None])
        | "WriteStats" >> beam.ParDo(
            _WriteStats(output, config, options), beam.pvalue.AsList(made[SUMMARY]), beam.pvalue.AsList(errors),
            *(beam.pvalue.AsList(uris) for uris in written),
        )
    )


def _file_identity(uri: str):
    """``[size, modification time]`` of the file at exactly ``uri`` (never a pattern: os.stat
    locally, following a symlink to its file; remote, its filesystem's metadata of that one
    path, gs://: the object's update time, which each new generation changes); None when it
    cannot be read."""
    if storage.is_local(uri):
        try:
            info = os.stat(storage.local_path(uri))
        except OSError:
            return None
        return [info.st_size, info.st_mtime_ns]
    from apache_beam.io.filesystems import FileSystems

    try:
        meta = FileSystems.get_filesystem(uri).metadata(uri)
    except Exception:  # noqa: BLE001 - missing (or unreadable: the job will say why)
        return None
    return [meta.size_in_bytes, meta.last_updated_in_seconds]


def source_stamp(csv_uri: str, root: str, split: str, seed: int, mix_name: str, config: ModelConfig) -> str:
    """What the records of a Spleeter dataset CSV are made from: the arguments, the sha256 of
    the CSV's bytes, and the size and modification time of every file its rows list (as the job
    resolves them against ``root``). Editing the CSV, or rewriting or touching a listed file,
    changes the stamp, so the records are made again."""
    import hashlib

    from stembeam.transforms.dataset import DatasetTrack, list_dataset

    csv_sha256 = hashlib.sha256(storage.read_bytes(csv_uri)).hexdigest()
    listed = set()
    for item in list_dataset(csv_uri, "all", root, mix_name):
        if isinstance(item, DatasetTrack):
            listed.add(item.mixture.uri)
            listed.update(signal.uri for _, signal in item.stems)
    files = {uri: _file_identity(uri) for uri in sorted(listed)}
    return json.dumps({
        "csv": csv_uri, "root": root, "split": split, "seed": seed, "mix_name": mix_name, "config": json.loads(config.to_json()),
        "csv_sha256": csv_sha256, "files": files,
    }, sort_keys=True)


def prepare_split(source: DatasetSource, output: str, config: ModelConfig, seed: int, beam_args=()) -> dict:
    """Records of one Spleeter dataset CSV, all in one split, under ``output``, reused as they are
    when ``output`` already holds this very CSV's records (Spleeter's ``training_cache`` /
    ``validation_cache``).

    Args:
        source: the CSV (``uri``), the folder its paths start from (``root``), the ``split`` and
            the ``mix_name`` column.
        output: the records' folder.
        config: the model whose inputs the records hold.
        seed: the crops' and augmentation's random seed.
        beam_args: more Beam options for the job.

    Returns:
        The statistics (``stats.json``: tracks, examples and seconds per split, failures).
    """
    stamp = source_stamp(source.uri, source.root, source.split, seed, source.mix_name, config)
    stamp_file = storage.join(output, SOURCE_FILE)
    if storage.exists(stamp_file) and storage.exists(storage.join(output, STATS_FILE)) and storage.read_bytes(stamp_file).decode("utf-8") == stamp:
        return json.loads(storage.read_bytes(storage.join(output, STATS_FILE)))
    options = parse([f"--seed={seed}", *beam_args], "prepare-dataset")
    table_staging(output, None, options, check_only=True)
    # One job at a time per output; the earlier records stay until the new ones are written.
    with output_session(output, "stembeam prepare-dataset") as run_id:
        storage.delete([stamp_file])
        staging = table_staging(output, run_id, options)
        pipeline = make_pipeline(options)
        build(pipeline, options.view_as(PrepareOptions), config, source, output, staging)
        try:
            pipeline.run().wait_until_finish()
        finally:
            drop_staging(staging)
        drop_empty_shards(output)
        stats = json.loads(storage.read_bytes(storage.join(output, STATS_FILE)))
        storage.write_bytes_atomic(stamp_file, stamp.encode("utf-8"))
    return stats


def run(argv=None) -> int:
    """Parse options, run the job, print the statistics."""
    argv = list(argv or [])
    if help_requested(argv, "prepare-dataset"):
        return 0
    started = time.monotonic()
    options = parse(argv, "prepare-dataset")
    job = options.view_as(PrepareOptions)
    dataset, output, limit = options.view_as(EvaluateOptions).dataset, options.view_as(StembeamOptions).output, options.view_as(StembeamOptions).limit
    require("stembeam prepare-dataset", {"--dataset": dataset, "--output": output})
    if job.repeat < 1 or job.shards < 1:
        raise UsageError("--repeat and --shards must be at least 1")
    try:
        config = model_config(job.model_config)
    except (ValueError, OSError) as error:
        raise UsageError(f"--model_config {job.model_config}: {error}") from None
    total = dataset_tracks(dataset, "all", limit)
    table_staging(output, None, options, check_only=True)
    # One job at a time per output; the earlier records and stats stay until the new ones are written.
    with output_session(output, "stembeam prepare-dataset") as run_id:
        staging = table_staging(output, run_id, options)
        pipeline = make_pipeline(options)
        build(pipeline, job, config, DatasetSource(dataset, limit, options.view_as(EvaluateOptions).dataset_root), output, staging)
        try:
            result, status = run_with_progress(pipeline, options, output, total, {})
        finally:
            drop_staging(staging)
    stats = json.loads(storage.read_bytes(storage.join(output, STATS_FILE)))
    # Runners without metrics: the same counts from the stats the job wrote.
    counts = counters(result, ("examples_written", "tracks_failed")) or {
        "examples_written": sum(part["examples"] for part in stats.values() if isinstance(part, dict) and "examples" in part),
        "tracks_failed": len(stats.get("failed", [])),
    }
    dropped = drop_empty_shards(output)
    splits = ", ".join(f"{stats[split]['examples']} {split} examples of {stats[split]['tracks']} tracks" for split in (TRAIN, VALIDATION)
                       if isinstance(stats.get(split), dict))
    announce(
        f"stembeam prepare-dataset: {splits or str(counts['examples_written']) + ' examples'}, {counts['tracks_failed']} tracks failed "
        f"in {timing(started, status.separated if status else 0)}; records under {output} ({len(dropped)} empty shards not kept), "
        f"statistics in {storage.join(output, STATS_FILE)}"
    )
    return exit_status(counts["tracks_failed"], job.view_as(JobOptions).allow_failures)


def drop_empty_shards(output: str) -> list:
    """Remove the record files with no example (a split with fewer examples than --shards, or none
    at all: Beam writes every shard); the uris removed."""
    files = [uri for pattern in ("train-*.tfrecord", "validation-*.tfrecord") for uri in storage.list_matching(output, pattern)]
    empty = [uri for uri in files if storage.stat(uri)[0] == 0]
    storage.delete(empty)
    return empty


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
