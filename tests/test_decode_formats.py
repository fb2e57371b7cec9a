"""libsndfile decodes WAV, FLAC and AIFF exactly as the release did, format by format.

The release's decoders stay in model/audio.py (tensorflow-io first, then ffmpeg): with
``_sndfile_open`` patched to refuse every file, ``load_audio`` is the release's code path, the
reference every libsndfile decode here must equal bit for bit (samples, spans, errors).
"""
import hashlib
import os
import subprocess
import threading

import numpy as np
import pytest

from stembeam.model import audio
from stembeam.model.audio import AudioDecodeError, decode_to_file, load_audio, read_raw
from tests.conftest import CC0, CC0_SONGS, EXAMPLE, needs_shared

soundfile = pytest.importorskip("soundfile")
RATE = 44100
SECONDS = 7  # more than BLOCK_FRAMES: every file is read in two blocks

pytestmark = needs_shared


@pytest.fixture(scope="module")
def signal():
    """7 s of a real song, with more than 16 bits of detail (for 24/32-bit and float files)."""
    song, rate = soundfile.read(os.path.join(CC0, "2.Lithium", "mixture.flac"), dtype="float64", start=5 * RATE, frames=SECONDS * RATE)
    assert rate == RATE and SECONDS * RATE > audio.BLOCK_FRAMES
    return 0.9 * song + np.random.default_rng(0).standard_normal(song.shape) * 1e-5


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("formats")


def _soundfile_writer(container, subtype, scale=1.0):
    def write(path, signal):
        soundfile.write(path, signal * scale, RATE, format=container, subtype=subtype)

    return write


def _ffmpeg_writer(codec, muxer):
    def write(path, signal):
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "f64le", "-ar", str(RATE), "-ac", str(signal.shape[1]), "-i", "pipe:0", "-c:a", codec, "-f", muxer, path],
            input=np.ascontiguousarray(signal, dtype="<f8").tobytes(), check=True,
        )

    return write


EXTENSIONS = {"wavex": "wav", "rf64": "wav", "aifc": "aiff"}


def _make(folder, signal, name, writer, channels):
    kind = name.split("-")[0]
    path = os.path.join(folder, f"{name}-{channels}ch.{EXTENSIONS.get(kind, kind)}")
    if not os.path.exists(path):
        writer(path, signal[:, :channels] if channels == 2 else signal.mean(axis=1, keepdims=True))
    return path


