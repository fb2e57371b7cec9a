"""The Python API: stembeam.Separator gives the CLI's stems, loads and traces once, is safe
from several threads and takes any rate and channel count; stembeam.read_output reads a finished
output back; the README's example runs."""
import concurrent.futures
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile

from tests.conftest import EXAMPLE, REPO, needs_shared, run_corpus, write_manifest

pytestmark = needs_shared

SECONDS = 10.0


@pytest.fixture(scope="module")
def separator():
    import stembeam

    return stembeam.Separator("spleeter:2stems")


@pytest.fixture(scope="module")
def mixture():
    import stembeam

    return stembeam.load_audio(EXAMPLE, duration=SECONDS)


def _traces(separator) -> dict:
    inner = separator._separator  # noqa: SLF001 - the tf.functions behind the calls
    return {name: getattr(inner, name).experimental_get_tracing_count() for name in ("_analysis", "_unets", "_synthesis")}


def test_separate_gives_the_cli_stems_byte_for_byte(tmp_path, separator, mixture):
    from stembeam.model.encode import write_audio

    subprocess.run([sys.executable, "-m", "stembeam", "separate", "-d", str(SECONDS), "-o", str(tmp_path / "cli"), "--no-progress", EXAMPLE],
                   cwd=REPO, check=True, capture_output=True)
    stems = separator.separate(mixture)
    assert list(stems) == ["vocals", "accompaniment"] and all(stem.shape == mixture.shape and stem.dtype == np.float32 for stem in stems.values())
    for name, stem in stems.items():
        write_audio(str(tmp_path / f"{name}.wav"), stem)
        with open(tmp_path / f"{name}.wav", "rb") as ours, open(tmp_path / "cli" / "audio_example" / f"{name}.wav", "rb") as cli:
            assert ours.read() == cli.read(), name


@pytest.mark.fast
def test_calls_in_a_row_and_from_two_threads_are_identical_and_never_trace_again(separator, mixture):
    first = separator.separate(mixture)
    traced = _traces(separator)
    # The masks and inverse STFT of the official models run in numpy (model.synthesis), never traced.
    assert traced == {"_analysis": 1, "_unets": 1, "_synthesis": 0}
    second = separator.separate(mixture)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        threaded = list(pool.map(separator.separate, [mixture, mixture[: 5 * 44100]]))
    for name in first:
        assert np.array_equal(first[name], second[name])
        assert np.array_equal(first[name], threaded[0][name])
    # A shorter input (another batch size) is still the same separation where they overlap in
    # whole segments... so compare it with a call of its own, in a row.
    alone = separator.separate(mixture[: 5 * 44100])
    assert all(np.array_equal(alone[name], threaded[1][name]) for name in alone)
    assert _traces(separator) == traced


@pytest.mark.fast
def test_mono_and_48_khz_inputs_are_separated_as_the_cli_decodes_such_files(tmp_path, separator, mixture):
    import stembeam

    mono = mixture[:, 0].copy()
    stems = separator.separate(mono)
    assert all(stem.shape == (mono.shape[0], 2) for stem in stems.values())
    twin = separator.separate(np.stack([mono, mono], axis=1))  # mono is duplicated at full level
    assert all(np.array_equal(stems[name], twin[name]) for name in stems)

    high = stembeam.load_audio(EXAMPLE, sample_rate=48000, duration=SECONDS)
    soundfile.write(str(tmp_path / "48k.wav"), high, 48000, subtype="FLOAT")
    from_file = stembeam.load_audio(str(tmp_path / "48k.wav"))
    stems = separator.separate(high, sample_rate=48000)
    assert from_file.shape == (int(SECONDS * 44100), 2)
    expected = separator.separate(from_file)
    assert all(stems[name].shape == from_file.shape and np.array_equal(stems[name], expected[name]) for name in stems)

    pcm = np.round(mixture * 32767).astype(np.int16)
    assert np.array_equal(separator.separate(pcm)["vocals"], separator.separate(pcm.astype(np.float32) / 32768.0)["vocals"])
    with pytest.raises(ValueError, match="shape"):
        separator.separate(np.zeros((2, 44100), np.float32))


@pytest.mark.fast
def test_separate_to_file_writes_spleeters_layout(tmp_path, separator):
    written = separator.separate_to_file(EXAMPLE, str(tmp_path), codec="flac", duration=3, filename_format="{instrument}/{filename}.{codec}")
    assert written == {name: str(tmp_path / name / "audio_example.flac") for name in ("vocals", "accompaniment")}
    assert all(soundfile.info(path).frames == 3 * 44100 for path in written.values())


