"""The decoders behind ``load_audio``: libsndfile, tensorflow-io and ffmpeg, each file routed to
the one that reads its format correctly, and what the container claims checked against what
was decoded.

This module runs inside a decode worker process (model/decode_worker.py), so that a decoder
that crashes or loops on a damaged file takes down only that process. Calling ``decode`` in
the caller's own process is for tests.

Routing (the first decoder that succeeds; each format keeps the decoder whose samples earlier
releases wrote stems from, so good files give the same stems):
- WAV, AIFF and FLAC at the target rate with one or two channels: libsndfile (32-bit integer
  PCM included), else ffmpeg when libsndfile fails or reports an error midway;
- MP3 and Ogg/Vorbis at the target rate: tensorflow-io (its own minimp3 and libvorbis), else
  ffmpeg;
- everything else, other rates and channel counts, and one stream of several: ffmpeg.

Damage is never silent: a decoder's error messages, a fallback to another decoder, and a
decoded length that differs from the one the container claims become ``Decoded.warnings``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import stat
import subprocess
import tempfile
import threading
from typing import Iterator, List, Optional

import numpy as np

from stembeam.model import headers

# Samples beyond this magnitude are not audio (60 dB above full scale): the separation's
# squares would overflow float32 into NaN long before, as for float files holding 3e38.
MAX_MAGNITUDE = 1000.0
# Samples per decoded block (~6 s at 44.1 kHz): bounds decoding memory.
BLOCK_FRAMES = 1 << 18
SNDFILE, TFIO, FFMPEG = "sndfile", "tfio", "ffmpeg"


class AudioDecodeError(Exception):
    """A file that cannot be turned into audio; ``str()`` names the file and the reason.

    Args:
        path: the file.
        reason: why, in a few words (kept as ``.reason``; ``.path`` too).
    """

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class DecodeLimits:
    """What a file may claim and cost before it is refused or stopped (frozen).

    Attributes:
        min_rate, max_rate: the sample rates (Hz) a header may claim.
        max_channels: the channels a header may claim.
        max_seconds: the most audio decoded (a header that lies about its rate or length cannot
            fill the disk or the memory).
        deadline_s, min_speed: a decode worker gets ``deadline_s`` + the claimed seconds /
            ``min_speed`` of wall time before it is stopped.
        max_memory_mb: the memory growth a decode worker may have.
    """

    min_rate: int = 4000
    max_rate: int = 768_000
    max_channels: int = 64
    max_seconds: float = 6 * 3600.0
    deadline_s: float = 60.0
    min_speed: float = 2.0
    max_memory_mb: int = 1024

    def deadline(self, claimed_seconds: Optional[float]) -> float:
        """Wall seconds a decode may take, for a file claiming ``claimed_seconds`` (None: unknown)."""
        seconds = self.max_seconds if claimed_seconds is None else min(claimed_seconds, self.max_seconds)
        return self.deadline_s + seconds / self.min_speed


@dataclasses.dataclass(frozen=True)
class DecodeRequest:
    """One decode (frozen): ``path`` to ``[samples, 2]`` float32.

    Attributes:
        path: a local file.
        sample_rate: the rate to decode to (Hz).
        offset, duration: the span in seconds (duration None: to the end).
        stream: one audio stream of a multi-stream file (None: ffmpeg's choice).
        limits: DecodeLimits.
        decoders: force a route (tests); None: ``route`` chooses.
    """

    path: str
    sample_rate: int = 44100
    offset: float = 0.0
    duration: Optional[float] = None
    stream: Optional[int] = None
    limits: DecodeLimits = DecodeLimits()
    decoders: Optional[tuple] = None

    def to_json(self) -> dict:
        """The request as a JSON-ready dict (what a decode worker receives)."""
        return {**dataclasses.asdict(self), "limits": dataclasses.asdict(self.limits)}

    @classmethod
    def from_json(cls, data: dict) -> "DecodeRequest":
        """The request a ``to_json`` dict describes."""
        limits = DecodeLimits(**data.pop("limits"))
        decoders = data.pop("decoders")
        return cls(**data, limits=limits, decoders=None if decoders is None else tuple(decoders))


@dataclasses.dataclass(frozen=True)
class Claim:
    """What a file says of itself before it is decoded (frozen; None: unknown).

    Attributes:
        kind: its container (``headers.sniff``).
        format, subtype: libsndfile's, when it opens the file.
        sample_rate, channels: as claimed.
        frames: length in frames at ``sample_rate``.
        exact: the length is the container's own count, not an estimate.
        notes: what is wrong with the header itself.
        longer: a FLAC whose data holds more than its header claims (decoded by ffmpeg).
    """

    kind: Optional[str]
    format: Optional[str] = None
    subtype: Optional[str] = None
    sample_rate: Optional[float] = None
    channels: Optional[int] = None
    frames: Optional[int] = None
    exact: bool = False
    notes: tuple = ()
    # The file is larger than its claimed length can be (a FLAC header that lies): ffmpeg, which
    # reads every frame, decodes it.
    longer: bool = False

    @property
    def seconds(self) -> Optional[float]:
        """The claimed length in seconds, or None when unknown."""
        if self.frames is None or not self.sample_rate:
            return None
        return self.frames / self.sample_rate


@dataclasses.dataclass(frozen=True)
class Decoded:
    """What a decode gave (frozen).

    Attributes:
        frames: frames written at ``sample_rate``.
        sample_rate: Hz.
        claimed_frames: the span's length the container claims, at ``sample_rate`` (None: unknown).
        decoder: the decoder that gave the samples.
        warnings: the damage seen (empty for a clean file).
    """

    frames: int
    sample_rate: int
    claimed_frames: Optional[int]
    decoder: str
    warnings: tuple = ()

    @property
    def seconds(self) -> float:
        """Seconds decoded."""
        return self.frames / self.sample_rate

    @property
    def claimed_seconds(self) -> Optional[float]:
        """Seconds the container claims for the span, or None when unknown."""
        return None if self.claimed_frames is None else self.claimed_frames / self.sample_rate


# libsndfile decodes these (format, subtype) pairs into float32 as the decoder earlier releases
# used for them, bit for bit (tests/test_decode_formats.py compares them format by format), and
# each keeps that decoder's rule for which samples an offset and a duration select: "tfio"
# (tensorflow-io read them) or "ffmpeg". 32-bit integer PCM is libsndfile's alone: tensorflow-io
# read its samples as float32 bit patterns. Other subtypes (u-law, a-law, ADPCM, RF64, W64...)
# go to ffmpeg, as they always did.
SNDFILE_SPAN_RULES = {
    **{(container, subtype): "tfio" for container in ("WAV", "WAVEX") for subtype in ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT")},
    **{("FLAC", subtype): "tfio" for subtype in ("PCM_S8", "PCM_16", "PCM_24")},
    **{(container, "DOUBLE"): "ffmpeg" for container in ("WAV", "WAVEX")},
    **{("AIFF", subtype): "ffmpeg" for subtype in ("PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")},
}
# Containers whose frame count is exact (WAV/AIFF data size, FLAC STREAMINFO, Ogg's last
# granule position); an MP3's only with a Xing/Info header. Lossy decoders may differ from the
# container's count by the codec's delay handling: up to one MPEG frame.
LOSSY_SLACK_FRAMES = 1152
# Claims that are estimates (ffprobe's duration of other containers): allowed difference.
ESTIMATE_SLACK_S, ESTIMATE_SLACK_RATIO = 0.5, 0.05


class _NextDecoder(Exception):
    """This decoder cannot give this file's samples; ``damage``: because the file is damaged
    (the reason becomes a warning), not because another decoder reads this file or span."""

    def __init__(self, reason: str, damage: bool = True):
        super().__init__(reason)
        self.damage = damage


def check_readable(path: str) -> int:
    """Check that ``path`` is a regular, non-empty, readable file.

    Returns:
        Its size in bytes.
    Raises:
        AudioDecodeError naming what it is otherwise (missing, a folder, empty...).
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise AudioDecodeError(path, "file not found") from None
    except OSError as error:
        raise AudioDecodeError(path, f"cannot be read ({error.strerror or error})") from None
    if stat.S_ISDIR(info.st_mode):
        raise AudioDecodeError(path, "is a directory, not an audio file")
    if not stat.S_ISREG(info.st_mode):
        kind = "a FIFO" if stat.S_ISFIFO(info.st_mode) else "a socket" if stat.S_ISSOCK(info.st_mode) else "a device"
        raise AudioDecodeError(path, f"is {kind}, not a regular file")
    if info.st_size == 0:
        raise AudioDecodeError(path, "empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise AudioDecodeError(path, "cannot be read (permission denied)")
    return info.st_size


def ffmpeg_input(path: str) -> str:
    """``path`` as ffmpeg's input: the file: protocol keeps names like "-x.mp3" or "a:b.wav" from
    being read as options or protocols."""
    return "file:" + os.path.abspath(path)


def _xing_header(path: str) -> bool:
    """Whether an MP3's first frame is a Xing/Info (or VBRI) header: then libsndfile's frame
    count is the encoder's, else mpg123's estimate from the bitrate."""
    with open(path, "rb") as handle:
        head = handle.read(10)
        start = 0
        if head[:3] == b"ID3" and len(head) == 10:
            start = 10 + ((head[6] & 0x7F) << 21 | (head[7] & 0x7F) << 14 | (head[8] & 0x7F) << 7 | (head[9] & 0x7F))
        handle.seek(start)
        frame = handle.read(200)
    return any(tag in frame for tag in (b"Xing", b"Info", b"VBRI"))


def _ffprobe(path: str, stream: Optional[int]) -> Optional[tuple]:
    """``(rate, channels, seconds or None)`` of the audio stream ffmpeg would decode, or None."""
    if shutil.which("ffprobe") is None:
        return None
    selector = f"a:{stream or 0}"
    try:
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", selector, "-show_entries", "stream=sample_rate,channels,duration:format=duration",
             "-of", "json", ffmpeg_input(path)],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )
        found = json.loads(probe.stdout or "{}")
        streams = found.get("streams") or []
        if not streams:
            return None
        duration = streams[0].get("duration") or (found.get("format") or {}).get("duration")
        seconds = float(duration) if duration not in (None, "N/A") else None
        return float(streams[0]["sample_rate"]), int(streams[0]["channels"]), seconds
    except (OSError, subprocess.SubprocessError, ValueError, KeyError, TypeError):
        return None


