"""Writers that a runner may retry, names that cannot leave the output, file modes, the private
model cache and unambiguous estimates (issue 11)."""
import json
import os

import numpy as np
import pytest

from stembeam.model.config import SPLEETER_2STEMS, ModelConfig
from stembeam.transforms.records import Chunk, Track
from stembeam.transforms.resume import job_key
from stembeam.transforms.stem_files import StemFiles
from stembeam.transforms.write import WriteStems

pytestmark = pytest.mark.fast

KEY = job_key("spleeter:2stems", "f" * 64, "wav", "128k", "soft")
SEGMENT = SPLEETER_2STEMS.segment_samples


def _segments(track_id="t", count=1, samples=44100, value=None):
    """The ``(Chunk reference, [L, 2, 2] signals)`` elements of a ``count``-segment track, in order."""
    track = Track(track_id, f"/music/{track_id}.wav", source_identity=(10, 1.0))
    rng = np.random.default_rng(len(track_id))
    for index in range(count):
        signals = rng.uniform(-0.5, 0.5, (SEGMENT, 2, 2)).astype(np.float32) if value is None else np.full((SEGMENT, 2, 2), value, np.float32)
        yield Chunk(track, index, count, samples), signals


def _writer(output, run_id="run1"):
    writer = WriteStems(SPLEETER_2STEMS, StemFiles(output, KEY, version="test", run_id=run_id))
    writer.start_bundle()
    return writer


def _bundle(writer, elements) -> list:
    """Rows of one bundle: process every element, then finish_bundle (its rows unwrapped)."""
    rows = [row for element in elements for row in writer.process(element)]
    return rows + [value.value for value in writer.finish_bundle() or ()]


def test_a_track_is_written_when_its_last_segment_arrives(tmp_path):
    """Segments of two tracks interleaved as batches leave them (the end of one, the start of the
    next): each track's stems and marker appear when its own last segment is in."""
    output = str(tmp_path)
    writer = _writer(output)
    a, b = list(_segments("a", 3, 2 * SEGMENT)), list(_segments("b", 2, SEGMENT + 5))
    assert list(writer.process(a[0])) == [] and list(writer.process(a[1])) == []
    assert list(writer.process(b[0])) == []
    assert not os.path.exists(os.path.join(output, "stems", "a", ".stembeam.json"))
    rows = list(writer.process(a[2]))
    assert [(r["track_id"], r["status"]) for r in rows] == [("a", "ok"), ("a", "ok")]
    assert os.path.exists(os.path.join(output, "stems", "a", ".stembeam.json"))
    assert not os.path.exists(os.path.join(output, "stems", "b", ".stembeam.json"))
    rows = list(writer.process(b[1])) + [v.value for v in writer.finish_bundle() or ()]
    assert [(r["track_id"], r["duration_s"]) for r in rows] == [("b", (SEGMENT + 5) / 44100)] * 2


def test_a_track_split_across_bundles_is_an_error_row_never_a_partial_track(tmp_path):
    """Segments 0..1 of 3 in one bundle and 2 in the next (a runner splitting a bundle inside a
    track): one error row naming the track (counted once), no stem, no marker, no temporary
    file, whether the next bundle goes to the same writer or another."""
    output = str(tmp_path)
    for name, same_writer in (("split", False), ("split-same", True)):
        segments = list(_segments(name, 3, 2 * SEGMENT))
        writer = _writer(output)
        first = _bundle(writer, segments[:2])
        if same_writer:
            writer.start_bundle()
        second = _bundle(writer if same_writer else _writer(output), segments[2:])
        assert [(r["track_id"], r["status"]) for r in first + second] == [(name, "error")]
        assert "only segments 0..1 of 3 arrived in this bundle" in first[0]["error"] and f"/music/{name}.wav" in first[0]["error"]
        assert not os.path.exists(os.path.join(output, "stems", name))  # its folder, made for it, went with its files
    # Out of order within a bundle: the same.
    swapped = list(_segments("swapped", 3, 2 * SEGMENT))
    rows = _bundle(_writer(output), [swapped[0], swapped[2], swapped[1]])
    assert [(r["track_id"], r["status"]) for r in rows] == [("swapped", "error")]
    assert "segment 2 of 3 arrived after segments 0..0" in rows[0]["error"]
    assert not os.path.exists(os.path.join(output, "stems", "swapped"))


