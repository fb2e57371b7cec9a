"""The training-data job: dataset -> random T-frame crops -> sharded TFRecords + stats.json."""
from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from typing import Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
import tensorflow as tf

from model.config import ModelConfig, get_config, load_config_file
from model.training import TRAIN, VALIDATION
from pipeline.jobs import UsageError, announce, dataset_tracks, help_requested, parse, require, run_with_progress, summary, timing
from pipeline.options import EvaluateOptions, PrepareOptions, StembeamOptions
from transforms import storage
from transforms.dataset import ReadDataset
from transforms.progress import DONE, FAILED, MarkProgress, progress_root
from transforms.training_examples import ERRORS, SUMMARY, MakeExamples

LOGGER = logging.getLogger("stembeam.prepare")
STATS_FILE = "stats.json"
CONFIG_FILE = "config.json"
SOURCE_FILE = "source.json"  # what the records were made from, for reuse as a cache


def model_config(value: str) -> ModelConfig:
    """``spleeter:2stems`` (or 4/5 stems) or the path of a configuration JSON (stembeam's or Spleeter's)."""
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

    def process(self, _, summaries, errors):
        stats = statistics(summaries, errors, self._config, self._options)
        storage.write_bytes_atomic(storage.join(self._output, STATS_FILE), json.dumps(stats, indent=2).encode("utf-8"))
        storage.write_bytes_atomic(storage.join(self._output, CONFIG_FILE), self._config.to_json().encode("utf-8"))
        yield stats


def build(
    pipeline: beam.Pipeline, options: PrepareOptions, config: ModelConfig, dataset_uri: str, output: str, limit=None,
    root: Optional[str] = None, split: Optional[str] = None, mix_name: str = "mix",
) -> None:
    """Wire the training-data job's named transforms into ``pipeline``: every split of the
    dataset (``test``/``valid`` tracks become validation records; ``split`` puts every track in
    that split instead, as Spleeter's separate train and validation CSVs do). ``root``: the
    folder a manifest's relative paths start from."""
    dataset = pipeline | "ReadDataset" >> ReadDataset(dataset_uri, "all", limit, root, mix_name)
    tracks = dataset["tracks"]
    if split is not None:
        tracks = tracks | "SetSplit" >> beam.Map(dataclasses.replace, split=split)
    made = tracks | "MakeExamples" >> beam.ParDo(
        MakeExamples(config, options.seed, options.repeat, options.augment, options.mixture_from_stems)
    ).with_outputs(ERRORS, SUMMARY, main="examples")
    for split in (TRAIN, VALIDATION):
        (
            made.examples
            | f"Only{split.title()}" >> beam.Filter(lambda item, wanted: item[0] == wanted, split)
            | f"{split.title()}Bytes" >> beam.Values()
            | f"Write{split.title()}" >> beam.io.WriteToTFRecord(storage.join(output, split), file_name_suffix=".tfrecord", num_shards=options.shards)
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
            _WriteStats(output, config, options), beam.pvalue.AsList(made[SUMMARY]), beam.pvalue.AsList(errors)
        )
    )


def clear_records(output: str) -> None:
    """The folder describes the latest run: drop an earlier run's records and stats."""
    storage.delete_matching(*(storage.join(output, pattern) for pattern in ("train-*.tfrecord", "validation-*.tfrecord", STATS_FILE)))


def prepare_split(csv_uri: str, root: str, output: str, config: ModelConfig, split: str, seed: int, mix_name: str = "mix", beam_args=()) -> dict:
    """Records of one Spleeter dataset CSV (paths relative to ``root``), all in ``split``, under
    ``output``; reused as they are when ``output`` already holds this very CSV's records (Spleeter's
    ``training_cache``/``validation_cache``). Returns the statistics."""
    stamp = json.dumps({"csv": csv_uri, "root": root, "split": split, "seed": seed, "mix_name": mix_name, "config": json.loads(config.to_json())}, sort_keys=True)
    source = storage.join(output, SOURCE_FILE)
    if FileSystems.exists(source) and FileSystems.exists(storage.join(output, STATS_FILE)) and storage.read_bytes(source).decode("utf-8") == stamp:
        return json.loads(storage.read_bytes(storage.join(output, STATS_FILE)))
    options = parse([f"--seed={seed}", *beam_args], "prepare-dataset")
    storage.delete_matching(source)
    clear_records(output)
    pipeline = beam.Pipeline(options=options)
    build(pipeline, options.view_as(PrepareOptions), config, csv_uri, output, root=root, split=split, mix_name=mix_name)
    pipeline.run().wait_until_finish()
    stats = json.loads(storage.read_bytes(storage.join(output, STATS_FILE)))
    storage.write_bytes_atomic(source, stamp.encode("utf-8"))
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
    clear_records(output)
    pipeline = beam.Pipeline(options=options)
    build(pipeline, job, config, dataset, output, limit, options.view_as(EvaluateOptions).dataset_root)
    result, status = run_with_progress(pipeline, options, output, total, {})
    stats = json.loads(storage.read_bytes(storage.join(output, STATS_FILE)))
    # Runners without metrics: the same counts from the stats the job wrote.
    counts = summary(result, ("examples_written", "tracks_failed")) or {
        "examples_written": sum(part["examples"] for part in stats.values() if isinstance(part, dict) and "examples" in part),
        "tracks_failed": len(stats.get("failed", [])),
    }
    print(json.dumps(stats, indent=2), flush=True)
    announce(LOGGER, (
        f"stembeam prepare-dataset: {counts['examples_written']} examples, {counts['tracks_failed']} tracks failed "
        f"in {timing(started, status.separated if status else 0)}; records under {output}"
    ))
    return 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