def probe(path: str, stream: Optional[int] = None) -> Claim:
    """What ``path`` claims to be; never decodes.

    Args:
        path: a local file.
        stream: one audio stream of a multi-stream file, or None.
    Returns:
        Claim.
    """
    with open(path, "rb") as handle:
        kind = headers.sniff(handle.read(16))
        pcm = headers.read_pcm_header(handle, os.fstat(handle.fileno()).st_size) if kind in ("wav", "aiff") else None
    if stream is None and kind is not None:
        import soundfile

        try:
            with soundfile.SoundFile(path) as sound:
                frames, exact = sound.frames, True
                if frames <= 0 or frames >= 1 << 62:
                    frames, exact = None, False  # unknown (a FLAC streamed without its total)
                notes = _header_notes(pcm) if pcm is not None else ()
                if pcm is not None and pcm.claimed_frames is not None:
                    frames = pcm.claimed_frames  # the header's own word, not libsndfile's repair
                if kind == "mp3":
                    exact = _xing_header(path)
                longer = kind == "flac" and frames is not None and _larger_than_claim(path, frames, sound.channels, sound.subtype)
                return Claim(kind, sound.format, sound.subtype, float(sound.samplerate), sound.channels, frames, exact, notes, longer)
        except Exception:  # noqa: BLE001 - libsndfile cannot read it: ffmpeg may
            pass
    return ffprobe_claim(path, stream, kind)


