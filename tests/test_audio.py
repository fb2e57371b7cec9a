"""Decoding to 44.1 kHz stereo float32 and atomic writing in every codec."""
import os
import subprocess
import wave

import numpy as np
import pytest

from stembeam.model.encode import CODECS, LOSSLESS_CODECS, write_audio
from stembeam.model.decode import AudioDecodeError, load_audio
from tests.conftest import EXAMPLE, snr_db

pytestmark = pytest.mark.fast


def _tone(seconds=1.0, rate=44100, channels=2, freq=440.0):
    t = np.arange(int(seconds * rate)) / rate
    return np.stack([0.5 * np.sin(2 * np.pi * freq * (c + 1) * t) for c in range(channels)], axis=1).astype(np.float32)


def _ffmpeg_write(path, waveform, rate, layout_args=()):
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "f32le", "-ar", str(rate), "-ac", str(waveform.shape[1]), "-i", "pipe:0", *layout_args, str(path)],
        input=waveform.tobytes(), check=True,
    )


def test_wav_round_trip_is_byte_exact(tmp_path):
    pcm = np.random.default_rng(0).integers(-32768, 32767, (1000, 2), dtype=np.int16)
    path = tmp_path / "x.wav"
    write_audio(str(path), pcm.astype(np.float32) / 32768.0)
    with wave.open(str(path)) as handle:
        assert handle.getframerate() == 44100 and handle.getnchannels() == 2
        assert handle.readframes(1000) == pcm.astype("<i2").tobytes()
    np.testing.assert_array_equal(load_audio(str(path)), pcm.astype(np.float32) / 32768.0)
    assert [n for n in os.listdir(tmp_path)] == ["x.wav"]  # no temporary left


def test_mono_is_duplicated_and_rates_resampled(tmp_path):
    mono = tmp_path / "mono.wav"
    _ffmpeg_write(mono, _tone(channels=1), 44100)
    out = load_audio(str(mono))
    assert out.shape == (44100, 2)
    np.testing.assert_array_equal(out[:, 0], out[:, 1])
    low = tmp_path / "low.wav"
    _ffmpeg_write(low, _tone(rate=22050), 22050)
    out = load_audio(str(low))
    assert abs(out.shape[0] - 44100) <= 64
    spectrum = np.abs(np.fft.rfft(out[4000:40000, 0]))
    assert abs(np.argmax(spectrum) * 44100 / 36000 - 440) < 3  # still a 440 Hz tone


@pytest.mark.parametrize("rate,ext", [(48000, "flac"), (44100, "m4a")])
def test_mono_that_ffmpeg_decodes_is_duplicated_at_full_level(tmp_path, rate, ext):
    """Mono read through ffmpeg (a rate to resample, a format tensorflow-io cannot read) keeps its
    level: ffmpeg's own upmix would put it 3.01 dB lower than the same mono at 44.1 kHz in wav."""
    reference = tmp_path / "mono.wav"
    _ffmpeg_write(reference, _tone(channels=1), 44100)
    other = tmp_path / f"mono.{ext}"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(reference), "-ar", str(rate), "-ac", "1", str(other)], check=True)
    base, out = load_audio(str(reference)), load_audio(str(other))
    np.testing.assert_array_equal(out[:, 0], out[:, 1])
    level = lambda x: 10 * np.log10(np.mean(x[4000:40000].astype(np.float64) ** 2))  # noqa: E731
    assert abs(level(out) - level(base)) < 0.05


def test_surround_is_downmixed_to_stereo(tmp_path):
    path = tmp_path / "surround.flac"
    _ffmpeg_write(path, _tone(channels=6), 44100, ["-channel_layout", "5.1"])
    out = load_audio(str(path))
    assert out.shape == (44100, 2) and np.abs(out).max() > 0.1


def test_offset_and_duration(tmp_path):
    full = load_audio(EXAMPLE)
    part = load_audio(EXAMPLE, offset=2.0, duration=3.0)
    assert part.shape == (3 * 44100, 2)
    np.testing.assert_allclose(part, full[2 * 44100 : 5 * 44100], atol=1e-6)


@pytest.mark.parametrize("codec", sorted(set(CODECS) - {"wav"}))
def test_codecs_write_decodable_files(tmp_path, codec):
    # A chirp (200 Hz to 2 kHz): unlike a steady tone, it lines up with its decoding at one lag only.
    t = np.arange(2 * 44100) / 44100
    chirp = np.sin(2 * np.pi * (200 * t + 450 * t**2))
    tone = (0.5 * np.stack([chirp, np.roll(chirp, 441)], axis=1)).astype(np.float32)
    path = tmp_path / f"tone.{CODECS[codec][0]}"
    write_audio(str(path), tone, codec=codec)
    back = load_audio(str(path))
    assert abs(back.shape[0] - tone.shape[0]) < 4096  # codec priming / padding
    assert os.listdir(tmp_path) == [path.name]
    if codec in LOSSLESS_CODECS:
        # 16-bit like the wav writer: every sample within half a 16-bit step.
        assert back.shape == tone.shape
        assert np.max(np.abs(back - tone)) <= 0.5 / 32768 + 1e-7
        return
    # Lossy: the same tone, aligned for the codec's priming (best lag within 4096 samples).
    n = min(back.shape[0], tone.shape[0]) - 8192
    lags = range(-4096, 4097)
    best = max(lags, key=lambda lag: float(np.dot(tone[4096 : 4096 + n, 0], back[4096 + lag : 4096 + lag + n, 0])))
    aligned = back[4096 + best : 4096 + best + n]
    snr = snr_db(tone[4096 : 4096 + n], aligned)
    print(f"{codec}: lag {best} samples, SNR {snr:.1f} dB")
    assert snr >= 15.0  # a wrong or silent signal gives about 0 dB


def test_directory_is_refused(tmp_path):
    with pytest.raises(AudioDecodeError, match="is a directory"):
        load_audio(str(tmp_path))


def test_concurrent_decodes_return_their_own_files():
    """tensorflow-io alone mixed files up across threads (the multi-threaded DirectRunner decodes in parallel)."""
    import threading

    from tests.conftest import CC0

    files = [EXAMPLE, os.path.join(CC0, "2.Lithium", "mixture.flac")] * 4
    lengths = {}
    threads = [threading.Thread(target=lambda i=i: lengths.__setitem__(i, load_audio(files[i]).shape[0])) for i in range(len(files))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [lengths[i] for i in range(len(files))] == [479832, 1323000] * 4
