"""Feature tables never describe stems the metadata no longer lists (issue 20, item 13).

A `pipeline --features` run, then reruns without --features that redo tracks (a changed
manifest row, another codec, and a redoing run killed before it wrote the metadata, whose
tracks the next run skips because their markers now match): after every finished run no
feature row is left for a redone track, and a reader joining metadata to the feature tables
finds no row computed from other stems than the ones the metadata lists.
"""
import glob
import os

import apache_beam as beam
import pyarrow.parquet as pq
import pytest

from tests.conftest import EXAMPLE, needs_shared

pytestmark = needs_shared
TABLES = ("sources", "tracks", "frames")


def _manifest(path, b_duration):
    path.write_text(f"uri,track_id,offset,duration\n{EXAMPLE},a,0.0,3.0\n{EXAMPLE},b,3.0,{b_duration}\n")
    return str(path)


def _run(*argv):
    from stembeam.pipeline.corpus import run

    assert run(list(argv)) == 0


def _metadata(output):
    (path,) = glob.glob(os.path.join(output, "metadata", "*.parquet"))
    return pq.read_table(path).to_pylist()


def _features(output):
    """``{table: rows}`` of the feature tables present."""
    found = {}
    for name in TABLES:
        files = glob.glob(os.path.join(output, "features", f"{name}-*.parquet"))
        if files:
            (path,) = files
            found[name] = pq.read_table(path).to_pylist()
    return found


def _track_ids(output):
    return {name: sorted({row["track_id"] for row in rows}) for name, rows in _features(output).items()}


def _join_problems(output):
    """What a reader joining the metadata (ok stem rows) to the feature tables would get wrong:
    rows of tracks without stems, stem rows whose uri or duration differ from the stem the
    metadata lists, and rows whose ``stems_created_at`` is not the track's latest ``created_at``."""
    stems, latest = {}, {}
    for row in _metadata(output):
        if row["status"] == "ok" and row["stem"]:
            stems[row["track_id"], row["stem"]] = row
            latest[row["track_id"]] = max(latest.get(row["track_id"], row["created_at"]), row["created_at"])
    problems = []
    for name, rows in _features(output).items():
        for row in rows:
            track = row["track_id"]
            if track not in latest:
                problems.append((name, track, "no stems in the metadata"))
                continue
            if row.get("stems_created_at") != latest[track]:
                problems.append((name, track, f"stems_created_at {row.get('stems_created_at')} != {latest[track]}"))
            if name == "sources" and row["source"] != "mixture":
                stem = stems.get((track, row["source"]))
                if stem is None or stem["stem_uri"] != row["source_uri"] or abs(stem["duration_s"] - row["duration_s"]) > 0.01:
                    problems.append((name, track, f"{row['source']}: {row['source_uri']} {row['duration_s']} s vs {stem and (stem['stem_uri'], stem['duration_s'])}"))
    return problems


class _NoMetadata(beam.PTransform):
    """Stands in for WriteMetadata in a run that is killed before its metadata table is written."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def expand(self, rows):
        return rows | "Discard" >> beam.Filter(lambda row: False)


def test_redone_tracks_lose_their_feature_rows(tmp_path, monkeypatch):
    import stembeam.pipeline.corpus as corpus

    output = str(tmp_path / "out")
    first = _manifest(tmp_path / "m1.csv", 3.0)
    _run("--manifest", first, "--output", output, "--features", "--feature_frames", "--feature_plots")
    assert _track_ids(output) == {name: ["a", "b"] for name in TABLES}
    assert sorted(os.listdir(os.path.join(output, "features", "plots"))) == ["a.png", "b.png"]
    assert _join_problems(output) == []

    # b's row changes (another span): b is separated again, a is skipped; no --features.
    second = _manifest(tmp_path / "m2.csv", 2.5)
    _run("--manifest", second, "--output", output)
    assert _track_ids(output) == {name: ["a"] for name in TABLES}  # b's rows are gone, a's kept
    assert sorted(os.listdir(os.path.join(output, "features", "plots"))) == ["a.png"]
    assert _join_problems(output) == []
    kept = _features(output)

    # A rerun with --codec flac is killed once its stems (and markers) are written, before the
    # metadata table and anything after the job: the tables still match the (old) metadata.
    monkeypatch.setattr(corpus, "WriteMetadata", _NoMetadata)
    monkeypatch.setattr(corpus, "drop_stale_tables", lambda output, wanted: (_ for _ in ()).throw(KeyboardInterrupt("killed")))
    with pytest.raises(KeyboardInterrupt):
        _run("--manifest", second, "--output", output, "--codec", "flac")
    monkeypatch.undo()
    markers = {t: os.stat(os.path.join(output, "stems", t, ".stembeam.json")).st_mtime_ns for t in ("a", "b")}
    assert _features(output) == kept and _join_problems(output) == []

    # The next --codec flac run skips both tracks (their markers match) and writes the metadata
    # from the markers: the feature rows, computed from the wav stems, are dropped.
    _run("--manifest", second, "--output", output, "--codec", "flac")
    assert {t: os.stat(os.path.join(output, "stems", t, ".stembeam.json")).st_mtime_ns for t in ("a", "b")} == markers  # skipped
    assert {row["codec"] for row in _metadata(output)} == {"flac"}
    assert _track_ids(output) == {name: [] for name in TABLES}
    assert os.listdir(os.path.join(output, "features", "plots")) == []
    assert _join_problems(output) == []

    # --features on the skipped tracks: rows again, stamped with the stems the markers vouch for.
    _run("--manifest", second, "--output", output, "--codec", "flac", "--features")
    assert _track_ids(output) == {"sources": ["a", "b"], "tracks": ["a", "b"]}
    assert _join_problems(output) == []


def test_features_job_rows_of_a_pipeline_output_carry_its_stems(tmp_path):
    """`stembeam features` over a pipeline output (into the same output) stamps the rows with the
    metadata's stems: a pipeline rerun that redoes nothing keeps them, one that redoes the
    track (--codec flac) drops them."""
    import soundfile

    from stembeam.pipeline.features import run as features_run

    audio, rate = soundfile.read(EXAMPLE, frames=3 * 44100, dtype="float32")
    song = tmp_path / "song.wav"
    soundfile.write(str(song), audio, rate)
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"uri,track_id\n{song},song\n")
    output = str(tmp_path / "out")
    _run("--manifest", str(manifest), "--output", output)
    assert features_run(["--input", output, "--output", output]) == 0
    assert _track_ids(output) == {"sources": ["song"], "tracks": ["song"]} and _join_problems(output) == []
    before = _features(output)
    _run("--manifest", str(manifest), "--output", output)  # skips the track
    assert _features(output) == before
    _run("--manifest", str(manifest), "--output", output, "--codec", "flac")
    assert _track_ids(output) == {"sources": [], "tracks": []} and _join_problems(output) == []