def ffprobe_claim(path: str, stream: Optional[int] = None, kind: Optional[str] = None) -> Claim:
    """What ffprobe says of the audio stream ffmpeg would decode (its length an estimate).

    Args:
        path: a local file.
        stream: one audio stream, or None.
        kind: the container, as ``headers.sniff`` says.
    Returns:
        Claim (``exact`` False; fields None where ffprobe says nothing).
    """
    found = _ffprobe(path, stream)
    if found is None:
        return Claim(kind)
    rate, channels, seconds = found
    return Claim(kind, None, None, rate, channels, None if seconds is None else int(round(seconds * rate)), False)


# Bytes per sample of FLAC's subtypes; a FLAC frame never holds much more than its raw samples.
_FLAC_BYTES = {"PCM_S8": 1, "PCM_16": 2, "PCM_24": 3}


def _larger_than_claim(path: str, frames: int, channels: int, subtype: str) -> bool:
    """Whether a FLAC file is larger than ``frames`` raw samples could make it: its header's
    total is a lie (the file holds more audio)."""
    raw = frames * channels * _FLAC_BYTES.get(subtype, 4)
    return os.path.getsize(path) > 1.1 * raw + 65536


def _header_notes(pcm: headers.PcmHeader) -> tuple:
    """What is wrong in a WAV/AIFF header's own fields (libsndfile reads around it)."""
    notes = []
    if pcm.kind == "wav" and pcm.block_align != pcm.frame_bytes:
        notes.append(f"the header's block align is {pcm.block_align} (should be {pcm.frame_bytes})")
    return tuple(notes)


