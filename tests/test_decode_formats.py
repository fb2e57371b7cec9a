"""Each format goes to the decoder that reads it correctly, with the samples earlier releases
separated wherever those were right.

The release's decoders were tensorflow-io first, then ffmpeg: ``_release`` runs exactly that
route (model.decoders with ``decoders=("tfio", "ffmpeg")``) in this process, the reference every
decode here must equal bit for bit (samples, spans) where the release was right. Decodes under
test go through ``decode_to_file``: a decode worker process, as every caller's.
"""
import hashlib
import os
import subprocess
import threading

import numpy as np
import pytest

from stembeam.model import decoders
from stembeam.model.decode import AudioDecodeError, decode_to_file, load_audio, read_raw
from stembeam.model.decode_worker import pool
from stembeam.model.decoders import DecodeRequest
from tests.conftest import CC0, CC0_SONGS, EXAMPLE, needs_shared

soundfile = pytest.importorskip("soundfile")
RATE = 44100
SECONDS = 7  # more than BLOCK_FRAMES: every file is read in two blocks

pytestmark = [needs_shared, pytest.mark.fast]


@pytest.fixture(scope="module")
def signal():
    """7 s of a real song, with more than 16 bits of detail (for 24/32-bit and float files)."""
    song, rate = soundfile.read(os.path.join(CC0, "2.Lithium", "mixture.flac"), dtype="float64", start=5 * RATE, frames=SECONDS * RATE)
    assert rate == RATE and SECONDS * RATE > decoders.BLOCK_FRAMES
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


class _Blocks(list):
    def reset(self):
        self.clear()

    def write(self, block):
        self.append(block)


def _release(path, offset=0.0, duration=None):
    """``(outcome, samples or reason)`` of the release's route: tensorflow-io, then ffmpeg."""
    blocks = _Blocks()
    try:
        decoders.decode(DecodeRequest(path, RATE, offset, duration, decoders=(decoders.TFIO, decoders.FFMPEG)), blocks)
    except AudioDecodeError as error:
        return "error", error.reason
    return "samples", np.concatenate(blocks)


def _new(path, offset=0.0, duration=None, tmp="/tmp"):
    """``(outcome, samples or reason, the decoder that gave them, warnings)`` through a decode worker."""
    raw = os.path.join(str(tmp), f"decoded-{os.getpid()}-{threading.get_ident()}.f32")
    try:
        found = decode_to_file(path, raw, RATE, offset, duration)
    except AudioDecodeError as error:
        return "error", error.reason, None, ()
    try:
        return "samples", read_raw(raw, 0, found.frames), found.decoder, found.warnings
    finally:
        os.remove(raw)


def _assert_same(new, old):
    assert new[0] == old[0], (new[:2], old)
    if new[0] == "samples":
        assert new[1].dtype == old[1].dtype == np.float32
        assert new[1].shape == old[1].shape
        assert new[1].tobytes() == old[1].tobytes(), f"{np.sum(new[1] != old[1])} samples differ"  # bit for bit


# (name, writer, the release's decoder for it): every case libsndfile decodes.
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
def test_libsndfile_decodes_as_the_release(folder, signal, tmp_path, name, writer, release_decoder, channels):
    path = _make(folder, signal, name, writer, channels)
    new = _new(path, tmp=tmp_path)
    assert new[2] == "sndfile" and new[3] == ()  # no tensorflow-io, no ffmpeg, nothing to report
    _assert_same(new, _release(path))
    assert new[1].shape == (SECONDS * RATE, 2)
    if channels == 1:
        np.testing.assert_array_equal(new[1][:, 0], new[1][:, 1])


# Formats that keep the release's decoder and samples: tensorflow-io's own libvorbis and minimp3
# (libsndfile's differ: up to 2e-7 and 2e-6 off), ffmpeg for u-law WAV and RF64 (tensorflow-io
# failed on them, then ffmpeg read them).
KEPT_CASES = [
    ("ogg-vorbis", _soundfile_writer("OGG", "VORBIS"), "tfio"),
    ("mp3", _ffmpeg_writer("libmp3lame", "mp3"), "tfio"),
    ("wav-ulaw", _soundfile_writer("WAV", "ULAW"), "ffmpeg"),
    ("rf64-pcm16", _soundfile_writer("RF64", "PCM_16"), "ffmpeg"),
]


@pytest.mark.parametrize("name,writer,decoder", KEPT_CASES, ids=[case[0] for case in KEPT_CASES])
def test_other_formats_keep_the_release_decoder(folder, signal, tmp_path, name, writer, decoder):
    path = _make(folder, signal, name, writer, 2)
    new = _new(path, tmp=tmp_path)
    assert new[2] == decoder and new[3] == ()
    _assert_same(new, _release(path))


