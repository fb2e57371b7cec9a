"""Audio decoding (libsndfile, tensorflow-io, ffmpeg fallback) and encoding (wav, ffmpeg codecs).

Decoded audio is ``[samples, 2]`` float32 at the requested rate: mono is
duplicated, more than two channels are downmixed by ffmpeg, other rates resampled.
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
import shutil
import subprocess
import tempfile
import threading
import wave

import numpy as np
from typing import Iterator

CODECS = {
    # codec name -> (file extension, ffmpeg encoder arguments)
    "wav": ("wav", None),
    "flac": ("flac", ["-c:a", "flac"]),
    "mp3": ("mp3", ["-c:a", "libmp3lame"]),
    "ogg": ("ogg", ["-c:a", "libvorbis"]),
    "m4a": ("m4a", ["-c:a", "aac"]),
    "wma": ("wma", ["-c:a", "wmav2"]),
}
# Codecs whose bytes do not depend on the bitrate.
LOSSLESS_CODECS = ("wav", "flac")
# ffmpeg's muxer per codec, where it is not the extension's name.
MUXERS = {"m4a": "mp4", "wma": "asf"}
# Sample formats per lossless codec (--bit_depth), its default first: wav 16-bit (Spleeter's),
# 24 or 32 (IEEE float); flac 24-bit (what ffmpeg's FLAC encoder has always made of the float
# samples) or 16. Lossy codecs have no bit depth: they take the float samples.
BIT_DEPTHS = {"wav": (16, 24, 32), "flac": (24, 16)}
_SOUNDFILE_FORMATS = {("wav", 24): ("WAV", "PCM_24"), ("wav", 32): ("WAV", "FLOAT"), ("flac", 16): ("FLAC", "PCM_16")}


# libsndfile's sf_command code: whether a float WAV gets a PEAK chunk (sndfile.h).
_SFC_SET_ADD_PEAK_CHUNK = 0x1050


def _without_peak_chunk(sound) -> None:
    """No PEAK chunk in the float WAV ``sound`` (a soundfile.SoundFile opened for writing, before
    any sample): libsndfile stamps that chunk with the time of writing, so the same stems made
    different files from run to run. soundfile has no public call for it; its handle is used."""
    import soundfile

    soundfile._snd.sf_command(sound._file, _SFC_SET_ADD_PEAK_CHUNK, soundfile._ffi.NULL, 0)  # noqa: SLF001 - its own handle


def default_bit_depth(codec: str) -> int | None:
    """The bit depth ``codec``'s files get unless told otherwise (None: a lossy codec)."""
    depths = BIT_DEPTHS.get(codec)
    return depths[0] if depths else None


def check_bit_depth(codec: str, bit_depth: int | None) -> None:
    """Raise ValueError unless ``bit_depth`` (None: the codec's default) is one ``codec`` writes."""
    if bit_depth is None or bit_depth == default_bit_depth(codec):
        return
    if bit_depth not in BIT_DEPTHS.get(codec, ()):
        allowed = "; ".join(f"{name}: {' or '.join(map(str, depths))}" for name, depths in BIT_DEPTHS.items())
        raise ValueError(f"bit depth {bit_depth} is not available for {codec} ({allowed}; lossy codecs have none)")


_TFIO_LOCK = threading.Lock()
# Unfinished outputs start with this (and never match a stem name).
TEMP_PREFIX = ".tmp-"


def _umask_from_proc() -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return None


def _umask_at_import() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# os.umask() sets the mask process-wide in order to read it: called while other threads create
# files, it would give them the wrong modes. Linux says it in /proc; elsewhere it is read once,
# at import, before any worker thread runs.
_UMASK = _umask_from_proc()
_UMASK = _umask_at_import() if _UMASK is None else _UMASK


def apply_default_mode(path: str) -> None:
    """Give a file made by mkstemp (0600) the mode a plain open() would (0666 minus the umask),
    so outputs on shared machines are readable by others as usual."""
    mask = _umask_from_proc()
    os.chmod(path, 0o666 & ~(_UMASK if mask is None else mask))