def check_limits(path: str, claim: Claim, request: DecodeRequest) -> None:
    """Refuse a header that lies about its rate or channels (a length is bounded while decoding:
    decode_claimed stops at ``limits.max_seconds``).

    Args:
        path: the file, for the message.
        claim: its Claim.
        request: the DecodeRequest (its ``limits``).
    Raises:
        AudioDecodeError: a rate or channel count outside ``request.limits``.
    """
    limits = request.limits
    if claim.sample_rate is not None and not limits.min_rate <= claim.sample_rate <= limits.max_rate:
        raise AudioDecodeError(path, f"its header claims {claim.sample_rate:g} Hz, outside {limits.min_rate}..{limits.max_rate} Hz (a damaged header?)")
    if claim.channels is not None and not 1 <= claim.channels <= limits.max_channels:
        raise AudioDecodeError(path, f"its header claims {claim.channels} channels, outside 1..{limits.max_channels} (a damaged header?)")


def route(claim: Claim, request: DecodeRequest) -> tuple:
    """The decoders to try, in order, for a Claim and a DecodeRequest (see the module docstring)."""
    if request.decoders:
        return tuple(request.decoders)
    if request.stream is not None:
        return (FFMPEG,)
    native = claim.sample_rate == request.sample_rate and (claim.channels or 0) <= 2
    if native and (claim.format, claim.subtype) in SNDFILE_SPAN_RULES and not claim.longer:
        return (SNDFILE, FFMPEG)
    if native and (claim.kind == "mp3" or (claim.kind == "ogg" and claim.subtype == "VORBIS")):
        return (TFIO, FFMPEG)
    return (FFMPEG,)


# --- spans: which samples an offset and a duration select --------------------------------------


class _ReleaseRule(Exception):
    """A span the decoder the release used for this format selects its own way (ffmpeg's)."""


def _tfio_span(rate: int, total: int, offset: float, duration: Optional[float]) -> tuple:
    """The samples ``[start, stop)`` tensorflow-io's reads selected: round(offset * rate) on."""
    if not (math.isfinite(offset) and offset >= 0 and (duration is None or math.isfinite(duration))):
        raise _ReleaseRule("an offset or duration tensorflow-io takes its own way")
    start = int(round(offset * rate))
    return start, total if duration is None else min(total, start + int(round(duration * rate)))


def _ffmpeg_microseconds(value) -> int:
    """The time ffmpeg reads from ``f"{value}"`` (av_parse_time: seconds, decimals cut after the
    sixth); _ReleaseRule for what it refuses or might read otherwise (exponents, signs, inf, nan)."""
    text = f"{value}"
    whole, dot, decimals = text.partition(".")
    if not text.isascii() or not whole.isdigit() or not (decimals.isdigit() or not dot):
        raise _ReleaseRule(f"a time ffmpeg may refuse: {text}")
    return int(whole) * 1_000_000 + int((decimals[:6] + "000000")[:6] if dot else 0)


def _ffmpeg_span(rate: int, total: int, offset: float, duration: Optional[float]) -> tuple:
    """The samples ``[start, stop)`` ffmpeg gives of a PCM file at ``rate`` (no resampling):
    ``-ss`` shifts timestamps by the offset in microseconds rounded to a sample, and the trim after
    it keeps the duration in microseconds rounded to samples (halves away from zero)."""
    start = (_ffmpeg_microseconds(offset) * rate + 500_000) // 1_000_000 if offset else 0
    if duration is None:
        return start, total
    count = (_ffmpeg_microseconds(duration) * rate + 500_000) // 1_000_000
    if count == 0:
        raise _ReleaseRule("ffmpeg reads -t 0 as no limit")
    return start, min(total, start + count)


# --- the decoders -------------------------------------------------------------------------------


def _scale_to_float(samples: np.ndarray) -> np.ndarray:
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0
    if samples.dtype == np.int32:
        return samples.astype(np.float32) / 2147483648.0
    if samples.dtype == np.uint8:
        return (samples.astype(np.float32) - 128.0) / 128.0
    return samples.astype(np.float32)


