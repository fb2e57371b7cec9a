"""ReadManifest: CSV, JSON Lines and Parquet; aliases, defaults, duplicates, relative paths, --limit."""
import json
import os

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from stembeam.transforms.manifest import ReadManifest
from stembeam.transforms.records import Track, default_track_id, safe_component

pytestmark = pytest.mark.fast

ROWS = [
    {"uri": "/data/a.flac", "track_id": "a", "offset": "1.5", "duration": "10"},
    {"path": "b.mp3", "track_id": "", "offset": "", "duration": ""},
    {"uri": "/data/c.wav", "track_id": "a", "offset": "", "duration": ""},
]


def _write(tmp_path, kind):
    if kind == "csv":
        path = tmp_path / "m.csv"
        path.write_text("uri,path,track_id,offset,duration\n/data/a.flac,,a,1.5,10\n,b.mp3,,,\n/data/c.wav,,a,,\n")
    elif kind == "jsonl":
        path = tmp_path / "m.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    else:
        path = tmp_path / "m.parquet"
        pq.write_table(pa.Table.from_pylist([{k: r.get(k) or None for k in ("uri", "path", "track_id", "offset", "duration")} for r in ROWS]), path)
    return str(path)


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_manifest_formats(tmp_path, kind):
    manifest = _write(tmp_path, kind)
    b_uri = str(tmp_path / "b.mp3")
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        out = p | ReadManifest(manifest)
        assert_that(out["tracks"], equal_to([
            Track("a", "/data/a.flac", 1.5, 10.0, 1),
            Track(default_track_id(b_uri), b_uri, 0.0, None, 2),  # id from the resolved uri
        ]), label="tracks")
        assert_that(out["errors"], equal_to([("a", "/data/c.wav", "manifest row 3: duplicate track_id 'a' (first at row 1)")]), label="errors")


def test_limit(tmp_path):
    with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
        out = p | ReadManifest(_write(tmp_path, "csv"), limit=1)
        assert_that(out["tracks"], equal_to([Track("a", "/data/a.flac", 1.5, 10.0, 1)]))


def test_track_ids_are_safe_folder_names():
    assert default_track_id("gs://b/x/song.mp3") == default_track_id("gs://b/x/song.mp3") != default_track_id("gs://b/y/song.mp3")
    for hostile in ("../../x", "/etc/passwd", "-rf", ".", "..", "a/b\\c"):
        safe = safe_component(hostile)
        assert "/" not in safe and "\\" not in safe and not safe.startswith((".", "-"))


def test_distinct_ids_get_distinct_folders():
    ids = ["a/b", "a_b", "a:b", "../../x", ".._.._x", "plain-id"]
    folders = [Track(i, "/x.wav").folder_name for i in ids]
    assert len(set(folders)) == len(ids)
    assert Track("plain-id", "/x.wav").folder_name == "plain-id"  # safe ids are kept as they are


def test_case_twins_and_long_ids_get_distinct_short_folders():
    """macOS and Windows ignore case: "Song" and "song" must not share a folder; a 100-character
    CJK id (300 bytes) must fit a file name (255 bytes)."""
    twins = [Track(i, "/x.wav").folder_name for i in ("Song", "song", "SONG")]
    assert len({name.casefold() for name in twins}) == 3
    cjk = ["\u66f2" * 100, "\u66f2" * 99 + "\u6b4c"]
    folders = [Track(i, "/x.wav").folder_name for i in cjk]
    assert all(len(name.encode("utf-8")) <= 200 for name in folders)
    assert folders[0] != folders[1]


def test_same_file_name_in_two_album_manifests_gets_two_ids(tmp_path):
    """Two per-album manifests that both list ``01.flac``: the default ids differ."""
    manifests = []
    for album in ("album1", "album2"):
        (tmp_path / album).mkdir()
        (tmp_path / album / "m.csv").write_text("uri\n01.flac\n")
        manifests.append(str(tmp_path / album / "m.csv"))
    ids = []
    for manifest in manifests:
        with beam.Pipeline(options=PipelineOptions(["--runner=DirectRunner"])) as p:
            out = p | ReadManifest(manifest)
            expected = str(tmp_path / os.path.basename(os.path.dirname(manifest)) / "01.flac")
            assert_that(out["tracks"], equal_to([Track(default_track_id(expected), expected, 0.0, None, 1)]))
        ids.append(default_track_id(expected))
    assert ids[0] != ids[1]