def test_disk_and_network_errors_raise_for_a_retry_and_data_errors_are_rows(tmp_path, monkeypatch):
    output = str(tmp_path)

    def broken_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("stembeam.transforms.storage.write_bytes_atomic", broken_disk)
    with pytest.raises(OSError, match="writing the stems of track t under .*: No space left"):
        _bundle(_writer(output), _segments())
    # No marker vouches for the stems, so the retry (or the next run) writes the track again.
    assert [n for n in os.listdir(os.path.join(output, "stems", "t")) if n.startswith(".tmp-") or n == ".stembeam.json"] == []
    monkeypatch.undo()
    (row,) = _bundle(_writer(output), _segments("u", value=np.nan))
    assert row["status"] == "error" and "NaN or Inf" in row["error"] and "/music/u.wav" in row["error"]
    assert not os.path.exists(os.path.join(output, "stems", "u"))


@pytest.mark.parametrize("instruments", [("../../x", "other"), ("/etc/passwd", "b"), (".hidden", "b"), ("-rf", "b"), ("a", "a")])
def test_stem_names_that_would_leave_the_output_are_refused(instruments):
    with pytest.raises(ValueError, match="instrument"):
        ModelConfig(name="mine", instruments=instruments)


def test_a_model_folder_config_with_a_climbing_name_is_refused(tmp_path):
    from stembeam.model.load import config_for_dir

    config = json.loads(SPLEETER_2STEMS.to_json())
    (tmp_path / "stembeam.json").write_text(json.dumps({**config, "instruments": ["../../x", "accompaniment"]}))
    with pytest.raises(ValueError, match=r"instrument name '\.\./\.\./x'"):
        config_for_dir(str(tmp_path))
    (tmp_path / "stembeam.json").write_text(json.dumps({**config, "name": "../../m"}))
    with pytest.raises(ValueError, match="model name"):
        config_for_dir(str(tmp_path))


def test_file_modes_are_set_without_touching_the_process_umask(tmp_path, monkeypatch):
    """os.umask() is process-wide: reading it that way races with threads creating files."""
    from stembeam.model.encode import apply_default_mode

    mask = os.umask(0o027)
    try:
        monkeypatch.setattr(os, "umask", lambda *_: pytest.fail("os.umask called"))
        path = tmp_path / "f"
        path.write_bytes(b"")
        os.chmod(path, 0o600)
        apply_default_mode(str(path))
        assert os.stat(path).st_mode & 0o777 == 0o640
    finally:
        monkeypatch.undo()
        os.umask(mask)


def test_the_remote_model_cache_is_private(tmp_path, monkeypatch):
    """The local copy of a gs:// model lives in the user's cache, in a 0700 folder; a folder
    there owned by another user is refused, not used."""
    from stembeam.transforms.storage import _private_folder

    folder = _private_folder(str(tmp_path / "cache" / "remote"))
    assert os.stat(folder).st_mode & 0o777 == 0o700
    os.chmod(folder, 0o777)
    assert os.stat(_private_folder(folder)).st_mode & 0o777 == 0o700
    if os.getuid() == 0:
        os.chown(folder, 65534, 65534)
        with pytest.raises(PermissionError, match="owned by uid 65534"):
            _private_folder(folder)


def test_estimates_of_two_codecs_are_refused_unless_a_codec_is_given(tmp_path):
    """After an mp3 run and a wav run into one folder, --estimates must not pick one silently."""
    from stembeam.pipeline.evaluation import FindEstimates
    from stembeam.transforms.dataset import DatasetTrack, Signal

    folder = tmp_path / "song"
    folder.mkdir()
    for name in ("vocals.mp3", "vocals.wav", "accompaniment.mp3", "accompaniment.wav"):
        (folder / name).write_bytes(b"x")
    track = DatasetTrack("song", Signal("/d/song/mixture.wav"), (), None)
    (refused,) = list(FindEstimates(str(tmp_path), {"model": "m", "filter": "f"}).process(track))
    assert refused.tag == "tracks" and "several codecs" in refused.value["error"] and "vocals.wav" in refused.value["error"]
    ((_, chosen),) = list(FindEstimates(str(tmp_path), {"model": "m", "filter": "f"}, "wav").process(track))
    assert chosen == {"vocals": str(folder / "vocals.wav"), "accompaniment": str(folder / "accompaniment.wav")}
