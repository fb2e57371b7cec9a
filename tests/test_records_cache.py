"""Records made from a Spleeter dataset CSV (pipeline/prepare.py prepare_split, what `stembeam
train -p CONFIG.json` uses as its training_cache / validation_cache) are reused only while the
CSV's bytes and every listed file's size and modification time are unchanged."""
import dataclasses
import os

import numpy as np

from stembeam.model.config import SPLEETER_2STEMS
from stembeam.model.training import TRAIN

TINY = dataclasses.replace(SPLEETER_2STEMS, name="tiny:2stems", T=64, F=64, conv_n_filters=(4, 8, 8, 16, 16, 16))
FS = 44100


def _noise(path, seed, seconds=3.0):
    import soundfile

    rng = np.random.RandomState(seed)
    soundfile.write(path, (rng.rand(int(seconds * FS), 2) - 0.5).astype(np.float32), FS, subtype="PCM_16")


def _dataset(root):
    """Two songs of noise (mix, vocals, accompaniment) and Spleeter's CSV listing them, with
    paths relative to ``root``."""
    rows = []
    for song in range(2):
        folder = os.path.join(root, "audio", f"song{song}")
        os.makedirs(folder)
        for k, name in enumerate(("mix", "vocals", "accompaniment")):
            _noise(os.path.join(folder, f"{name}.wav"), 10 * song + k)
        rows.append(",".join(os.path.join("audio", f"song{song}", f"{name}.wav") for name in ("mix", "vocals", "accompaniment")) + ",3.0")
    csv_path = os.path.join(root, "train.csv")
    with open(csv_path, "w") as handle:
        handle.write("mix_path,vocals_path,accompaniment_path,duration\n" + "\n".join(rows) + "\n")
    return csv_path, rows


def test_records_of_a_spleeter_csv_are_made_again_when_the_csv_or_its_audio_changes(tmp_path, monkeypatch):
    import stembeam.pipeline.prepare as prepare

    builds = []
    real_build = prepare.build
    monkeypatch.setattr(prepare, "build", lambda *args, **kwargs: builds.append(1) or real_build(*args, **kwargs))
    root = str(tmp_path / "dataset")
    csv_path, rows = _dataset(root)
    records = str(tmp_path / "records")

    def run():
        before = len(builds)
        stats = prepare.prepare_split(prepare.DatasetSource(csv_path, root=root, split=TRAIN), records, TINY, 0)
        return ("built" if len(builds) > before else "reused"), stats[TRAIN]["tracks"]

    assert run() == ("built", 2)
    assert run() == ("reused", 2)
    # A listed file rewritten with other audio of the same length (same size, new mtime).
    stem = os.path.join(root, "audio", "song1", "vocals.wav")
    size = os.path.getsize(stem)
    _noise(stem, 99)
    os.utime(stem, ns=(os.stat(stem).st_atime_ns, os.stat(stem).st_mtime_ns + 2_000_000_000))
    assert os.path.getsize(stem) == size
    assert run() == ("built", 2)
    assert run() == ("reused", 2)
    # The same bytes, only a new modification time (touch).
    mix = os.path.join(root, "audio", "song0", "mix.wav")
    os.utime(mix, ns=(os.stat(mix).st_atime_ns, os.stat(mix).st_mtime_ns + 2_000_000_000))
    assert run() == ("built", 2)
    assert run() == ("reused", 2)
    # The CSV's bytes: one song dropped, the same path, root and config.
    with open(csv_path, "w") as handle:
        handle.write("mix_path,vocals_path,accompaniment_path,duration\n" + rows[0] + "\n")
    assert run() == ("built", 1)
    assert run() == ("reused", 1)


def test_the_stamp_stats_each_listed_path_literally(tmp_path):
    """A listed name with glob characters is stat'ed as it is, not matched as a pattern (here
    ``[ab].wav`` next to a file ``a.wav`` that the pattern would match); a missing file is
    stamped as missing and its appearance changes the stamp."""
    import json

    from stembeam.pipeline.prepare import source_stamp

    root = tmp_path / "dataset"
    root.mkdir()
    _noise(str(root / "a.wav"), 1, seconds=0.1)
    (tmp_path / "dataset" / "train.csv").write_text("mix_path,vocals_path,accompaniment_path\n[ab].wav,a.wav,a.wav\n")
    stamp = json.loads(source_stamp(str(root / "train.csv"), str(root), TRAIN, 0, "mix", TINY))
    assert stamp["files"][str(root / "[ab].wav")] is None
    assert stamp["files"][str(root / "a.wav")] == [os.path.getsize(root / "a.wav"), os.stat(root / "a.wav").st_mtime_ns]
    _noise(str(root / "[ab].wav"), 2, seconds=0.1)
    again = json.loads(source_stamp(str(root / "train.csv"), str(root), TRAIN, 0, "mix", TINY))
    assert again["files"][str(root / "[ab].wav")] == [os.path.getsize(root / "[ab].wav"), os.stat(root / "[ab].wav").st_mtime_ns]