class AudioEncodeError(Exception):
    """The encoder refused the audio or its settings (not a disk or network failure)."""


class AudioDecodeError(Exception):
    """A file that cannot be turned into audio; ``str()`` names the file and the reason."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def _ffmpeg_input(path: str) -> str:
    # The file: protocol keeps names like "-x.mp3" or "a:b.wav" from being read as options/protocols.
    return "file:" + os.path.abspath(path)


def _check_readable(path: str) -> None:
    if not os.path.exists(path):
        raise AudioDecodeError(path, "file not found")
    if os.path.isdir(path):
        raise AudioDecodeError(path, "is a directory, not an audio file")
    if os.path.getsize(path) == 0:
        raise AudioDecodeError(path, "empty file (0 bytes)")


def _to_stereo(waveform: np.ndarray) -> np.ndarray:
    if waveform.shape[1] == 1:
        return np.repeat(waveform, 2, axis=1)
    return waveform[:, :2]


def _scale_to_float(samples: np.ndarray) -> np.ndarray:
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0
    if samples.dtype == np.int32:
        return samples.astype(np.float32) / 2147483648.0
    if samples.dtype == np.uint8:
        return (samples.astype(np.float32) - 128.0) / 128.0
    return samples.astype(np.float32)


BLOCK_FRAMES = 1 << 18  # samples per decoded block (~6 s at 44.1 kHz): bounds decoding memory


def _tfio_blocks(path: str, sample_rate: int, offset: float, duration: float | None) -> Iterator[np.ndarray]:
    """Blocks from tensorflow-io, which decodes slices lazily; only for files at ``sample_rate``
    with one or two channels (ffmpeg resamples and downmixes as a stream)."""
    import tensorflow_io as tfio

    # tensorflow-io readers share state: concurrent or interleaved AudioIOTensors returned another
    # file's samples or failed to seek (seen with the multi-threaded DirectRunner). One file at a
    # time per process, read front to back under the lock.
    with _TFIO_LOCK:
        audio = tfio.audio.AudioIOTensor(path)
        rate, (total, channels) = int(audio.rate.numpy()), (int(d) for d in audio.shape)
        if rate != sample_rate or channels > 2:
            raise ValueError(f"{channels} channels at {rate} Hz: ffmpeg resamples and downmixes")
        start = int(round(offset * rate))
        stop = total if duration is None else min(total, start + int(round(duration * rate)))
        for first in range(start, stop, BLOCK_FRAMES):
            yield _scale_to_float(audio[first : min(first + BLOCK_FRAMES, stop)].numpy())


def _channel_count(path: str) -> int | None:
    """The first audio stream's channel count (ffprobe), or None when it cannot tell."""
    if shutil.which("ffprobe") is None:
        return None
    try:
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=channels", "-of", "csv=p=0", _ffmpeg_input(path)],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )
        return int(probe.stdout.split()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def _ffmpeg_blocks(path: str, sample_rate: int, offset: float, duration: float | None, stream: int | None = None) -> Iterator[np.ndarray]:
    """Stereo float32 blocks streamed from the ffmpeg binary (resampled, downmixed).

    ``stream`` picks one audio stream of a multi-stream file (a ``.stem.mp4``); it is read
    as 16-bit PCM, as musdb/stempeg read MUSDB's stems, so references and mixtures are the
    very samples MUSDB's published scores were computed on.
    """
    if shutil.which("ffmpeg") is None:
        raise AudioDecodeError(path, "tensorflow-io cannot decode it and ffmpeg is not installed")
    cmd = ["ffmpeg", "-nostdin", "-v", "error"]
    if offset:
        cmd += ["-ss", f"{offset}"]
    if duration is not None:
        cmd += ["-t", f"{duration}"]
    cmd += ["-i", _ffmpeg_input(path), "-vn"]
    if stream is not None:
        cmd += ["-map", f"0:a:{stream}"]
    # ffmpeg upmixes mono to stereo at -3 dB (its centre mix level); mono is read as one channel
    # and duplicated at full level instead, as tensorflow-io's mono and Spleeter's are.
    channels = 2 if stream is not None or _channel_count(path) != 1 else 1
    pcm, width = ("s16le", 2 * channels) if stream is not None else ("f32le", 4 * channels)
    cmd += ["-f", pcm, "-acodec", "pcm_" + pcm, "-ac", str(channels), "-ar", str(sample_rate), "pipe:1"]
    # stderr goes to a file: a pipe could fill up on a badly broken file and stall ffmpeg.
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL)
        try:
            while True:
                data = process.stdout.read(BLOCK_FRAMES * width)
                if not data:
                    break
                usable = len(data) - len(data) % width
                if stream is not None:
                    yield np.frombuffer(data[:usable], dtype="<i2").reshape(-1, 2).astype(np.float32) / 32768.0
                else:
                    yield _to_stereo(np.frombuffer(data[:usable], dtype="<f4").reshape(-1, channels))
        finally:
            process.stdout.close()
            code = process.wait() if process.poll() is None else process.returncode
        if code != 0:
            errors.seek(0)
            message = errors.read().decode("utf-8", "replace").strip().splitlines()
            reason = message[-1] if message else f"ffmpeg exited with {code}"
            reason = reason.replace(_ffmpeg_input(path), "").strip(": ")
            raise AudioDecodeError(path, f"not decodable as audio (ffmpeg: {reason})")