def test_32_bit_integer_pcm_decodes_within_one_lsb_of_libsndfile(folder, signal, tmp_path):
    """The release read 32-bit integer WAV through tensorflow-io as float32 bit patterns (NaN,
    Inf, garbage); libsndfile reads its samples."""
    path = _make(folder, signal, "wav-pcm32", _soundfile_writer("WAV", "PCM_32"), 2)
    new = _new(path, tmp=tmp_path)
    assert new[2] == "sndfile" and new[3] == ()
    integers = soundfile.read(path, dtype="int32")[0].astype(np.float64)
    exact = integers / 2.0**31
    # One LSB of float32's 24-bit precision at full scale: 2**-24 (128 steps of 32-bit PCM).
    assert np.max(np.abs(new[1].astype(np.float64) - exact)) <= 2.0**-24
    np.testing.assert_array_equal(new[1], soundfile.read(path, dtype="float32")[0])  # libsndfile's own read
    assert np.max(np.abs(new[1] - signal.astype(np.float32))) < 1e-6  # the signal written, not bit patterns
    old = _release(path)
    assert old[0] == "error" or np.max(np.abs(old[1] - signal.astype(np.float32))) > 0.1  # what the release did


def test_wavex_mu_law_is_decoded_not_read_as_pcm(folder, signal, tmp_path):
    """tensorflow-io read u-law WAVEX as PCM (noise); ffmpeg decodes it, as it did plain u-law WAV."""
    path = _make(folder, signal, "wavex-ulaw", _soundfile_writer("WAVEX", "ULAW"), 2)
    new = _new(path, tmp=tmp_path)
    assert new[2] == "ffmpeg"
    assert np.corrcoef(new[1][:, 0], signal[:, 0])[0, 1] > 0.999
    assert np.max(np.abs(new[1] - soundfile.read(path, dtype="float32")[0])) < 1e-6


@pytest.mark.parametrize("rate,channels", [(48000, 2), (48000, 1), (22050, 2), (RATE, 6)])
@pytest.mark.parametrize("container", ["WAV", "FLAC", "AIFF"])
def test_resampling_and_downmix_stay_with_ffmpeg(tmp_path, signal, container, rate, channels):
    path = str(tmp_path / f"x.{container.lower()}")
    data = np.tile(signal[: 2 * RATE], (1, 3))[:, :channels]
    soundfile.write(path, data, rate, format="WAVEX" if channels > 2 and container == "WAV" else container, subtype="PCM_16")
    new = _new(path, tmp=tmp_path)
    assert new[2] == "ffmpeg" and new[3] == ()
    _assert_same(new, _release(path))


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
    (6.9, None),
    (6.99999, 5.0),  # duration past the end
    (SECONDS - 1 / RATE, None),  # the last sample
    (float(SECONDS), None),  # offset at the end
    (8.5, 1.0),  # offset past the end
]
# Spans the release took its decoders' own ways (tensorflow-io: nothing, or samples from the end;
# ffmpeg: "-t 0" is no limit); they are refused now, naming the parameter.
BAD_SPANS = [(3.0, 0.0), (1.0, -1.0), (-0.5, 1.0), (float("nan"), None), (0.0, float("inf"))]


@pytest.fixture(scope="module")
def random_spans():
    rng = np.random.default_rng(3)
    return [(float(rng.uniform(0, SECONDS)), float(rng.uniform(0, 3))) for _ in range(3)] + [
        (float(rng.integers(0, SECONDS * RATE) + 0.5) / RATE, float(rng.integers(1, RATE) + 0.5) / RATE) for _ in range(3)
    ]


SPAN_CASES = [case for case in SNDFILE_CASES if case[0] in ("wav-pcm16", "flac-24", "aiff-16", "wav-double")]


@pytest.mark.parametrize("name,writer,release_decoder", SPAN_CASES, ids=[case[0] for case in SPAN_CASES])
def test_offsets_and_durations_select_the_release_samples(folder, signal, tmp_path, name, writer, release_decoder, random_spans):
    """tensorflow-io's files keep its rule (round(offset * rate), round(duration * rate) samples),
    ffmpeg's keep ffmpeg's (microseconds, then samples), errors included."""
    path = _make(folder, signal, name, writer, 2 if name != "flac-24" else 1)
    for offset, duration in SPANS + random_spans:
        new = _new(path, offset, duration, tmp=tmp_path)
        try:
            _assert_same(new, _release(path, offset, duration))
        except AssertionError as error:
            raise AssertionError(f"offset {offset!r} duration {duration!r}: {error}") from None
        if new[0] == "samples":
            assert new[3] == (), (offset, duration, new[3])  # a span is not damage
        elif offset >= SECONDS:
            assert new[1] == f"offset {offset:g} s is at or past its end ({SECONDS:.2f} s long)"
    for offset, duration in BAD_SPANS:
        with pytest.raises(ValueError, match="offset|duration"):
            load_audio(path, RATE, offset, duration)


def test_decode_to_file_writes_the_same_samples(folder, signal, tmp_path):
    path = _make(folder, signal, "flac-16", _soundfile_writer("FLAC", "PCM_16"), 2)
    raw = str(tmp_path / "x.raw")
    found = decode_to_file(path, raw, RATE, 1.5, 4.0)
    assert found.decoder == "sndfile" and found.frames == 4 * RATE and found.claimed_frames == 4 * RATE and found.warnings == ()
    np.testing.assert_array_equal(read_raw(raw, 0, found.frames), _release(path, 1.5, 4.0)[1])


