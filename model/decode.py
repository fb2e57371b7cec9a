"""Audio files to the models' input: ``[samples, 2]`` float32 at the model's rate.

Mono is duplicated, more than two channels are downmixed by ffmpeg, other rates resampled.
Every file is decoded in a decode worker process (model/decode_worker.py: a decoder that
crashes or loops on a damaged file costs that file, never the caller), by the decoder that
reads its format correctly (model/decoders.py). Damage is reported, never silent: a damaged
file decodes with ``Decoded.warnings`` (``load_audio`` warns with AudioDamageWarning, or
raises with ``strict``), a file that cannot be decoded raises AudioDecodeError naming it.
"""
from __future__ import annotations

import math
import os
import tempfile
import warnings
from typing import Iterator, Optional

import numpy as np

from stembeam.model.decoders import (  # noqa: F401 - the decoding API is this module's
    BLOCK_FRAMES, AudioDecodeError, DecodeLimits, DecodeRequest, Decoded, check_readable, ffmpeg_blocks, ffprobe_claim,
)
from stembeam.model.decode_worker import pool


class AudioDamageWarning(UserWarning):
    """A file decoded with damage (a decoder's errors, or another length than its header's)."""


def check_rate(sample_rate, name: str = "sample_rate", limits: DecodeLimits = DecodeLimits()) -> int:
    """Check a sample rate.

    Args:
        sample_rate: a number of Hz.
        name: the parameter's name, for the message.
        limits: DecodeLimits giving the accepted rates.
    Returns:
        ``sample_rate`` as an int.
    Raises:
        ValueError naming ``name`` unless it is a whole number of Hz within ``limits``.
    """
    try:
        value = float(sample_rate)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number of Hz, not {sample_rate!r}") from None
    if not math.isfinite(value) or value != int(value) or not limits.min_rate <= value <= limits.max_rate:
        raise ValueError(f"{name} must be a whole number of Hz in {limits.min_rate}..{limits.max_rate}, not {sample_rate!r}")
    return int(value)


def check_span(offset, duration, offset_name: str = "offset", duration_name: str = "duration") -> None:
    """Check a span to decode.

    Args:
        offset: seconds from the start; a finite number >= 0.
        duration: seconds; None (to the end) or a finite number > 0.
        offset_name, duration_name: the parameters' names, for the message.
    Raises:
        ValueError naming the parameter that is out of range.
    """
    try:
        start = float(offset)
    except (TypeError, ValueError):
        raise ValueError(f"{offset_name} must be a number of seconds, not {offset!r}") from None
    if not math.isfinite(start) or start < 0:
        raise ValueError(f"{offset_name} must be a finite number of seconds >= 0, not {offset!r}")
    if duration is None:
        return
    try:
        length = float(duration)
    except (TypeError, ValueError):
        raise ValueError(f"{duration_name} must be a number of seconds, not {duration!r}") from None
    if not math.isfinite(length) or length <= 0:
        raise ValueError(f"{duration_name} must be a finite number of seconds > 0, not {duration!r}")


def _request(path, sample_rate, offset, duration, stream, limits) -> DecodeRequest:
    rate = check_rate(sample_rate)
    check_span(offset, duration)
    return DecodeRequest(os.fspath(path), rate, float(offset), None if duration is None else float(duration), stream, limits or DecodeLimits())


def decode_to_file(path: str, raw_path: str, sample_rate: int = 44100, offset: float = 0.0, duration: Optional[float] = None,
                   stream: Optional[int] = None, *, limits: Optional[DecodeLimits] = None) -> Decoded:
    """Decode ``path`` into ``raw_path`` (interleaved stereo float32) in a decode worker.

    Memory stays at one block whatever the length, and the whole file is decoded before
    anyone reads it, so a file that breaks half way is known before any of it is used.

    Args:
        path: a local audio file.
        raw_path: the file to write: ``[samples, 2]`` little-endian float32, row after row.
        sample_rate: the rate to decode to (Hz).
        offset, duration: the span to decode, in seconds (duration None: to the end).
        stream: the index of one audio stream of a multi-stream file (None: ffmpeg's choice).
        limits: DecodeLimits (None: the defaults).
    Returns:
        Decoded: ``frames`` written, the claimed length, the decoder, the damage seen.
    Raises:
        AudioDecodeError naming the file and the reason; ValueError for a bad rate or span.
    """
    return pool().decode(_request(path, sample_rate, offset, duration, stream, limits), os.path.abspath(raw_path))[0]


