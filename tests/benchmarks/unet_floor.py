"""How far the float32 job can go (not a test): the U-nets alone against Spleeter's whole graph.

In one process, on the same 30-s songs of ../shared (each a few times over), median seconds per
song of:
  - Spleeter's exported graph (model.meta + checkpoint): STFT, U-nets, masks, inverse STFT;
  - stembeam's U-nets alone (model.segment_graph ``_unets``, batches of 2 segments): the same
    oneDNN float32 convolutions, which float32 stems bit-identical to earlier releases must keep;
  - stembeam's whole separation of the song (STFT, U-nets, numpy masks and inverse STFT);
and the CPU seconds of each (process user + system time); then the masks, inverse FFT and
overlap-add of one batch of 2 segments, in the TF graph (the release before issue 23) and in
numpy (model.synthesis, the same bits). A job over N such songs needs at
least N times the U-nets' wall on these cores, whatever else it overlaps, so the ratio of the
official graph to the U-nets bounds any exact job's gain over the official graph job.
Usage: .venv/bin/python -m tests.benchmarks.unet_floor [--rounds 5]
"""
from __future__ import annotations

import argparse
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
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from stembeam.model.decode import load_audio
    from stembeam.model.load import load_model
    from stembeam.model.segment_graph import SegmentSeparator
    from stembeam.model.separation import segment_count, segment_waveform
    from tests.conftest import CC0, CC0_SONGS, MODELS
    from tests.reference_graph import OfficialGraph

    official = OfficialGraph(os.path.join(MODELS, "2stems"))
    config, model = load_model("spleeter:2stems")
    separator = SegmentSeparator(model, config)
    separator.warm_up()
    print(f"median of {args.rounds} rounds per 30-s song, 2 cores; wall / CPU seconds")
    totals = {"official": 0.0, "unets": 0.0, "stembeam": 0.0}
    for song in CC0_SONGS:
        waveform = load_audio(os.path.join(CC0, song, "mixture.flac"))
        spans = np.stack([segment_waveform(waveform, i, config) for i in range(segment_count(len(waveform), config))])
        mixes = [separator._analysis(tf.constant(spans[i : i + 2]))[1] for i in range(0, len(spans), 2)]  # noqa: SLF001

        def unets_alone():
            for mix in mixes:
                separator._unets(mix).numpy()  # noqa: SLF001

        def stembeam_separation():
            for i in range(0, len(spans), 2):
                separator.soft(spans[i : i + 2])

        found = {
            "official": _timed(lambda: official.separate(waveform), args.rounds),
            "unets": _timed(unets_alone, args.rounds),
            "stembeam": _timed(stembeam_separation, args.rounds),
        }
        for key, (wall, _) in found.items():
            totals[key] += wall
        print(f"{song:12s} ({len(spans)} segments)  official graph {found['official'][0]:.3f} / {found['official'][1]:.3f}   "
              f"U-nets alone {found['unets'][0]:.3f} / {found['unets'][1]:.3f}   "
              f"stembeam separation {found['stembeam'][0]:.3f} / {found['stembeam'][1]:.3f}")
    print(f"U-nets alone: {100 * totals['unets'] / totals['official']:.0f} % of the official graph's wall; "
          f"stembeam's separation: {100 * totals['stembeam'] / totals['official']:.0f} %")
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


if __name__ == "__main__":
    raise SystemExit(main())
