"""Start-up of a job's model side (not a test): imports, model build and trace, in fresh processes.

Each round runs, in a new interpreter, what an in-process corpus job does before its first batch
(``import stembeam.pipeline.corpus, stembeam.model.load``, ``load_model('spleeter:2stems')``,
the separator's trace), once with Python's collector paused as the job pauses it
(model.startup.collector_paused) and once with the collector on throughout, in turn; prints the
median wall seconds of each and the collections the second one ran.
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
from stembeam.pipeline.startup import collector_paused
paused = collector_paused() if sys.argv[1] == "paused" else contextlib.nullcontext()
with paused:
    import stembeam.pipeline.corpus, stembeam.model.load
    from stembeam.model.segment_graph import SegmentSeparator
    config, model = stembeam.model.load.load_model("spleeter:2stems")
    SegmentSeparator(model, config).warm_up()
print(json.dumps({"seconds": time.perf_counter() - start, "collections": collections["n"]}))
"""


def _run(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", _PROBE, mode], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    found = {"paused": [], "on": []}
    for _ in range(args.rounds):
        for mode in found:
            found[mode].append(_run(mode))
    for mode, runs in found.items():
        seconds = [run["seconds"] for run in runs]
        print(f"collector {mode:6s}: imports + model build + trace {statistics.median(seconds):.2f} s (rounds: "
              + ", ".join(f"{s:.2f}" for s in seconds) + f"), {statistics.median(run['collections'] for run in runs):.0f} collections")
    ratio = statistics.median(r["seconds"] for r in found["on"]) / statistics.median(r["seconds"] for r in found["paused"])
    print(f"collector on / paused: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