# libsndfile reads these (format, subtype) pairs into float32 exactly as the decoder the release
# used for them, bit for bit (tests/test_decode_formats.py compares them format by format):
# "tfio" (tensorflow-io read them) or "ffmpeg" (tensorflow-io cannot read them). Each keeps that
# decoder's rule for which samples an offset and a duration select. libsndfile leaves the rest to
# the release's decoders, which stay in use for:
# - OGG/Vorbis: tensorflow-io's own libvorbis rounds differently (up to 2e-7 off in about half
#   of the samples);
# - MP3: tensorflow-io's minimp3 and libsndfile's mpg123 are different decoders (up to 2e-6 off);
# - 32-bit integer WAV: tensorflow-io reads its samples as float32 bit patterns (NaN, Inf or noise:
#   an error or garbage today, kept as it is);
# - IMA and MS ADPCM wav: other decoders than ffmpeg's (up to 0.03 off, other lengths); WAVEX
#   u-law: tensorflow-io reads it as PCM (noise), kept;
# - u-law and a-law wav/aiff, RF64, W64, CAF, AU: equal to ffmpeg's in a check, but rare and not
#   among the formats switched (their signatures are not tried);
# - any file needing a resampling or a downmix (ffmpeg), and one stream of a .stem.mp4 (ffmpeg);
# - files whose header libsndfile reads around (_header_repaired) or that it fails on midway.
_SNDFILE_SAME_AS = {
    **{(container, subtype): "tfio" for container in ("WAV", "WAVEX") for subtype in ("PCM_U8", "PCM_16", "PCM_24", "FLOAT")},
    **{("FLAC", subtype): "tfio" for subtype in ("PCM_S8", "PCM_16", "PCM_24")},
    **{(container, "DOUBLE"): "ffmpeg" for container in ("WAV", "WAVEX")},
    **{("AIFF", subtype): "ffmpeg" for subtype in ("PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")},
}


class _Release(Exception):
    """libsndfile leaves this file, or this span of it, to the release's decoders."""


