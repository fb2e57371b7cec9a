"""Start-up of a job's model side (not a test): imports, model build and trace, in fresh processes.

Each round runs, in a new interpreter, what an in-process corpus job does before its first batch
(``import stembeam.pipeline.corpus, stembeam.model.load``, ``load_model('spleeter:2stems')``,
the separator's trace), with each start-up trick of the `stembeam` command (pipeline/startup.py)
on or off, the four combinations in turn: Python's collector paused (collector_paused) and
Keras' optional scikit-learn/matplotlib/Pillow imports left out (hide_keras_optionals). Prints
the median wall seconds of each, the collections run, and what each trick saves alone and with
the other (the issue's bar for keeping one: at least 0.3 s).
Usage: .venv/bin/python -m tests.benchmarks.startup [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from tests.conftest import REPO

_PROBE = """
import contextlib, gc, json, sys, time
start = time.perf_counter()
collections = {"n": 0}
gc.callbacks.append(lambda phase, info: collections.__setitem__("n", collections["n"] + (phase == "stop")))
from stembeam.pipeline.startup import collector_paused, hide_keras_optionals
if "keras" in sys.argv[1]:
    hide_keras_optionals()
paused = collector_paused() if "gc" in sys.argv[1] else contextlib.nullcontext()
with paused:
    import stembeam.pipeline.corpus, stembeam.model.load
    from stembeam.model.segment_graph import SegmentSeparator
    config, model = stembeam.model.load.load_model("spleeter:2stems")
    SegmentSeparator(model, config).warm_up()
print(json.dumps({"seconds": time.perf_counter() - start, "collections": collections["n"]}))
"""

# The tricks each run applies ("gc": collector paused; "keras": Keras' optional imports left out).
MODES = {"none": "", "collector paused": "gc", "keras optionals": "keras", "both (the command)": "gc+keras"}


def _run(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", _PROBE, mode or "-"], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    found = {name: [] for name in MODES}
    for _ in range(args.rounds):
        for name, mode in MODES.items():
            found[name].append(_run(mode))
    median = {name: statistics.median(run["seconds"] for run in runs) for name, runs in found.items()}
    for name, runs in found.items():
        print(f"{name:20s}: imports + model build + trace {median[name]:.2f} s (rounds: "
              + ", ".join(f"{run['seconds']:.2f}" for run in runs) + f"), {statistics.median(run['collections'] for run in runs):.0f} collections")
    print(f"collector paused saves {median['none'] - median['collector paused']:.2f} s alone, "
          f"{median['keras optionals'] - median['both (the command)']:.2f} s beside the other")
    print(f"keras optionals left out save {median['none'] - median['keras optionals']:.2f} s alone, "
          f"{median['collector paused'] - median['both (the command)']:.2f} s beside the other")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