def _readme_example() -> str:
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as handle:
        text = handle.read()
    (block,) = re.findall(r"<!-- python-api-example[^>]*-->\n```python\n(.*?)```", text, re.S)
    return block


def test_readme_example_and_read_output(tmp_path):
    """The README's Python API example, run as written in a folder holding ``examples/`` and a
    `stembeam pipeline --features` output of two tracks (one failing): read_output gives a row
    per track and stem (and mixture) with its features."""
    import stembeam

    os.symlink(os.path.join(REPO, "examples"), tmp_path / "examples")
    manifest = write_manifest(tmp_path / "m.csv", [(EXAMPLE, "song", 8), (str(tmp_path / "missing.wav"), "gone", "")], ("uri", "track_id", "duration"))
    assert run_corpus(manifest, tmp_path / "features_output", "--features") == (1, 0, 1)

    result = subprocess.run([sys.executable, "-c", _readme_example()], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "'vocals': (" in result.stdout and "song" in result.stdout
    assert soundfile.info(str(tmp_path / "separated_audio" / "audio_example" / "vocals.flac")).channels == 2

    table = stembeam.read_output(str(tmp_path / "features_output"))
    rows = {(row["track_id"], row["stem"]): row for row in table.to_pylist()}
    assert list(rows) == [("gone", None), ("song", "mixture"), ("song", "accompaniment"), ("song", "vocals")]  # sorted, mixture first
    for stem in ("vocals", "accompaniment", "mixture"):
        row = rows["song", stem]
        assert row["status_source"] == "ok" and -70 < row["integrated_lufs"] < 0 and len(row["mfcc_mean"]) > 0
        assert row["tempo_bpm"] > 0 and row["status_track"] == "ok"  # the track's features on each row
        assert row["status"] == "ok" and row["model"] == "spleeter:2stems"  # the mixture row too: the track's status
    assert rows["song", "vocals"]["bit_depth"] == 16 and rows["song", "mixture"]["bit_depth"] is None
    assert rows["song", "mixture"]["stem_uri"] == EXAMPLE and rows["song", "mixture"]["duration_s"] == rows["song", "vocals"]["duration_s"]
    assert rows["gone", None]["status"] == "error" and "missing.wav" in rows["gone", None]["error"]
    assert rows["gone", None]["integrated_lufs"] is None
    # One suffix rule: a name two tables share is the metadata's plain, then _source, _track.
    names = set(table.column_names)
    assert {"duration_s", "duration_s_source", "feature_version_source", "feature_version_track", "status_source", "status_track"} <= names
    assert not [name for name in names if name.endswith(("_features", "_track_features"))]
    frame = stembeam.read_output(str(tmp_path / "features_output"), to_pandas=True)
    assert len(frame) == 4 and set(frame["stem"].dropna()) == {"vocals", "accompaniment", "mixture"}
    assert {str(frame[name].dtype) for name in ("sample_rate", "channels", "bit_depth", "F")} == {"Int32"}  # nulls keep them integers
    assert list(frame.loc[frame.status == "ok", "stem"]) == ["mixture", "accompaniment", "vocals"]  # the mixture is not dropped
    assert frame.loc[frame.stem == "vocals", "sample_rate"].iloc[0] == 44100
    legacy = stembeam.read_output(str(tmp_path / "features_output"), legacy_names=True)
    assert {"duration_s_features", "status_features", "status_track_features", "feature_version_track_features"} <= set(legacy.column_names)
    tables = stembeam.read_tables(str(tmp_path / "features_output"))
    assert list(tables) == ["metadata", "sources", "tracks"] and tables["metadata"].num_rows == 3
    assert tables.sources.num_rows == 3 and tables["tracks"].num_rows == 1 and dict(tables)["sources"] is tables.sources
    with pytest.raises(KeyError, match="'frames': this output has the tables metadata, sources, tracks"):
        tables["frames"]
    frames = stembeam.read_tables(str(tmp_path / "features_output"), to_pandas=True)
    assert sorted(frames) == ["metadata", "sources", "tracks"] and str(frames["metadata"]["F"].dtype) == "Int32"
    with pytest.raises(FileNotFoundError, match="no metadata"):
        stembeam.read_output(str(tmp_path))
