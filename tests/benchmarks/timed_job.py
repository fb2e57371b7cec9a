"""One benchmark job in its own process, as a user runs it, with where its wall time went.

  python -m tests.benchmarks.timed_job REPORT.json pipeline ARGS...   # `stembeam pipeline ARGS`
  python -m tests.benchmarks.timed_job REPORT.json official FILE... --output DIR

``pipeline`` runs ``stembeam pipeline`` (pipeline.cli.main) and writes to REPORT.json the
wall-clock instants of its phases (imports, model load, Beam run) and the job's Beam metrics
(the ``stembeam`` distributions of transforms/timing.py, summed, and its counters).
``official`` is Spleeter's exported graph (model.meta + checkpoint, tests/reference_graph.py)
doing decode -> separate -> write WAV per file, with the same phases.
"""
from __future__ import annotations

import time

STARTED = time.time()  # noqa: E402 - first thing: the process's own code starts here

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402


def _pipeline(argv, marks: dict) -> dict:
    from stembeam.pipeline import cli
    import stembeam.pipeline.corpus as corpus
    import apache_beam as beam

    marks["imported"] = time.time()
    captured = {}
    prepare, run_pipeline, pipeline_run = corpus.prepare_model, corpus.run_pipeline, beam.Pipeline.run

    def timed_prepare(*args, **kwargs):
        marks["model_load_start"] = time.time()
        try:
            return prepare(*args, **kwargs)
        finally:
            marks["model_loaded"] = time.time()

    def timed_run(self, *args, **kwargs):
        marks["run_start"] = time.time()
        return pipeline_run(self, *args, **kwargs)

    def capturing_run_pipeline(*args, **kwargs):
        outcome = run_pipeline(*args, **kwargs)
        marks["run_end"] = time.time()
        captured["result"] = outcome.result
        return outcome

    corpus.prepare_model, corpus.run_pipeline, beam.Pipeline.run = timed_prepare, capturing_run_pipeline, timed_run
    cli.enable_startup_tricks()  # as the `stembeam` command's process (cli.entry) has them
    code = cli.main(["pipeline", *argv])
    if code:
        raise SystemExit(f"stembeam pipeline exited {code}")
    metrics = captured["result"].metrics().query()
    sums, counters = {}, {}
    for item in metrics["distributions"]:
        if item.key.metric.namespace == "stembeam":
            value = item.committed or item.attempted
            sums[item.key.metric.name] = sums.get(item.key.metric.name, 0) + (value.sum if value else 0)
    for item in metrics["counters"]:
        if item.key.metric.namespace == "stembeam":
            counters[item.key.metric.name] = counters.get(item.key.metric.name, 0) + (item.committed or item.attempted or 0)
    return {"stage_ms": sums, "counters": counters}


def _official(argv, marks: dict) -> dict:
    import tensorflow  # noqa: F401 - its import is part of the job's start-up

    from stembeam.model.decode import load_audio
    from stembeam.model.encode import write_audio
    from tests.conftest import MODELS
    from tests.reference_graph import OfficialGraph

    files, output = argv[: argv.index("--output")], argv[argv.index("--output") + 1]
    marks["imported"] = marks["model_load_start"] = time.time()
    graph = OfficialGraph(os.path.join(MODELS, "2stems"))
    marks["model_loaded"] = marks["run_start"] = time.time()
    stages = {"decode_ms": 0.0, "graph_ms": 0.0, "encode_ms": 0.0}
    for i, path in enumerate(files):
        start = time.perf_counter()
        waveform = load_audio(path)
        decoded = time.perf_counter()
        stems = graph.separate(waveform)
        separated = time.perf_counter()
        for stem, signal in stems.items():
            write_audio(os.path.join(output, f"track{i:03d}", f"{stem}.wav"), signal)
        stages["decode_ms"] += 1000 * (decoded - start)
        stages["graph_ms"] += 1000 * (separated - decoded)
        stages["encode_ms"] += 1000 * (time.perf_counter() - separated)
    marks["run_end"] = time.time()
    return {"stage_ms": stages, "counters": {}}


def main(argv) -> int:
    report, kind, rest = argv[0], argv[1], argv[2:]
    marks = {"started": STARTED}
    found = (_pipeline if kind == "pipeline" else _official)(rest, marks)
    marks["end"] = time.time()
    with open(report, "w") as handle:
        json.dump({"marks": marks, **found}, handle)
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    if sys.argv[2] == "pipeline":
        from stembeam.pipeline.cli import exit_now

        exit_now(code)  # as the stembeam program ends
    sys.exit(code)