def _sndfile_open(path: str):
    """``(SoundFile, rule)`` for a file libsndfile decodes as the release did (see _SNDFILE_SAME_AS),
    else None. Only RIFF/WAVE, FLAC and AIFF/AIFC signatures are tried: libsndfile would also
    open mp3 or ogg files, which the release's decoders keep."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(12)
    except OSError:
        return None
    if not (head[:4] == b"fLaC" or (head[:4] == b"RIFF" and head[8:12] == b"WAVE") or (head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"))):
        return None
    import soundfile

    try:
        sound = soundfile.SoundFile(path)
    except Exception:  # noqa: BLE001 - libsndfile cannot read it: the release's decoders may
        return None
    rule = _SNDFILE_SAME_AS.get((sound.format, sound.subtype))
    if rule is None or _header_repaired(sound.extra_info):
        sound.close()
        return None
    return sound, rule


def _header_repaired(log: str) -> bool:
    """Whether libsndfile's header log says it read around a header that disagrees with the file
    (sizes past the end, a data size of 0xFFFFFFFF from a pipe, junk after the data...): such
    files go the release's way, which did not always read them as libsndfile does (a wav streamed
    by ffmpeg had no samples for tensorflow-io). ``****`` lines are notes, as the missing 'fact'
    chunk of every WAVEX file ffmpeg writes."""
    return any(line.startswith("*** ") or "(should" in line.lower() for line in log.splitlines())


def _tfio_span(rate: int, total: int, offset: float, duration: float | None) -> tuple[int, int]:
    """The samples ``[start, stop)`` _tfio_blocks selects."""
    if not (math.isfinite(offset) and offset >= 0 and (duration is None or math.isfinite(duration))):
        raise _Release("an offset or duration tensorflow-io takes its own way")
    start = int(round(offset * rate))
    return start, total if duration is None else min(total, start + int(round(duration * rate)))


def _ffmpeg_microseconds(value) -> int:
    """The time ffmpeg reads from ``f"{value}"`` (av_parse_time: seconds, decimals cut after the
    sixth); _Release for what it refuses or might read otherwise (exponents, signs, inf, nan)."""
    text = f"{value}"
    whole, dot, decimals = text.partition(".")
    if not text.isascii() or not whole.isdigit() or not (decimals.isdigit() or not dot):
        raise _Release(f"a time ffmpeg may refuse: {text}")
    return int(whole) * 1_000_000 + int((decimals[:6] + "000000")[:6] if dot else 0)


def _ffmpeg_span(rate: int, total: int, offset: float, duration: float | None) -> tuple[int, int]:
    """The samples ``[start, stop)`` _ffmpeg_blocks gives of a PCM file at ``rate`` (no resampling):
    ``-ss`` shifts timestamps by the offset in microseconds rounded to a sample, and the trim after
    it keeps the duration in microseconds rounded to samples (halves away from zero)."""
    start = (_ffmpeg_microseconds(offset) * rate + 500_000) // 1_000_000 if offset else 0
    if duration is None:
        return start, total
    count = (_ffmpeg_microseconds(duration) * rate + 500_000) // 1_000_000
    if count == 0:
        raise _Release("ffmpeg reads -t 0 as no limit")
    return start, min(total, start + count)


def _sndfile_blocks(sound, rule: str, path: str, sample_rate: int, offset: float, duration: float | None) -> Iterator[np.ndarray]:
    """Blocks read by libsndfile, which has no shared state: no lock, decodes in parallel. Only
    for files at ``sample_rate`` with one or two channels; selects the samples the release's
    decoder for this format (``rule``) selects. _Release leaves the file to the release's decoders
    when libsndfile would give no sample (their error) or fewer than its header says (a broken file)."""
    with sound:
        total = sound.frames
        start, stop = (_tfio_span if rule == "tfio" else _ffmpeg_span)(sound.samplerate, total, offset, duration)
        if start >= stop:
            raise _Release("no samples in the span")
        sound.seek(start)
        for first in range(start, stop, BLOCK_FRAMES):
            count = min(BLOCK_FRAMES, stop - first)
            block = sound.read(count, dtype="float32", always_2d=True)
            if block.shape[0] != count:
                raise _Release(f"{block.shape[0]} of {count} samples read at {first}")
            yield block


def _decode(path: str, sample_rate: int, offset: float, duration: float | None, sink, stream: int | None = None) -> int:
    """Feed every decoded ``[k, 2]`` block to ``sink.write``; ``sink.reset()`` before a retry.

    libsndfile for the formats it decodes as the release did (_SNDFILE_SAME_AS); else, or when it
    fails at any point, tensorflow-io; ffmpeg when tensorflow-io fails at any point, or the file
    needs resampling or a downmix, or one ``stream`` of several is asked for. Returns the sample count.
    """
    _check_readable(path)
    with contextlib.ExitStack() as cleanup:
        decoders = (_tfio_blocks, _ffmpeg_blocks) if stream is None else (functools.partial(_ffmpeg_blocks, stream=stream),)
        opened = _sndfile_open(path) if stream is None else None
        if opened is not None:
            sound, rule = cleanup.enter_context(opened[0]), opened[1]
            if sound.samplerate != sample_rate or sound.channels > 2:
                # What tensorflow-io refuses (or cannot read) and ffmpeg resamples or downmixes.
                sound.close()
                decoders = (_ffmpeg_blocks,)
            else:
                decoders = (functools.partial(_sndfile_blocks, sound, rule),) + decoders
        for decoder in decoders:
            frames = 0
            sink.reset()
            try:
                with contextlib.closing(decoder(path, sample_rate, offset, duration)) as blocks:
                    for block in blocks:
                        if block.shape[0] == 0:
                            continue
                        if not np.all(np.isfinite(block)):
                            raise AudioDecodeError(path, "decoded audio contains NaN or Inf")
                        sink.write(np.ascontiguousarray(_to_stereo(block), dtype=np.float32))
                        frames += block.shape[0]
            except AudioDecodeError:
                raise
            except Exception:  # noqa: BLE001 - what libsndfile or tensorflow-io cannot decode goes to the next
                if decoder is decoders[-1]:
                    raise
                continue
            if frames == 0:
                raise AudioDecodeError(path, "no audio samples decoded")
            return frames
    raise AssertionError("unreachable")


class _FileSink:
    def __init__(self, handle):
        self._handle = handle

    def reset(self):
        self._handle.seek(0)
        self._handle.truncate()

    def write(self, block):
        self._handle.write(block.tobytes())


class _ListSink(list):
    def reset(self):
        self.clear()

    def write(self, block):
        self.append(block)


def decode_to_file(
    path: str, raw_path: str, sample_rate: int = 44100, offset: float = 0.0, duration: float | None = None, stream: int | None = None
) -> int:
    """Decode ``path`` into ``raw_path`` (interleaved stereo float32); returns the sample count.

    Memory stays at one block whatever the length, and the whole file is decoded before
    anyone reads it, so a file that breaks half way is an error before any of it is used.
    Raises AudioDecodeError naming the file and the reason.
    """
    with open(raw_path, "wb") as handle:
        return _decode(path, sample_rate, offset, duration, _FileSink(handle), stream)


def read_raw(raw_path: str, start: int, count: int) -> np.ndarray:
    """Samples ``[start, start + count)`` of a decode_to_file output, ``[k, 2]`` (k < count at the end)."""
    with open(raw_path, "rb") as handle:
        handle.seek(start * 8)
        return np.fromfile(handle, dtype="<f4", count=count * 2).reshape(-1, 2)


def load_audio(path: str, sample_rate: int = 44100, offset: float = 0.0, duration: float | None = None, stream: int | None = None) -> np.ndarray:
    """Decode ``path`` (its audio stream ``stream`` if given) to ``[samples, 2]`` float32 at
    ``sample_rate``: the same samples as decode_to_file. Raises AudioDecodeError naming the
    file and the reason (missing, empty, directory, not audio, no samples, NaN/Inf)."""
    blocks = _ListSink()
    _decode(path, sample_rate, offset, duration, blocks, stream)
    return np.concatenate(blocks) if len(blocks) > 1 else blocks[0]


class AudioWriter:
    """Streams ``[k, C]`` float32 blocks into an audio file that appears whole or not at all.

    Blocks go to a temporary name in the target folder (16-bit PCM wav as Spleeter writes
    it, other codecs piped through ffmpeg, 24-bit and float files through libsndfile);
    ``close()`` renames it into place, ``abort()`` removes it. Keeps the written output's
    running ``frames``, ``rms`` and ``peak`` (clipped, except in float files).
    """

    def __init__(self, path: str, sample_rate: int = 44100, channels: int = 2, codec: str = "wav", bitrate: str | None = "128k",
                 bit_depth: int | None = None):
        if codec not in CODECS:
            raise ValueError(f"unknown codec {codec!r}; known: {sorted(CODECS)}")
        check_bit_depth(codec, bit_depth)
        self.path = path
        self.frames = 0
        # None for lossy codecs; their stats are taken as 16-bit ones always were.
        self.bit_depth = default_bit_depth(codec) if bit_depth is None else bit_depth
        self._squares = 0.0
        self._peak = 0.0
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix="." + CODECS[codec][0], dir=folder)
        os.close(fd)
        self._wav = self._ffmpeg = self._errors = self._soundfile = None
        # Full scale of the integer samples written (the 16-bit stats of the codecs' defaults).
        self._scale = 32768.0
        if (codec, bit_depth) in _SOUNDFILE_FORMATS:
            self._scale = float(1 << (bit_depth - 1))
            # The other formats through libsndfile; each codec's default keeps its encoder (wave,
            # ffmpeg), so default stems stay the bytes they always were.
            import soundfile

            container, subtype = _SOUNDFILE_FORMATS[codec, bit_depth]
            self._soundfile = soundfile.SoundFile(self._tmp, "w", sample_rate, channels, subtype, format=container)
            if subtype == "FLOAT":
                _without_peak_chunk(self._soundfile)
            return
        if codec == "wav":
            self._wav = wave.open(self._tmp, "wb")
            self._wav.setnchannels(channels)
            self._wav.setsampwidth(2)
            self._wav.setframerate(sample_rate)
            return
        ext, args = CODECS[codec]
        cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "f32le", "-ar", str(sample_rate), "-ac", str(channels), "-i", "pipe:0"]
        cmd += args
        if bitrate and codec != "flac":
            cmd += ["-b:a", bitrate]
        cmd += ["-f", MUXERS.get(codec, ext), "file:" + os.path.abspath(self._tmp)]
        self._codec = codec
        self._errors = tempfile.TemporaryFile()
        self._ffmpeg = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._errors)

    def write(self, block: np.ndarray) -> None:
        if not np.all(np.isfinite(block)):
            raise AudioEncodeError(f"{self.path}: NaN or Inf in the audio to write")
        # Float files keep peaks above full scale; integer files clip (stats: what the file holds).
        scale = self._scale
        clipped = block if self.bit_depth == 32 else np.clip(block, -1.0, (scale - 1.0) / scale)
        self.frames += block.shape[0]
        self._squares += float(np.sum(np.square(clipped, dtype=np.float64)))
        if clipped.size:
            self._peak = max(self._peak, float(np.max(np.abs(clipped))))
        if self._soundfile is not None:
            if self.bit_depth == 32:
                self._soundfile.write(np.ascontiguousarray(block, dtype=np.float32))
            else:
                # Rounded as 16-bit stems always were; libsndfile keeps the top bits of each int32.
                self._soundfile.write(np.round(clipped * scale).astype(np.int32) << (32 - self.bit_depth))
        elif self._wav is not None:
            self._wav.writeframes(np.round(clipped * 32768.0).astype("<i2").tobytes())
        else:
            self._ffmpeg.stdin.write(np.ascontiguousarray(block, dtype="<f4").tobytes())

    @property
    def rms(self) -> float:
        return float(np.sqrt(self._squares / max(1, self.frames * 2)))

    @property
    def peak(self) -> float:
        return self._peak

    def close(self) -> None:
        """Finish the file and move it into place."""
        try:
            if self._soundfile is not None:
                self._soundfile.close()
            elif self._wav is not None:
                self._wav.close()
            else:
                self._ffmpeg.stdin.close()
                if self._ffmpeg.wait() != 0:
                    self._errors.seek(0)
                    raise AudioEncodeError(f"{self.path}: ffmpeg could not encode {self._codec}: {self._errors.read().decode('utf-8', 'replace').strip()}")
            apply_default_mode(self._tmp)
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop the temporary file."""
        if self._ffmpeg is not None and self._ffmpeg.poll() is None:
            self._ffmpeg.kill()
            self._ffmpeg.wait()
        if self._errors is not None:
            self._errors.close()
        if self._soundfile is not None and not self._soundfile.closed:
            self._soundfile.close()
        if os.path.exists(self._tmp):
            os.remove(self._tmp)

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        if kind is None:
            self.close()
        else:
            self.abort()


