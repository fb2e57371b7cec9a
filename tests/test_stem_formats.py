"""Stems in 24-bit and float (--bit_depth), and the residual last stem (--residual), in the
writer, `stembeam separate`, the corpus job (metadata, resume key) and stembeam.Separator."""
import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile

from tests.conftest import EXAMPLE, REPO, needs_shared, run_corpus, stem_folder, write_manifest

SECONDS = 8.0


def _signal(seconds=1.0, seed=0):
    signal = (np.random.RandomState(seed).randn(int(44100 * seconds), 2) * 0.3).astype(np.float32)
    signal[100] = [1.5, -1.7]  # above full scale
    signal[200] = [1.0, -1.0]
    return signal


@pytest.mark.parametrize("codec, bit_depth, subtype, steps", [
    ("wav", 24, "PCM_24", 0.5), ("flac", 24, "PCM_24", 1.0), ("flac", None, "PCM_24", 1.0), ("wav", None, "PCM_16", 0.5),
    ("flac", 16, "PCM_16", 0.5),
])
def test_integer_stems_round_trip_within_a_step(tmp_path, codec, bit_depth, subtype, steps):
    from stembeam.model.encode import write_audio

    signal = _signal()
    path = str(tmp_path / f"stem.{codec}")
    write_audio(path, signal, 44100, codec, bit_depth=bit_depth)
    assert soundfile.info(path).subtype == subtype
    read, _ = soundfile.read(path, dtype="float64")
    bits = int(subtype[-2:])
    inside = np.abs(signal).max(axis=1) < 1.0
    error = np.abs(read - signal)[inside].max() * 2 ** (bits - 1)
    assert 0 < error <= steps  # 24-bit flac (ffmpeg's encoder, the default) truncates: within one step
    assert read.max() == pytest.approx((2 ** (bits - 1) - 1) / 2 ** (bits - 1)) and read.min() == -1.0  # clipped


def test_float_wav_is_exact_and_keeps_peaks_above_full_scale(tmp_path):
    from stembeam.model.encode import AudioWriter

    signal = _signal()
    path = str(tmp_path / "stem.wav")
    with AudioWriter(path, 44100, 2, "wav", None, 32) as writer:
        writer.write(signal)
    assert soundfile.info(path).subtype == "FLOAT"
    read, _ = soundfile.read(path, dtype="float32")
    assert np.array_equal(read, signal)
    assert writer.peak == pytest.approx(1.7)


def test_float_wav_files_of_the_same_stem_are_the_same_bytes(tmp_path):
    # libsndfile's PEAK chunk holds the time of writing: without it, a rerun's file is the same.
    header = open(_float_wav(tmp_path / "a.wav"), "rb").read()
    assert b"PEAK" not in header[:200] and header[36:40] in (b"fact", b"data")
    assert header == open(_float_wav(tmp_path / "b.wav"), "rb").read()
    read, _ = soundfile.read(str(tmp_path / "a.wav"), dtype="float32")
    assert np.array_equal(read, _signal())


def _float_wav(path) -> str:
    from stembeam.model.encode import AudioWriter

    with AudioWriter(str(path), 44100, 2, "wav", None, 32) as writer:
        writer.write(_signal())
    return str(path)


def test_16_bit_flac_holds_the_16_bit_wav_samples(tmp_path):
    from stembeam.model.encode import write_audio

    signal = _signal()
    write_audio(str(tmp_path / "a.wav"), signal)
    write_audio(str(tmp_path / "a.flac"), signal, codec="flac", bit_depth=16)
    assert np.array_equal(soundfile.read(str(tmp_path / "a.wav"), dtype="int16")[0], soundfile.read(str(tmp_path / "a.flac"), dtype="int16")[0])


