"""Query stembeam's feature tables (stembeam.read_output, then pyarrow compute): tracks whose vocals start at or after
20 s with a tempo of 118-128 BPM, loudest (mixture integrated loudness) first.

    python examples/features_query.py OUTPUT [--vocals-after 20] [--tempo-min 118] [--tempo-max 128]

OUTPUT is a `stembeam pipeline --features` or `stembeam features` output (local, or gs://).
"""
from __future__ import annotations

import argparse
import sys

import pyarrow.compute as pc

import stembeam


def query(output: str, vocals_after: float = 20.0, tempo_min: float = 118.0, tempo_max: float = 128.0):
    """``pyarrow.Table`` of track_id, first_vocal_s, tempo_bpm, key, mixture integrated_lufs, loudest first."""
    mixtures = stembeam.read_output(output).filter(pc.field("stem") == "mixture")
    found = mixtures.filter(
        (pc.field("status_track") == "ok") & (pc.field("first_vocal_s") >= vocals_after)
        & (pc.field("tempo_bpm") >= tempo_min) & (pc.field("tempo_bpm") <= tempo_max)
    )
    columns = ["track_id", "first_vocal_s", "tempo_bpm", "key_tonic", "key_mode", "integrated_lufs"]
    return found.select(columns).sort_by([("integrated_lufs", "descending")])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output")
    parser.add_argument("--vocals-after", type=float, default=20.0, help="first vocal segment starts at or after this (s)")
    parser.add_argument("--tempo-min", type=float, default=118.0)
    parser.add_argument("--tempo-max", type=float, default=128.0)
    args = parser.parse_args(argv)
    found = query(args.output, args.vocals_after, args.tempo_min, args.tempo_max)
    print(f"{found.num_rows} tracks with vocals from {args.vocals_after:g} s and {args.tempo_min:g}-{args.tempo_max:g} BPM, loudest first:")
    for row in found.to_pylist():
        print(f"  {row['track_id']:<24} {row['integrated_lufs']:7.2f} LUFS  {row['tempo_bpm']:6.1f} BPM  vocals from {row['first_vocal_s']:5.1f} s  key {row['key_tonic']} {row['key_mode']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