def write_audio(path: str, waveform: np.ndarray, sample_rate: int = 44100, codec: str = "wav", bitrate: str | None = "128k",
                bit_depth: int | None = None) -> None:
    """Write ``waveform [samples, C]`` atomically (see AudioWriter; ``bit_depth`` None: the codec's default)."""
    with AudioWriter(path, sample_rate, waveform.shape[1], codec, bitrate, bit_depth) as writer:
        writer.write(waveform)


def decode_blocks(path: str, sample_rate: int = 44100, offset: float = 0.0, duration: float | None = None, stream: int | None = None) -> Iterator[np.ndarray]:
    """Stereo float32 ``[k, 2]`` blocks of ``path`` streamed from ffmpeg (resampled, downmixed;
    ``stream``: one audio stream of several). Memory: one block. Raises AudioDecodeError naming
    the file and the reason (missing, empty, directory, not audio, NaN/Inf, no samples)."""
    _check_readable(path)
    frames = 0
    for block in _ffmpeg_blocks(path, sample_rate, offset, duration, stream):
        if not np.all(np.isfinite(block)):
            raise AudioDecodeError(path, "decoded audio contains NaN or Inf")
        frames += block.shape[0]
        yield _to_stereo(block)
    if frames == 0:
        raise AudioDecodeError(path, "no audio samples decoded")