def _log_errors(log: str) -> List[str]:
    """The errors in libsndfile's log (its FLAC decoder's CRC and sync errors, ...)."""
    lines = (line.strip() for line in log.splitlines())
    return [line.split(":", 1)[-1].strip() for line in lines if line.upper().startswith("ERROR")]


def _sndfile_blocks(path: str, claim: Claim, request: DecodeRequest, warnings: list) -> Iterator[np.ndarray]:
    """Blocks read by libsndfile, selecting the samples the release's decoder for this format
    selected; _NextDecoder when libsndfile fails or logs an error midway (a damaged file)."""
    import soundfile

    rule = SNDFILE_SPAN_RULES[claim.format, claim.subtype]
    try:
        sound = soundfile.SoundFile(path)
    except Exception as error:  # noqa: BLE001 - opened at the probe, not now: damaged
        raise _NextDecoder(f"libsndfile: {_first_line(error)}") from None
    with sound:
        total = sound.frames
        try:
            start, stop = (_tfio_span if rule == "tfio" else _ffmpeg_span)(sound.samplerate, total, request.offset, request.duration)
        except _ReleaseRule as error:
            raise _NextDecoder(str(error), damage=False) from None
        if start >= stop:
            raise AudioDecodeError(path, _no_samples(claim, request))
        logged = len(_log_errors(sound.extra_info))
        try:
            sound.seek(start)
        except Exception as error:  # noqa: BLE001 - a damaged file libsndfile cannot seek in
            raise _NextDecoder(f"libsndfile: {_first_line(error)}") from None
        for first in range(start, stop, BLOCK_FRAMES):
            count = min(BLOCK_FRAMES, stop - first)
            try:
                block = sound.read(count, dtype="float32", always_2d=True)
            except Exception as error:  # noqa: BLE001 - a damaged frame: another decoder may read on
                raise _NextDecoder(f"libsndfile: {_first_line(error)}") from None
            errors = _log_errors(sound.extra_info)[logged:]
            if errors:
                raise _NextDecoder("libsndfile: " + "; ".join(errors))
            if block.shape[0] != count:
                raise _NextDecoder(f"libsndfile read {first - start + block.shape[0]} of the {stop - start} samples the file holds")
            yield block


def _tfio_blocks(path: str, claim: Claim, request: DecodeRequest, warnings: list) -> Iterator[np.ndarray]:
    """Blocks from tensorflow-io (MP3's minimp3, Ogg's libvorbis: the samples earlier releases
    separated), read front to back."""
    import tensorflow_io as tfio

    try:
        audio = tfio.audio.AudioIOTensor(path)
        rate, (total, channels) = int(audio.rate.numpy()), (int(d) for d in audio.shape)
    except Exception as error:  # noqa: BLE001 - not a file tensorflow-io reads (ffmpeg may): as earlier releases
        raise _NextDecoder(f"tensorflow-io: {_first_line(error)}", damage=False) from None
    if rate != request.sample_rate or channels > 2:
        raise _NextDecoder(f"{channels} channels at {rate} Hz: ffmpeg resamples and downmixes", damage=False)
    try:
        start, stop = _tfio_span(rate, total, request.offset, request.duration)
    except _ReleaseRule as error:
        raise _NextDecoder(str(error), damage=False) from None
    for first in range(start, stop, BLOCK_FRAMES):
        try:
            block = audio[first : min(first + BLOCK_FRAMES, stop)].numpy()
        except Exception as error:  # noqa: BLE001 - a damaged frame: ffmpeg may read on
            raise _NextDecoder(f"tensorflow-io: {_first_line(error)}") from None
        yield _scale_to_float(block)


def _first_line(error: BaseException) -> str:
    """An error's first line without TensorFlow's op decorations or libsndfile's "Error :"."""
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    line = line.split("}}", 1)[-1].strip() if "}}" in line else line
    line = line.split(" [Op:", 1)[0]
    return line[len("Error : "):] if line.startswith("Error : ") else line