def _piped(tmp_path, signal, muxer):
    path = str(tmp_path / f"piped.{muxer}")
    with open(path, "wb") as handle:  # a header without sizes, as ffmpeg writes to a pipe
        subprocess.run(
            ["ffmpeg", "-v", "error", "-f", "f64le", "-ar", str(RATE), "-ac", "2", "-i", "pipe:0", "-c:a", "pcm_s16le" if muxer == "wav" else "pcm_s16be", "-f", muxer, "pipe:1"],
            input=np.ascontiguousarray(signal[:RATE], dtype="<f8").tobytes(), stdout=handle, check=True,
        )
    return path


@pytest.mark.parametrize("muxer", ["wav", "aiff"])
def test_headers_written_to_a_pipe_are_read_whole(tmp_path, signal, muxer):
    """Sizes of 0xFFFFFFFF or 0 (a header written to a pipe): the release decoded no samples
    (tensorflow-io) or refused the file (ffmpeg); libsndfile reads every frame, as ffmpeg's own
    reader of the stream does."""
    path = _piped(tmp_path, signal, muxer)
    new = _new(path, tmp=tmp_path)
    assert new[0] == "samples" and new[2] == "sndfile" and new[3] == ()
    expected = np.round(np.clip(signal[:RATE], -1, 32767 / 32768) * 32768) / 32768
    np.testing.assert_array_equal(new[1], expected.astype(np.float32))
    assert _release(path)[0] == "error"


@pytest.mark.parametrize("name", ["empty.wav", "empty.flac", "empty.aiff"])
def test_empty_files_are_refused(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(AudioDecodeError, match=r"empty file \(0 bytes\)"):
        load_audio(str(path))


def test_a_fifo_is_not_an_empty_file(tmp_path):
    path = str(tmp_path / "pipe.wav")
    os.mkfifo(path)
    with pytest.raises(AudioDecodeError, match="is a FIFO, not a regular file"):
        load_audio(path)


def test_nan_is_an_error_in_libsndfile_files(tmp_path):
    for container, subtype in (("WAV", "FLOAT"), ("AIFF", "FLOAT"), ("WAV", "DOUBLE")):
        path = str(tmp_path / f"nan.{container.lower()}")
        wave = np.zeros((1000, 2))
        wave[700, 1] = np.nan
        soundfile.write(path, wave, RATE, format=container, subtype=subtype)
        with pytest.raises(AudioDecodeError, match="NaN or Inf"):
            load_audio(path)


def test_two_threads_decode_at_the_same_time_in_two_workers():
    """Decodes of two threads run side by side, each in a worker process of its own."""
    paths = [os.path.join(CC0, song, "mixture.flac") for song in CC0_SONGS[:2]]
    results, errors, barrier = {}, [], threading.Barrier(2, timeout=60)
    workers = pool()

    def decode(path):
        try:
            barrier.wait()
            results[path] = load_audio(path)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=decode, args=(path,)) for path in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len({worker.process.pid for worker in workers._idle}) >= 2  # noqa: SLF001 - the pool's own workers
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
def test_real_songs_decode_to_the_release_samples(tmp_path, path):
    new = _new(path, tmp=tmp_path)
    assert new[2] == ("tfio" if path == EXAMPLE else "sndfile") and new[3] == ()
    samples = new[1]
    assert samples.dtype == np.float32 and samples.shape == ((479832, 2) if path == EXAMPLE else (30 * RATE, 2))
    assert hashlib.sha256(np.ascontiguousarray(samples, dtype="<f4").tobytes()).hexdigest() == RELEASE_SHA256[path]


def test_the_tfio_worker_starts_early_for_mp3_and_ogg_names_and_decodes_the_same_samples(tmp_path):
    """start_tfio_worker starts the pool's tensorflow-io worker only for MP3/Ogg names (before any
    decode, so its TensorFlow import overlaps the caller's model load); the next MP3 decode uses
    that very worker and gives the samples a late-started worker gives."""
    from stembeam.model.decode_worker import WorkerPool, start_tfio_worker

    workers = pool()
    workers.close()  # no worker of an earlier test
    assert start_tfio_worker(["a.wav", "b.flac", "gs://x/c.m4a"]) is False
    assert workers._tfio is None  # noqa: SLF001 - the pool's own worker
    assert start_tfio_worker(["a.wav", "gs://x/SONG.MP3"]) is True
    early = workers._tfio  # noqa: SLF001
    assert early is not None and early.alive() and "--tfio" in early.process.args
    samples = load_audio(EXAMPLE)
    assert workers._tfio is early  # noqa: SLF001 - the same process decoded it
    late = WorkerPool()
    try:
        decoded = late.decode(DecodeRequest(EXAMPLE), str(tmp_path / "late.f32"))[0]
        assert late._tfio is not None  # noqa: SLF001 - started only when the MP3 came
        np.testing.assert_array_equal(np.fromfile(tmp_path / "late.f32", dtype=np.float32).reshape(-1, 2), samples)
        assert decoded.frames == samples.shape[0]
    finally:
        late.close()
