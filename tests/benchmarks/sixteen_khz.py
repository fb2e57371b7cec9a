"""11 kHz vs 16 kHz: `stembeam evaluate` of spleeter:2stems and spleeter:2stems-16kHz on ../shared's
cc0-multitrack songs, then per song and stem the global SDR of the written stems (against the true
vocals and drums + bass + other), museval's median SDR (evaluation/track_medians.csv) and the
share of each stem's energy above 11025 Hz (docs/models.md).

  python -m tests.benchmarks.sixteen_khz [--output DIR]   # reuses DIR/<model>/ when complete
"""
from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys

import numpy as np

MODELS = ("spleeter:2stems", "spleeter:2stems-16kHz")
STEMS = ("vocals", "accompaniment")


def evaluate(model: str, output: str) -> str:
    folder = os.path.join(output, model.replace(":", "_"))
    if not os.path.exists(os.path.join(folder, "evaluation", "track_medians.csv")):
        from tests.conftest import CC0, REPO

        subprocess.run([sys.executable, "-m", "stembeam", "evaluate", "--dataset", CC0, "--output", folder, "--model", model], check=True, cwd=REPO)
    return folder


def stem_files(folder: str) -> dict:
    import pyarrow.parquet as pq

    metadata = os.path.join(folder, "metadata")
    rows = pq.read_table([os.path.join(metadata, f) for f in sorted(os.listdir(metadata))]).to_pylist()
    return {(r["track_id"], r["stem"]): r["stem_uri"] for r in rows if r["status"] == "ok"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="eval_output/16khz")
    args = parser.parse_args(argv)

    from stembeam.model.decode import load_audio
    from tests.band_energy import high_band_share
    from tests.conftest import CC0, CC0_SONGS, read_wav, snr_db

    results = {}
    for model in MODELS:
        folder = evaluate(model, args.output)
        files = stem_files(folder)
        with open(os.path.join(folder, "evaluation", "track_medians.csv"), newline="") as handle:
            museval = {(r["track_id"], r["stem"]): float(r["SDR"]) for r in csv.DictReader(handle)}
        for song in CC0_SONGS:
            true = {name: load_audio(os.path.join(CC0, song, f"{name}.flac")) for name in ("vocals", "drums", "bass", "other")}
            references = {"vocals": true["vocals"], "accompaniment": true["drums"] + true["bass"] + true["other"]}
            for stem in STEMS:
                estimate = read_wav(files[song, stem])
                results[model, song, stem] = (snr_db(references[stem], estimate), museval[song, stem], high_band_share(estimate))
            results["mixture", song, "mixture"] = high_band_share(load_audio(os.path.join(CC0, song, "mixture.flac")))
            results["true", song, "vocals"] = high_band_share(references["vocals"])
            results["true", song, "accompaniment"] = high_band_share(references["accompaniment"])

    base, wide = MODELS
    print("| song | stem | global SDR 11 kHz | global SDR 16 kHz | museval SDR 11 kHz | museval SDR 16 kHz |")
    print("|---|---|---:|---:|---:|---:|")
    for song in CC0_SONGS:
        for stem in STEMS:
            b, w = results[base, song, stem], results[wide, song, stem]
            print(f"| {song} | {stem} | {b[0]:.2f} | {w[0]:.2f} | {b[1]:.2f} | {w[1]:.2f} |")
    for stem in STEMS:
        b = [results[base, song, stem] for song in CC0_SONGS]
        w = [results[wide, song, stem] for song in CC0_SONGS]
        print(f"| median | {stem} | {np.median([x[0] for x in b]):.2f} | {np.median([x[0] for x in w]):.2f} "
              f"| {np.median([x[1] for x in b]):.2f} | {np.median([x[1] for x in w]):.2f} |")
    print()
    print("Share of the energy above 11025 Hz (bins > 1024 of a 4096-point STFT):")
    print("| song | mixture | vocals 11 kHz | vocals 16 kHz | true vocals | accomp. 11 kHz | accomp. 16 kHz | true accomp. |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for song in CC0_SONGS:
        cells = [results["mixture", song, "mixture"]]
        for stem in STEMS:
            cells += [results[base, song, stem][2], results[wide, song, stem][2], results["true", song, stem]]
        print(f"| {song} | " + " | ".join(f"{100 * c:.3g} %" if c >= 1e-6 else f"{100 * c:.0e} %" for c in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