def as_model_input(waveform: np.ndarray, sample_rate: int, target_rate: int = 44100) -> np.ndarray:
    """An in-memory signal as a decoded file would be: ``[n]`` or ``[n, C]`` samples (float, or
    int16/int32/uint8 PCM scaled to [-1, 1)) at ``sample_rate`` -> ``[m, 2]`` float32 at
    ``target_rate``. Mono is duplicated at full level; stereo at ``target_rate`` is kept as
    it is; any other rate or channel count goes through ffmpeg's resampler and downmix, as
    ``load_audio`` sends such files."""
    samples = np.asarray(waveform)
    if samples.ndim == 1:
        samples = samples[:, np.newaxis]
    if samples.ndim != 2 or samples.shape[1] == 0:
        raise ValueError(f"waveform of shape {np.shape(waveform)}: expected [samples] or [samples, channels]")
    if samples.shape[1] > samples.shape[0] and samples.shape[1] > 8:
        raise ValueError(f"waveform of shape {samples.shape}: expected [samples, channels] (channels last)")
    samples = _scale_to_float(samples)
    if not np.all(np.isfinite(samples)):
        raise ValueError("waveform contains NaN or Inf")
    channels = samples.shape[1]
    if int(sample_rate) == int(target_rate) and channels <= 2:
        return np.ascontiguousarray(_to_stereo(samples), dtype=np.float32)
    if shutil.which("ffmpeg") is None:
        raise ValueError(f"a {channels}-channel waveform at {sample_rate} Hz needs ffmpeg to become {target_rate} Hz stereo: install ffmpeg")
    out_channels = 1 if channels == 1 else 2
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-f", "f32le", "-ar", str(int(sample_rate)), "-ac", str(channels), "-i", "pipe:0",
           "-f", "f32le", "-acodec", "pcm_f32le", "-ac", str(out_channels), "-ar", str(int(target_rate)), "pipe:1"]
    result = subprocess.run(cmd, input=np.ascontiguousarray(samples, dtype="<f4").tobytes(), capture_output=True)
    if result.returncode != 0:
        raise ValueError(f"ffmpeg could not convert the waveform: {result.stderr.decode('utf-8', 'replace').strip()}")
    return np.ascontiguousarray(_to_stereo(np.frombuffer(result.stdout, dtype="<f4").reshape(-1, out_channels)), dtype=np.float32)