@pytest.mark.fast
def test_a_bit_depth_the_codec_has_not_is_refused_by_name(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "stembeam", "separate", "-c", "mp3", "--bit_depth", "24", "-o", str(tmp_path), EXAMPLE],
        cwd=REPO, capture_output=True, text=True,
    )
    assert result.returncode == 1
    assert "--bit_depth 24 with --codec mp3" in result.stderr and not os.listdir(tmp_path)


@pytest.fixture(scope="module")
def separator():
    from stembeam import Separator

    return Separator("spleeter:2stems")


@pytest.fixture(scope="module")
def mixture():
    from stembeam.model.decode import load_audio

    return load_audio(EXAMPLE, 44100, 0.0, SECONDS)


def _stems(folder, codec="wav"):
    return {name: soundfile.read(os.path.join(folder, f"{name}.{codec}"), dtype="float32")[0] for name in ("vocals", "accompaniment")}


@needs_shared
def test_pipeline_bit_depth_and_residual_are_in_the_metadata_and_the_resume_key(tmp_path, separator, mixture):
    manifest = write_manifest(tmp_path / "m.csv", [(EXAMPLE, "song", SECONDS)], ("uri", "track_id", "duration"))
    output = tmp_path / "out"
    folder = stem_folder(str(output), "song")
    assert run_corpus(manifest, output) == (1, 0, 0)
    rows = pq.read_table(str(output / "metadata")).to_pylist()
    assert {(row["bit_depth"], row["F"]) for row in rows} == {(16, 1024)}
    assert soundfile.info(os.path.join(folder, "vocals.wav")).subtype == "PCM_16"

    # Another bit depth redoes the track, and the stems are the Separator's within a step.
    assert run_corpus(manifest, output, "--bit_depth", "24") == (1, 0, 0)
    assert run_corpus(manifest, output, "--bit_depth", "24") == (0, 1, 0)
    assert {row["bit_depth"] for row in pq.read_table(str(output / "metadata")).to_pylist()} == {24}
    expected = separator.separate(mixture)
    for name, stem in _stems(folder).items():
        assert soundfile.info(os.path.join(folder, f"{name}.wav")).subtype == "PCM_24"
        assert np.abs(stem - np.clip(expected[name], -1, 1 - 2**-23)).max() <= 0.5 * 2**-23

    # Float stems with --residual: exactly the API's, and they sum to the mixture.
    assert run_corpus(manifest, output, "--bit_depth", "32", "--residual") == (1, 0, 0)
    stems = _stems(folder)
    residual = separator_residual(mixture)
    for name in stems:
        assert np.array_equal(stems[name], residual[name]), name
    assert np.abs(stems["vocals"] + stems["accompaniment"] - mixture).max() <= 2 * np.finfo(np.float32).eps * np.abs(mixture).max()
    assert np.array_equal(stems["vocals"], expected["vocals"])  # only the last stem changes
    assert not np.array_equal(stems["accompaniment"], expected["accompaniment"])
    # Dropping --residual redoes the track again.
    assert run_corpus(manifest, output, "--bit_depth", "32") == (1, 0, 0)
    assert np.array_equal(_stems(folder)["accompaniment"], expected["accompaniment"])


def separator_residual(mixture):
    from stembeam import Separator

    return Separator("spleeter:2stems", residual=True).separate(mixture)


@needs_shared
def test_separate_residual_matches_the_api_and_sums_to_the_mixture(tmp_path, mixture):
    subprocess.run(
        [sys.executable, "-m", "stembeam", "separate", "--residual", "--bit_depth", "32", "-d", str(SECONDS), "-o", str(tmp_path),
         "--no-progress", EXAMPLE],
        cwd=REPO, check=True, capture_output=True,
    )
    stems = _stems(tmp_path / "audio_example")
    expected = separator_residual(mixture)
    assert all(np.array_equal(stems[name], expected[name]) for name in stems)
    assert np.abs(stems["vocals"] + stems["accompaniment"] - mixture).max() <= 2 * np.finfo(np.float32).eps * np.abs(mixture).max()