def ffmpeg_blocks(path: str, claim: Claim, request: DecodeRequest, warnings: list) -> Iterator[np.ndarray]:
    """Stereo float32 blocks streamed from the ffmpeg binary (resampled, downmixed).

    ``request.stream`` picks one audio stream of a multi-stream file (a ``.stem.mp4``); it is
    read as 16-bit PCM, as musdb/stempeg read MUSDB's stems, so references and mixtures are the
    very samples MUSDB's published scores were computed on.

    Args:
        path: a local file.
        claim: its Claim.
        request: DecodeRequest (rate, span, stream, limits).
        warnings: a list that gets what ffmpeg says of damaged frames (CRC checks on).
    Returns:
        An iterator of ``[k, channels]`` float32 blocks (channels 2, or 1 for mono sources).
    """
    if shutil.which("ffmpeg") is None:
        raise AudioDecodeError(path, "no decoder for it here, and ffmpeg is not installed")
    stream, offset, duration = request.stream, request.offset, request.duration
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-err_detect", "crccheck"]
    if offset:
        cmd += ["-ss", f"{offset}"]
    if duration is not None:
        cmd += ["-t", f"{duration}"]
    cmd += ["-i", ffmpeg_input(path), "-vn"]
    if stream is not None:
        cmd += ["-map", f"0:a:{stream}"]
    # ffmpeg upmixes mono to stereo at -3 dB (its centre mix level); mono is read as one channel
    # and duplicated at full level instead, as tensorflow-io's mono and Spleeter's are.
    channels = 2 if stream is not None or claim.channels != 1 else 1
    pcm, width = ("s16le", 2 * channels) if stream is not None else ("f32le", 4 * channels)
    cmd += ["-f", pcm, "-acodec", "pcm_" + pcm, "-ac", str(channels), "-ar", str(request.sample_rate), "pipe:1"]
    # stderr goes to a file: a pipe could fill up on a badly broken file and stall ffmpeg.
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors, stdin=subprocess.DEVNULL)
        # Also where no worker's caller watches (model.decode.decode_blocks): a stuck ffmpeg is stopped.
        budget = request.limits.deadline(claim.seconds)
        fired = threading.Event()

        def stop():
            fired.set()
            process.kill()

        watchdog = threading.Timer(budget, stop)
        watchdog.daemon = True
        watchdog.start()
        given = 0
        try:
            while True:
                data = process.stdout.read(BLOCK_FRAMES * width)
                if not data:
                    break
                usable = len(data) - len(data) % width
                given += usable
                if stream is not None:
                    yield np.frombuffer(data[:usable], dtype="<i2").reshape(-1, 2).astype(np.float32) / 32768.0
                else:
                    yield np.frombuffer(data[:usable], dtype="<f4").reshape(-1, channels)
        finally:
            watchdog.cancel()
            process.stdout.close()
            if process.poll() is None:
                process.kill()  # the caller stopped early (a limit): nothing more is wanted
            code = process.wait()
        if fired.is_set():
            raise AudioDecodeError(path, f"decoding did not finish within {budget:.0f} s: stopped (a damaged file?)")
        errors.seek(0)
        said = _ffmpeg_messages(errors.read().decode("utf-8", "replace"), path)
    if code != 0:
        reason = said[-1] if said else f"ffmpeg exited with {code}"
        if not given:
            raise AudioDecodeError(path, f"not decodable as audio (ffmpeg: {reason})")
        warnings.append(f"ffmpeg stopped on an error: {reason}")  # what it decoded before is kept, flagged
    specific = [line for line in said if not line.startswith("Error while decoding stream")] or said
    warnings.extend(f"ffmpeg: {line}" for line in specific[:3])


def _ffmpeg_messages(text: str, path: str) -> List[str]:
    """ffmpeg's error lines, without its addresses and the file's name, each once."""
    lines = []
    for line in text.splitlines():
        line = line.strip().replace(ffmpeg_input(path), "").strip(": ")
        if line.startswith("[") and "@ 0x" in line.split("]", 1)[0]:
            line = line.split("] ", 1)[-1]
        if line and not line.startswith("Last message repeated") and line not in lines:
            lines.append(line)
    return lines


DECODERS = {SNDFILE: _sndfile_blocks, TFIO: _tfio_blocks, FFMPEG: ffmpeg_blocks}


def _to_stereo(block: np.ndarray) -> np.ndarray:
    if block.shape[1] == 1:
        return np.repeat(block, 2, axis=1)
    return block[:, :2]


def _claimed_span(claim: Claim, request: DecodeRequest) -> Optional[int]:
    """Frames at ``request.sample_rate`` the container claims for the requested span."""
    if claim.frames is None or not claim.sample_rate:
        return None
    total = claim.frames * request.sample_rate / claim.sample_rate
    start = max(0.0, request.offset) * request.sample_rate
    wanted = total - start if request.duration is None else min(total - start, request.duration * request.sample_rate)
    return max(0, int(round(wanted)))