def read_raw(raw_path: str, start: int, count: int) -> np.ndarray:
    """Read samples of a decode_to_file output.

    Args:
        raw_path: the file decode_to_file wrote.
        start: the first sample.
        count: samples wanted.
    Returns:
        ``[k, 2]`` float32, samples ``[start, start + count)`` (``k < count`` at the end).
    """
    with open(raw_path, "rb") as handle:
        handle.seek(start * 8)
        return np.fromfile(handle, dtype="<f4", count=count * 2).reshape(-1, 2)


def damage_text(decoded: Decoded) -> str:
    """The damage of a ``Decoded`` in one line (empty when clean)."""
    return "; ".join(decoded.warnings)


def load_audio(path: str, sample_rate: int = 44100, offset: float = 0.0, duration: Optional[float] = None, stream: Optional[int] = None,
               *, strict: bool = False, limits: Optional[DecodeLimits] = None) -> np.ndarray:
    """Decode ``path`` (its audio stream ``stream`` if given) as ``stembeam separate`` does.

    Args:
        path: a local audio file (WAV, FLAC, AIFF, MP3, Ogg, Opus, M4A... whatever ffmpeg reads).
        sample_rate: the rate to decode to (Hz); other rates are resampled.
        offset, duration: the span to decode, in seconds (duration None: to the end).
        stream: the index of one audio stream of a multi-stream file (None: ffmpeg's choice).
        strict: raise AudioDecodeError for a damaged file instead of warning
            (AudioDamageWarning).
        limits: DecodeLimits: what a file may claim and cost (None: the defaults).
    Returns:
        ``[samples, 2]`` float32 at ``sample_rate``: the same samples decode_to_file writes.
    Raises:
        AudioDecodeError naming the file and the reason (missing, empty, not audio, damaged
        with ``strict``...); ValueError for a bad ``sample_rate``, ``offset`` or ``duration``.
    """
    request = _request(path, sample_rate, offset, duration, stream, limits)
    fd, raw = tempfile.mkstemp(prefix="stembeam-decoded-", suffix=".f32")
    os.close(fd)
    try:
        decoded, _ = pool().decode(request, raw)
        samples = np.fromfile(raw, dtype="<f4").reshape(-1, 2)
    finally:
        os.remove(raw)
    if decoded.warnings:
        if strict:
            raise AudioDecodeError(request.path, f"damaged: {damage_text(decoded)}")
        warnings.warn(AudioDamageWarning(f"{request.path}: {damage_text(decoded)}"), stacklevel=2)
    return samples


def decode_blocks(path: str, sample_rate: int = 44100, offset: float = 0.0, duration: Optional[float] = None,
                  stream: Optional[int] = None) -> Iterator[np.ndarray]:
    """Stream ``path`` from ffmpeg (a process of its own: resampled, downmixed), one block at a time.

    Memory: one block. Stopped when it takes longer than DecodeLimits allows.

    Args:
        path: a local audio file.
        sample_rate: the rate to decode to (Hz).
        offset, duration: the span to decode, in seconds (duration None: to the end).
        stream: the index of one audio stream of several (None: ffmpeg's choice).
    Returns:
        An iterator of ``[k, 2]`` float32 blocks.
    Raises:
        AudioDecodeError naming the file and the reason (missing, empty, directory, not audio,
        NaN/Inf, no samples).
    """
    request = _request(path, sample_rate, offset, duration, stream, None)
    check_readable(request.path)
    claim = ffprobe_claim(request.path, stream)
    frames = 0
    for block in ffmpeg_blocks(request.path, claim, request, []):
        if not np.all(np.isfinite(block)):
            raise AudioDecodeError(request.path, "decoded audio contains NaN or Inf")
        frames += block.shape[0]
        yield block if block.shape[1] == 2 else np.repeat(block, 2, axis=1)
    if frames == 0:
        raise AudioDecodeError(request.path, "no audio samples decoded")


def close_workers() -> None:
    """End this process's decode workers now (they also end with the process)."""
    pool().close()