@pytest.fixture
def calls(monkeypatch):
    """The decoders ``load_audio`` called, in order: "sndfile", "tfio", "ffmpeg"."""
    seen = []
    for name in ("_sndfile_blocks", "_tfio_blocks", "_ffmpeg_blocks"):
        real = getattr(audio, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            seen.append(_name.strip("_").replace("_blocks", ""))
            return _real(*args, **kwargs)

        monkeypatch.setattr(audio, name, spy)
    return seen


def _outcome(path, *args):
    try:
        return "samples", load_audio(path, RATE, *args)
    except AudioDecodeError as error:
        return "error", str(error)


def _release(path, *args, calls=None):
    """``(outcome, decoders used)`` of the release's code path (its decoders, without libsndfile);
    the decoders it used are taken out of ``calls``."""
    start = len(calls) if calls is not None else 0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(audio, "_sndfile_open", lambda path: None)
        result = _outcome(path, *args)
    if calls is None:
        return result, None
    used = calls[start:]
    del calls[start:]
    return result, used


def _assert_same(new, old):
    assert new[0] == old[0], (new, old)
    if new[0] == "error":
        assert new[1] == old[1]
    else:
        assert new[1].dtype == old[1].dtype == np.float32
        assert new[1].shape == old[1].shape
        assert new[1].tobytes() == old[1].tobytes(), f"{np.sum(new[1] != old[1])} samples differ"  # bit for bit


# (name, writer, the release's decoder for it): every case libsndfile now decodes.
SNDFILE_CASES = [
    ("wav-pcm16", _soundfile_writer("WAV", "PCM_16"), "tfio"),
    ("wav-pcm24", _soundfile_writer("WAV", "PCM_24"), "tfio"),
    ("wav-u8", _soundfile_writer("WAV", "PCM_U8"), "tfio"),
    ("wav-float", _soundfile_writer("WAV", "FLOAT"), "tfio"),
    ("wav-float-over-full-scale", _soundfile_writer("WAV", "FLOAT", scale=1.7), "tfio"),
    ("wavex-pcm16", _soundfile_writer("WAVEX", "PCM_16"), "tfio"),
    ("wavex-pcm24-ffmpeg", _ffmpeg_writer("pcm_s24le", "wav"), "tfio"),
    ("wavex-float-ffmpeg", _ffmpeg_writer("pcm_f32le", "wav"), "tfio"),
    ("wavex-u8", _soundfile_writer("WAVEX", "PCM_U8"), "tfio"),
    ("wav-double", _soundfile_writer("WAV", "DOUBLE"), "ffmpeg"),
    ("wavex-double-ffmpeg", _ffmpeg_writer("pcm_f64le", "wav"), "ffmpeg"),
    ("flac-16", _soundfile_writer("FLAC", "PCM_16"), "tfio"),
    ("flac-24", _soundfile_writer("FLAC", "PCM_24"), "tfio"),
    ("flac-8", _soundfile_writer("FLAC", "PCM_S8"), "tfio"),
    ("flac-24-ffmpeg", _ffmpeg_writer("flac", "flac"), "tfio"),  # ffmpeg writes 24 bits from f64 input
    ("aiff-16", _soundfile_writer("AIFF", "PCM_16"), "ffmpeg"),
    ("aiff-24", _soundfile_writer("AIFF", "PCM_24"), "ffmpeg"),
    ("aiff-32", _soundfile_writer("AIFF", "PCM_32"), "ffmpeg"),
    ("aiff-8", _soundfile_writer("AIFF", "PCM_S8"), "ffmpeg"),
    ("aifc-u8", _soundfile_writer("AIFF", "PCM_U8"), "ffmpeg"),
    ("aifc-float", _soundfile_writer("AIFF", "FLOAT"), "ffmpeg"),
    ("aifc-double", _soundfile_writer("AIFF", "DOUBLE"), "ffmpeg"),
    ("aifc-sowt-ffmpeg", _ffmpeg_writer("pcm_s16le", "aiff"), "ffmpeg"),  # little-endian 16-bit
    ("aiff-16-ffmpeg", _ffmpeg_writer("pcm_s16be", "aiff"), "ffmpeg"),
    ("aiff-24-ffmpeg", _ffmpeg_writer("pcm_s24be", "aiff"), "ffmpeg"),
]


@pytest.mark.parametrize("channels", [2, 1], ids=["stereo", "mono"])
@pytest.mark.parametrize("name,writer,release_decoder", SNDFILE_CASES, ids=[case[0] for case in SNDFILE_CASES])
def test_libsndfile_decodes_as_the_release(folder, signal, calls, name, writer, release_decoder, channels):
    path = _make(folder, signal, name, writer, channels)
    old, used = _release(path, calls=calls)
    assert used == (["tfio"] if release_decoder == "tfio" else ["tfio", "ffmpeg"])
    new = _outcome(path)
    assert calls == ["sndfile"]  # no tensorflow-io, no ffmpeg
    _assert_same(new, old)
    assert new[1].shape == (SECONDS * RATE, 2)
    if channels == 1:
        np.testing.assert_array_equal(new[1][:, 0], new[1][:, 1])


# Cases libsndfile leaves to the release's decoder: its samples differ (ogg/vorbis: tensorflow-io's
# own libvorbis, up to 2e-7 off; mp3: minimp3 against mpg123, up to 2e-6 off), the release does
# not read them as samples (32-bit integer wav: tensorflow-io's float32 bit patterns), or they are
# not among the formats switched (u-law wav, RF64: equal to ffmpeg's in a check).
KEPT_CASES = [
    ("ogg-vorbis", _soundfile_writer("OGG", "VORBIS"), ["tfio"]),
    ("mp3", _ffmpeg_writer("libmp3lame", "mp3"), ["tfio"]),
    ("wav-pcm32", _soundfile_writer("WAV", "PCM_32"), ["tfio"]),
    ("wav-ulaw", _soundfile_writer("WAV", "ULAW"), ["tfio", "ffmpeg"]),
    ("rf64-pcm16", _soundfile_writer("RF64", "PCM_16"), ["tfio", "ffmpeg"]),
]


@pytest.mark.parametrize("name,writer,release_decoders", KEPT_CASES, ids=[case[0] for case in KEPT_CASES])
def test_other_formats_keep_the_release_decoder(folder, signal, calls, name, writer, release_decoders):
    path = _make(folder, signal, name, writer, 2)
    new = _outcome(path)
    assert calls == release_decoders
    del calls[:]
    old, used = _release(path, calls=calls)
    assert used == release_decoders
    _assert_same(new, old)


@pytest.mark.parametrize("rate,channels", [(48000, 2), (48000, 1), (22050, 2), (RATE, 6)])
@pytest.mark.parametrize("container", ["WAV", "FLAC", "AIFF"])
def test_resampling_and_downmix_stay_with_ffmpeg(tmp_path, signal, calls, container, rate, channels):
    path = str(tmp_path / f"x.{container.lower()}")
    data = np.tile(signal[: 2 * RATE], (1, 3))[:, :channels]
    soundfile.write(path, data, rate, format="WAVEX" if channels > 2 and container == "WAV" else container, subtype="PCM_16")
    new = _outcome(path)
    assert calls == ["ffmpeg"]  # tensorflow-io, which refused them, is not asked any more
    del calls[:]
    old, used = _release(path, calls=calls)
    assert used == ["tfio", "ffmpeg"]
    _assert_same(new, old)


SPANS = [
    (0.0, None),
    (2.0, 3.0),
    (2, 1),  # ints
    (1 / 3, 2 / 3),  # between samples
    (0.25 / RATE, 1.75 / RATE),
    (27606.5 / RATE, 68329.5 / RATE),  # halves of a sample: round() and ffmpeg's microseconds differ
    (303797.5 / RATE, 78709.5 / RATE),
    (5.10888884466533, 1.0121208308087115),
    (0.6259977324263039, 1.549421768707483),
    (np.float32(0.1), np.float32(0.7)),
    (0.0001, 0.0001),
    (1e-05, 0.5),  # ffmpeg refuses "1e-05"
    (0.5, 2e-05),
    (3.0, 0.0),  # tensorflow-io: nothing; ffmpeg: "-t 0" is no limit
    (6.9, None),
    (6.99999, 5.0),  # duration past the end
    (SECONDS - 1 / RATE, None),  # the last sample
    (float(SECONDS), None),  # offset at the end
    (8.5, 1.0),  # offset past the end
    (1.0, -1.0),
    (-0.5, 1.0),
]


@pytest.fixture(scope="module")
def random_spans():
    rng = np.random.default_rng(3)
    return [(float(rng.uniform(0, SECONDS)), float(rng.uniform(0, 3))) for _ in range(3)] + [
        (float(rng.integers(0, SECONDS * RATE) + 0.5) / RATE, float(rng.integers(1, RATE) + 0.5) / RATE) for _ in range(3)
    ]


SPAN_CASES = [case for case in SNDFILE_CASES if case[0] in ("wav-pcm16", "flac-24", "aiff-16", "wav-double")]


@pytest.mark.parametrize("name,writer,release_decoder", SPAN_CASES, ids=[case[0] for case in SPAN_CASES])
def test_offsets_and_durations_select_the_release_samples(folder, signal, name, writer, release_decoder, random_spans):
    """tensorflow-io's files keep its rule (round(offset * rate), round(duration * rate) samples),
    ffmpeg's keep ffmpeg's (microseconds, then samples), errors included."""
    path = _make(folder, signal, name, writer, 2 if name != "flac-24" else 1)
    for offset, duration in SPANS + random_spans:
        new = _outcome(path, offset, duration)
        old, _ = _release(path, offset, duration)
        try:
            _assert_same(new, old)
        except AssertionError as error:
            raise AssertionError(f"offset {offset!r} duration {duration!r}: {error}") from None


def test_decode_to_file_writes_the_same_samples(folder, signal, tmp_path, calls):
    path = _make(folder, signal, "flac-16", _soundfile_writer("FLAC", "PCM_16"), 2)
    raw = str(tmp_path / "x.raw")
    count = decode_to_file(path, raw, RATE, 1.5, 4.0)
    assert calls == ["sndfile"] and count == 4 * RATE
    np.testing.assert_array_equal(read_raw(raw, 0, count), _release(path, 1.5, 4.0)[0][1])


def _piped(tmp_path, signal, muxer):
    path = str(tmp_path / f"piped.{muxer}")
    with open(path, "wb") as handle:  # a header without sizes, as ffmpeg writes to a pipe
        subprocess.run(
            ["ffmpeg", "-v", "error", "-f", "f64le", "-ar", str(RATE), "-ac", "2", "-i", "pipe:0", "-c:a", "pcm_s16le" if muxer == "wav" else "pcm_s16be", "-f", muxer, "pipe:1"],
            input=np.ascontiguousarray(signal[:RATE], dtype="<f8").tobytes(), stdout=handle, check=True,
        )
    return path


def _cut(fraction, extra=0):
    def make(data):
        return data[: int(len(data) * fraction) + extra]

    return make


def _sync_burst(data):
    middle = len(data) // 2  # fake frame sync codes: libFLAC loses sync
    return data[:middle] + b"\xff\xf8" * 4 + data[middle + 8 :]


BROKEN = [
    # (name, source case, change to its bytes, decoders the new code goes through)
    ("text.wav", None, lambda _: b"these are not the droids\n" * 4, ["tfio", "ffmpeg"]),
    ("text.flac", None, lambda _: b"these are not the droids\n" * 4, ["tfio", "ffmpeg"]),
    ("text.aiff", None, lambda _: b"these are not the droids\n" * 4, ["tfio", "ffmpeg"]),
    ("riff-only.wav", None, lambda _: b"RIFF\x00\x00\x00\x00WAVE", ["tfio", "ffmpeg"]),
    ("header-only.wav", "wav-pcm16", lambda data: data[:44], ["tfio", "ffmpeg"]),
    ("cut-mid-sample.wav", "wav-pcm16", _cut(0.5, 1), ["tfio", "ffmpeg"]),
    ("cut.wav", "wavex-pcm24-ffmpeg", _cut(0.6), ["tfio", "ffmpeg"]),
    ("cut.aiff", "aiff-16", _cut(0.5, 3), ["tfio", "ffmpeg"]),
    ("header-only.flac", "flac-16", lambda data: data[:42], ["sndfile", "tfio", "ffmpeg"]),
    ("cut.flac", "flac-16", _cut(0.5), ["sndfile", "tfio", "ffmpeg"]),
    ("lost-sync.flac", "flac-24", _sync_burst, ["sndfile", "tfio"]),
    ("trailing-junk.wav", "wav-pcm16", lambda data: data + b"junk" * 9, ["tfio"]),
    ("trailing-junk.flac", "flac-16", lambda data: data + b"junk" * 9, ["sndfile"]),
]


@pytest.mark.parametrize("name,source,change,decoders", BROKEN, ids=[case[0] for case in BROKEN])
def test_broken_files_fail_or_fall_back_as_in_the_release(folder, signal, tmp_path, calls, name, source, change, decoders):
    """A header libsndfile has to read around goes the release's way; a file it fails on midway
    falls back to tensorflow-io (then ffmpeg) with nothing of its partial decode kept."""
    data = b""
    if source is not None:
        writer = next(case[1] for case in SNDFILE_CASES if case[0] == source)
        with open(_make(folder, signal, source, writer, 2), "rb") as handle:
            data = handle.read()
    path = str(tmp_path / name)
    with open(path, "wb") as handle:
        handle.write(change(data))
    new = _outcome(path)
    assert calls == decoders
    old, _ = _release(path)
    _assert_same(new, old)
    if new[0] == "error":
        assert new[1].startswith(f"{path}: ")


@pytest.mark.parametrize("muxer", ["wav", "aiff"])
def test_headers_written_to_a_pipe_go_the_release_way(tmp_path, signal, calls, muxer):
    """Sizes of 0xFFFFFFFF or 0: libsndfile reads the samples, the release did not (no samples
    from tensorflow-io, an error from ffmpeg), and still does not."""
    path = _piped(tmp_path, signal, muxer)
    new = _outcome(path)
    assert "sndfile" not in calls
    old, _ = _release(path)
    _assert_same(new, old)
    assert new[0] == "error"


@pytest.mark.parametrize("name", ["empty.wav", "empty.flac", "empty.aiff"])
def test_empty_files_are_refused(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(AudioDecodeError, match=r"empty file \(0 bytes\)"):
        load_audio(str(path))


def test_nan_is_an_error_in_libsndfile_files(tmp_path, calls):
    for container, subtype in (("WAV", "FLOAT"), ("AIFF", "FLOAT"), ("WAV", "DOUBLE")):
        path = str(tmp_path / f"nan.{container.lower()}")
        wave = np.zeros((1000, 2))
        wave[700, 1] = np.nan
        soundfile.write(path, wave, RATE, format=container, subtype=subtype)
        with pytest.raises(AudioDecodeError, match="NaN or Inf"):
            load_audio(path)
    assert calls == ["sndfile"] * 3  # no fallback: every decoder gives the NaN


class _RecordingLock:
    def __init__(self):
        self.acquired = 0
        self._lock = threading.Lock()

    def __enter__(self):
        self.acquired += 1
        return self._lock.__enter__()

    def __exit__(self, *exc):
        return self._lock.__exit__(*exc)


def test_libsndfile_decodes_without_the_tensorflow_io_lock(folder, signal, tmp_path, monkeypatch):
    lock = _RecordingLock()
    monkeypatch.setattr(audio, "_TFIO_LOCK", lock)
    for name, writer, _ in SNDFILE_CASES[:: 4]:
        path = _make(folder, signal, name, writer, 2)
        load_audio(path)
        decode_to_file(path, str(tmp_path / "x.raw"))
    load_audio(os.path.join(CC0, "1.Hydrogen", "mixture.flac"), offset=3.0, duration=2.0)
    assert lock.acquired == 0
    load_audio(_make(folder, signal, "ogg-vorbis", _soundfile_writer("OGG", "VORBIS"), 2))
    assert lock.acquired == 1  # the recorder sees tensorflow-io's use of it


def test_two_threads_decode_at_the_same_time(monkeypatch):
    """Both decodes are inside libsndfile at once: each waits, after its first block, for the
    other to have read one too (which a lock held while decoding, as tensorflow-io's, forbids)."""
    barrier = threading.Barrier(2, timeout=60)
    real = audio._sndfile_blocks

    def meet_after_first_block(*args, **kwargs):
        for index, block in enumerate(real(*args, **kwargs)):
            if index == 0:
                barrier.wait()
            yield block

    monkeypatch.setattr(audio, "_sndfile_blocks", meet_after_first_block)
    paths = [os.path.join(CC0, song, "mixture.flac") for song in CC0_SONGS[:2]]
    results, errors = {}, []

    def decode(path):
        try:
            results[path] = load_audio(path)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=decode, args=(path,)) for path in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and not barrier.broken
    for path in paths:
        assert results[path].shape == (30 * RATE, 2)
        np.testing.assert_array_equal(results[path], soundfile.read(path, dtype="float32")[0])


# sha256 of the float32 samples the release (tensorflow-io) decoded from each file, computed with
# the release's code before libsndfile took over.
RELEASE_SHA256 = {
    os.path.join(CC0, "1.Hydrogen", "mixture.flac"): "d34dc68ab1ea0446134611f786b4364b249801eda96d06ea002d68f72444f278",
    os.path.join(CC0, "2.Lithium", "mixture.flac"): "4e2afb9a3d151a49be0fc27605f8b87bfd2f6ac852f4ac2f3043c5c3080d8cc8",
    os.path.join(CC0, "3.Sodium", "mixture.flac"): "2653bbd59bb8439bfeb3fc42ad4462fec551d5b197c66398ffd5d3a8a568875f",
    EXAMPLE: "9d7cc56d6361d39a4cf8209120d8e472676be9426b6a1c64ba387dc64018f2d4",  # mp3: still tensorflow-io
}


@pytest.mark.parametrize("path", sorted(RELEASE_SHA256), ids=lambda path: os.path.basename(os.path.dirname(path)) or path)
def test_real_songs_decode_to_the_release_samples(calls, path):
    samples = load_audio(path)
    assert calls == (["tfio"] if path == EXAMPLE else ["sndfile"])
    assert samples.dtype == np.float32 and samples.shape == ((479832, 2) if path == EXAMPLE else (30 * RATE, 2))
    assert hashlib.sha256(np.ascontiguousarray(samples, dtype="<f4").tobytes()).hexdigest() == RELEASE_SHA256[path]


def test_a_short_read_falls_back_to_the_release_decoders(folder, signal, calls, monkeypatch):
    """Fewer samples than the header says, without an error from libsndfile: tensorflow-io decodes
    the file as in the release, and none of the partial decode is kept."""
    path = _make(folder, signal, "flac-16", _soundfile_writer("FLAC", "PCM_16"), 2)
    old, _ = _release(path, calls=calls)
    real = soundfile.SoundFile.read
    monkeypatch.setattr(soundfile.SoundFile, "read", lambda self, frames=-1, **kwargs: real(self, frames, **kwargs)[: max(0, frames - 1)])
    new = _outcome(path)
    assert calls == ["sndfile", "tfio"]
    _assert_same(new, old)
