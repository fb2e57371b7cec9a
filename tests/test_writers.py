"""Writers that a runner may retry, names that cannot leave the output, file modes, the private
model cache and unambiguous estimates (issue 11)."""
import json
import os

import numpy as np
import pytest

from model.config import SPLEETER_2STEMS, ModelConfig
from transforms import spool
from transforms.records import Chunk, Track
from transforms.resume import job_key
from transforms.write import WriteStems

KEY = job_key("spleeter:2stems", "f" * 64, "wav", "128k", "soft")


def _spooled_track(output, track_id="t", samples=44100):
    """A one-segment track whose separated signals sit in the spool: ``(Track, [Chunk])``."""
    track = Track(track_id, "/music/t.wav", source_identity=(10, 1.0))
    uri = spool.spool_uri(output, track, 0)
    signals = np.random.default_rng(0).uniform(-0.5, 0.5, (SPLEETER_2STEMS.segment_samples, 2, 2)).astype(np.float32)
    spool.write_spool(uri, signals)
    return track, [Chunk(track, 0, 1, samples, None, uri)]


def _writer(output, run_id="run1"):
    return WriteStems(SPLEETER_2STEMS, output, KEY, "128k", "test", run_id)


def test_a_retried_bundle_finds_its_track_done(tmp_path):
    """The spool is removed only after the marker: a retry of a finished track (its spool gone)
    yields the same rows from this run's marker instead of an error row."""
    output = str(tmp_path)
    element = _spooled_track(output)
    first = list(_writer(output).process(element))
    assert [r["status"] for r in first] == ["ok", "ok"]
    assert not os.path.exists(element[1][0].spool)
    again = list(_writer(output).process(element))
    assert [(r["stem"], r["status"], r["rms"]) for r in again] == [(r["stem"], r["status"], r["rms"]) for r in first]


def test_another_runs_marker_does_not_make_a_retry(tmp_path):
    """--no_skip_existing: a marker from an earlier run with the same key is rewritten, not trusted."""
    output = str(tmp_path)
    list(_writer(output, "run1").process(_spooled_track(output)))
    marker = os.path.join(output, "stems", "t", ".stembeam.json")
    list(_writer(output, "run2").process(_spooled_track(output)))
    assert json.load(open(marker))["run_id"] == "run2"


def test_disk_and_network_errors_raise_for_a_retry_and_data_errors_are_rows(tmp_path, monkeypatch):
    output = str(tmp_path)
    element = _spooled_track(output)

    def broken_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("transforms.storage.write_bytes_atomic", broken_disk)
    with pytest.raises(OSError, match="No space left"):
        list(_writer(output).process(element))
    assert os.path.exists(element[1][0].spool)  # kept for the retry
    monkeypatch.undo()
    nan = np.full((SPLEETER_2STEMS.segment_samples, 2, 2), np.nan, np.float32)
    spool.write_spool(element[1][0].spool, nan)
    (row,) = list(_writer(output).process(element))
    assert row["status"] == "error" and "NaN or Inf" in row["error"] and "/music/t.wav" in row["error"]


@pytest.mark.parametrize("instruments", [("../../x", "other"), ("/etc/passwd", "b"), (".hidden", "b"), ("-rf", "b"), ("a", "a")])
def test_stem_names_that_would_leave_the_output_are_refused(instruments):
    with pytest.raises(ValueError, match="instrument"):
        ModelConfig(name="mine", instruments=instruments)


def test_a_model_folder_config_with_a_climbing_name_is_refused(tmp_path):
    from model.load import config_for_dir

    config = json.loads(SPLEETER_2STEMS.to_json())
    (tmp_path / "stembeam.json").write_text(json.dumps({**config, "instruments": ["../../x", "accompaniment"]}))
    with pytest.raises(ValueError, match=r"instrument name '\.\./\.\./x'"):
        config_for_dir(str(tmp_path))
    (tmp_path / "stembeam.json").write_text(json.dumps({**config, "name": "../../m"}))
    with pytest.raises(ValueError, match="model name"):
        config_for_dir(str(tmp_path))


def test_file_modes_are_set_without_touching_the_process_umask(tmp_path, monkeypatch):
    """os.umask() is process-wide: reading it that way races with threads creating files."""
    from model.audio import apply_default_mode

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
    from transforms.storage import _private_folder

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
    from pipeline.evaluation import FindEstimates
    from transforms.dataset import DatasetTrack, Signal

    folder = tmp_path / "song"
    folder.mkdir()
    for name in ("vocals.mp3", "vocals.wav", "accompaniment.mp3", "accompaniment.wav"):
        (folder / name).write_bytes(b"x")
    track = DatasetTrack("song", Signal("/d/song/mixture.wav"), (), None)
    (refused,) = list(FindEstimates(str(tmp_path), {"model": "m", "filter": "f"}).process(track))
    assert refused.tag == "tracks" and "several codecs" in refused.value["error"] and "vocals.wav" in refused.value["error"]
    ((_, chosen),) = list(FindEstimates(str(tmp_path), {"model": "m", "filter": "f"}, "wav").process(track))
    assert chosen == {"vocals": str(folder / "vocals.wav"), "accompaniment": str(folder / "accompaniment.wav")}