def _length_warning(decoded: int, claimed: Optional[int], claim: Claim, request: DecodeRequest) -> Optional[str]:
    if claimed is None:
        return None
    rate = request.sample_rate
    if claim.longer:
        slack = 0
    elif claim.exact:
        # A span's ends are rounded to samples by each decoder's own rule: a sample either way.
        pcm = 0 if request.offset == 0 and request.duration is None else 2
        slack = pcm if claim.kind in ("wav", "aiff", "flac") and claim.sample_rate == rate else LOSSY_SLACK_FRAMES
    else:
        slack = max(ESTIMATE_SLACK_S * rate, ESTIMATE_SLACK_RATIO * claimed)
    if abs(decoded - claimed) <= slack:
        return None
    what = "its header claims" if claim.exact else "its container estimates"
    return f"decoded {decoded / rate:.2f} s of the {claimed / rate:.2f} s {what}"


def decode(request: DecodeRequest, sink) -> Decoded:
    """Decode a request into a sink.

    Args:
        request: DecodeRequest.
        sink: an object with ``write(block [k, 2] float32)`` and ``reset()`` (called before each
            decoder tried).
    Returns:
        Decoded: what was decoded.
    Raises:
        AudioDecodeError naming the file and the reason: not a readable file, a claim outside
        the limits, no decoder that reads it, no samples in the span, NaN or Inf, more samples
        than the limits allow.
    """
    path = request.path
    check_readable(path)
    claim = probe(path, request.stream)
    check_limits(path, claim, request)
    return decode_claimed(request, claim, sink)


def decode_claimed(request: DecodeRequest, claim: Claim, sink) -> Decoded:
    """``decode`` for a file already probed: ``claim`` is its Claim (same arguments, returns and errors)."""
    path = request.path
    claimed = _claimed_span(claim, request)
    cap = int(request.limits.max_seconds * request.sample_rate)
    if claimed is not None and claim.exact:
        # Far more than the header claims: a lying header, stopped before it fills the disk.
        cap = min(cap, 2 * claimed + 10 * request.sample_rate)
    damage: List[str] = []  # why earlier decoders gave up on a damaged file
    decoders = route(claim, request)
    for name in decoders:
        warnings: List[str] = []
        frames = 0
        sink.reset()
        try:
            with contextlib.closing(DECODERS[name](path, claim, request, warnings)) as blocks:
                for block in blocks:
                    if block.shape[0] == 0:
                        continue
                    if not np.all(np.isfinite(block)):
                        raise AudioDecodeError(path, "decoded audio contains NaN or Inf")
                    peak = float(np.max(np.abs(block)))
                    if peak > MAX_MAGNITUDE:
                        raise AudioDecodeError(path, f"samples reach {peak:.3g}, beyond +-{MAX_MAGNITUDE:g} (full scale is 1.0): not audio")
                    frames += block.shape[0]
                    if frames > cap:
                        raise AudioDecodeError(path, f"decoding gave more samples than {_cap_text(cap, claimed, request)}: stopped")
                    sink.write(np.ascontiguousarray(_to_stereo(block), dtype=np.float32))
        except _NextDecoder as reason:
            if name == decoders[-1]:
                raise AudioDecodeError(path, str(reason)) from None
            if reason.damage:
                damage.append(str(reason))
            continue
        if frames == 0:
            raise AudioDecodeError(path, _no_samples(claim, request))
        found = list(claim.notes)
        if damage:
            found.append(f"{'; '.join(damage)} (read by {name} instead)")
        length = _length_warning(frames, claimed, claim, request)
        return Decoded(frames, request.sample_rate, claimed, name, tuple(found + warnings + ([length] if length else [])))
    raise AssertionError("unreachable")


def _cap_text(cap: int, claimed: Optional[int], request: DecodeRequest) -> str:
    if claimed is not None and cap < request.limits.max_seconds * request.sample_rate:
        return f"twice the {claimed / request.sample_rate:.2f} s its header claims"
    return f"the {request.limits.max_seconds:.0f} s a track may last"


def _no_samples(claim: Claim, request: DecodeRequest) -> str:
    seconds = claim.seconds
    if seconds is not None and request.offset and request.offset >= seconds:
        return f"offset {request.offset:g} s is at or past its end ({seconds:.2f} s long)"
    return "no audio samples decoded"
