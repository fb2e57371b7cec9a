"""How far the float32 job can go (not a test): the U-nets alone against Spleeter's whole graph.

In one process, on the same 30-s songs of ../shared (each a few times over), median seconds per
song of:
  - Spleeter's exported graph (model.meta + checkpoint): STFT, U-nets, masks, inverse STFT;
  - stembeam's U-nets alone (model.segment_graph ``_unets``, batches of 2 segments): the same
    oneDNN float32 convolutions, which float32 stems bit-identical to earlier releases must keep;
  - stembeam's whole separation of the song, ``stembeam.Separator.separate`` (what `stembeam
    separate` runs: STFT, U-nets, numpy masks and inverse STFT on every core, overlap-add), in
    float32 and, on a CPU with bfloat16 instructions, in bfloat16, each as a % of the official
    graph's wall on the same song (the jobs take turns within each round);
and the CPU seconds of each (process user + system time); then the masks, inverse FFT and
overlap-add of one batch of 2 segments, in the TF graph (the release before issue 23) and in
numpy (model.synthesis, the same bits). A job over N such songs needs at
least N times the U-nets' wall on these cores, whatever else it overlaps, so the ratio of the
official graph to the U-nets bounds any exact job's gain over the official graph job.
Usage: .venv/bin/python -m tests.benchmarks.unet_floor [--rounds 5] [--no-bfloat16]
"""
from __future__ import annotations

import argparse
import functools
import os
import resource
import statistics
import time


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed(function, rounds: int) -> tuple:
    function()  # first call: graph optimisation, oneDNN primitives
    walls, cpus = [], []
    for _ in range(rounds):
        start, cpu = time.perf_counter(), _cpu()
        function()
        walls.append(time.perf_counter() - start)
        cpus.append(_cpu() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-bfloat16", dest="bfloat16", action="store_false", help="skip Separator('spleeter:2stems', precision='bfloat16')")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    import stembeam
    from stembeam.model.decode import load_audio
    from stembeam.model.precision import effective_precision
    from stembeam.model.separation import segment_count, segment_waveform
    from tests.conftest import CC0, CC0_SONGS, MODELS
    from tests.reference_graph import OfficialGraph

    official = OfficialGraph(os.path.join(MODELS, "2stems"))
    api = stembeam.Separator("spleeter:2stems")
    config, separator = api.config, api._separator  # noqa: SLF001 - the U-nets alone
    apis = {"float32": api}
    if args.bfloat16 and effective_precision("bfloat16") == "bfloat16":
        apis["bfloat16"] = stembeam.Separator("spleeter:2stems", precision="bfloat16")
    cpu_name = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    print(f"{cpu_name}, {os.cpu_count()} cores; median of {args.rounds} rounds per 30-s song, the jobs in turn within each round; wall / CPU seconds")
    totals = {"official": 0.0, "unets": 0.0, **{name: 0.0 for name in apis}}
    for song in CC0_SONGS:
        waveform = load_audio(os.path.join(CC0, song, "mixture.flac"))
        spans = np.stack([segment_waveform(waveform, i, config) for i in range(segment_count(len(waveform), config))])
        mixes = [separator._analysis(tf.constant(spans[i : i + 2]))[1] for i in range(0, len(spans), 2)]  # noqa: SLF001

        def unets_alone():
            for mix in mixes:
                separator._unets(mix).numpy()  # noqa: SLF001

        jobs = {"official": lambda: official.separate(waveform), "unets": unets_alone,
                **{name: functools.partial(separating.separate, waveform) for name, separating in apis.items()}}
        found = _interleaved(jobs, args.rounds)
        for key, (wall, _) in found.items():
            totals[key] += wall
        line = (f"{song:12s} ({len(spans)} segments)  official graph {found['official'][0]:.3f} / {found['official'][1]:.3f}   "
                f"U-nets alone {found['unets'][0]:.3f} / {found['unets'][1]:.3f}   "
                f"stembeam separation {found['float32'][0]:.3f} / {found['float32'][1]:.3f} "
                f"({100 * found['float32'][0] / found['official'][0]:.0f} % of the official graph's wall)")
        if "bfloat16" in found:
            line += f"   bfloat16 {found['bfloat16'][0]:.3f} / {found['bfloat16'][1]:.3f} ({100 * found['bfloat16'][0] / found['official'][0]:.0f} %)"
        print(line, flush=True)
    print(f"U-nets alone: {100 * totals['unets'] / totals['official']:.0f} % of the official graph's wall; "
          f"stembeam's separation (Separator.separate, float32): {100 * totals['float32'] / totals['official']:.0f} %"
          + (f"; bfloat16: {100 * totals['bfloat16'] / totals['official']:.0f} %" if "bfloat16" in totals else ""))
    print(f"bound on an exact job's speed-up over the official graph's separation: {totals['official'] / totals['unets']:.2f}x "
          "(before either job's start-up, decoding and writing)")

    from stembeam.model import synthesis

    spec, mix = separator._analysis(tf.constant(spans[:2]))  # noqa: SLF001
    sources = separator._unets(mix)  # noqa: SLF001
    spec_np, sources_np = spec.numpy(), sources.numpy()
    graph = _timed(lambda: separator._synthesis(spec, sources).numpy(), 3 * args.rounds)  # noqa: SLF001
    numpy_pass = _timed(lambda: synthesis.synthesize(spec_np, sources_np, separator._window, config), 3 * args.rounds)  # noqa: SLF001
    print(f"masks + inverse STFT + overlap-add, batch of 2 segments: TF graph {1000 * graph[0]:.0f} ms wall / {1000 * graph[1]:.0f} ms CPU, "
          f"numpy {1000 * numpy_pass[0]:.0f} ms wall / {1000 * numpy_pass[1]:.0f} ms CPU")
    return 0


def _interleaved(jobs: dict, rounds: int) -> dict:
    """``{name: (median wall, median CPU seconds)}``, each job once per round, in turn (so a
    busy machine slows them alike), after one untimed call each."""
    for function in jobs.values():
        function()
    walls, cpus = {name: [] for name in jobs}, {name: [] for name in jobs}
    for _ in range(rounds):
        for name, function in jobs.items():
            start, cpu = time.perf_counter(), _cpu()
            function()
            walls[name].append(time.perf_counter() - start)
            cpus[name].append(_cpu() - cpu)
    return {name: (statistics.median(walls[name]), statistics.median(cpus[name])) for name in jobs}


if __name__ == "__main__":
    raise SystemExit(main())
