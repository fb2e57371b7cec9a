"""Query stembeam's feature tables with pyarrow datasets: tracks whose vocals start at or after
20 s with a tempo of 118-128 BPM, loudest (mixture integrated loudness) first.

    python examples/features_query.py OUTPUT [--vocals-after 20] [--tempo-min 118] [--tempo-max 128]

OUTPUT is a `stembeam pipeline --features` or `stembeam features` output (local, or any URI
pyarrow's filesystems read, e.g. gs://bucket/run).
"""
from __future__ import annotations

import argparse
import sys

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs


def table(output: str, name: str) -> ds.Dataset:
    """The ``{output}/features/{name}-*.parquet`` files as one dataset."""
    filesystem, root = pyarrow.fs.FileSystem.from_uri(output.rstrip("/") + "/features")
    files = [info.path for info in filesystem.get_file_info(pyarrow.fs.FileSelector(root)) if info.base_name.startswith(name + "-") and info.base_name.endswith(".parquet")]
    return ds.dataset(sorted(files), format="parquet", filesystem=filesystem)


def query(output: str, vocals_after: float = 20.0, tempo_min: float = 118.0, tempo_max: float = 128.0):
    """``pyarrow.Table`` of track_id, first_vocal_s, tempo_bpm, key, mixture integrated_lufs, loudest first."""
    tracks = table(output, "tracks").to_table(
        columns=["track_id", "first_vocal_s", "tempo_bpm", "key_tonic", "key_mode"],
        filter=(pc.field("status") == "ok") & (pc.field("first_vocal_s") >= vocals_after) & (pc.field("tempo_bpm") >= tempo_min) & (pc.field("tempo_bpm") <= tempo_max),
    )
    loudness = table(output, "sources").to_table(columns=["track_id", "integrated_lufs"], filter=pc.field("source") == "mixture")
    return tracks.join(loudness, "track_id").sort_by([("integrated_lufs", "descending")])


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
