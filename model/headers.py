"""What a file's first bytes say: its container, and for WAV and AIFF the header's own fields.

Pure Python, no native code, a few kilobytes read: safe on any file, local or remote (any
readable, seekable binary handle), so the launcher and the resume check can look at a file
before a decoder process opens it.
"""
from __future__ import annotations

import dataclasses
import struct
from typing import BinaryIO, Optional

# Data sizes that mean "unknown" (a header written to a pipe, or RF64's placeholder).
STREAMING_SIZES = (0, 0xFFFFFFFF)
# WAVE format tags (and WAVEX sub-formats, the first two bytes of the sub-format GUID).
PCM, IEEE_FLOAT, ALAW, MULAW, EXTENSIBLE = 0x0001, 0x0003, 0x0006, 0x0007, 0xFFFE
# Chunks walked before giving up on finding the format and data chunks.
_MAX_CHUNKS = 64


def sniff(head: bytes) -> Optional[str]:
    """The container of a file from its first bytes.

    Args:
        head: the file's first bytes (16 are enough).
    Returns:
        ``wav`` (RIFF/RF64/BW64 WAVE), ``aiff`` (AIFF or AIFF-C), ``flac``, ``ogg``, ``mp3`` (ID3
        tag or an MPEG audio frame), else None.
    """
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "aiff"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:4] == b"OggS":
        return "ogg"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0 and head[1] & 0x06):
        return "mp3"
    return None


@dataclasses.dataclass(frozen=True)
class PcmHeader:
    """A WAV or AIFF header as written (nothing repaired).

    ``format_tag``: the WAVE format (the sub-format's for WAVEX; 1 for AIFF, 3 for its float
    kinds); ``data_bytes``: the data chunk's size field (None: unknown, a streamed or RF64
    header); ``data_present``: bytes of the file after the data chunk's start.
    """

    kind: str
    format_tag: int
    channels: int
    sample_rate: float
    bits: int
    block_align: int
    data_bytes: Optional[int]
    data_present: int
    extensible: bool = False

    @property
    def frame_bytes(self) -> int:
        """Bytes per sample frame implied by the bit depth and channel count."""
        return self.channels * ((self.bits + 7) // 8)

    @property
    def claimed_frames(self) -> Optional[int]:
        """Sample frames the data chunk's size claims (None when unknown)."""
        if self.data_bytes is None or self.frame_bytes <= 0:
            return None
        return self.data_bytes // self.frame_bytes


def read_pcm_header(handle: BinaryIO, size: int) -> Optional[PcmHeader]:
    """The header of a WAV or AIFF file as written.

    Args:
        handle: the file, open in binary mode (it is seeked).
        size: the file's size in bytes.
    Returns:
        PcmHeader, or None when the file is neither or its format and data chunks cannot be found.
    """
    handle.seek(0)
    head = handle.read(12)
    kind = sniff(head)
    if kind == "wav":
        return _wav(handle, size, head[:4] != b"RIFF")
    if kind == "aiff":
        return _aiff(handle, size, head[8:12] == b"AIFC")
    return None


def _chunks(handle: BinaryIO, size: int, little: bool):
    """``(id, size field, offset of its data)`` of each chunk after the 12-byte file header."""
    position = 12
    for _ in range(_MAX_CHUNKS):
        handle.seek(position)
        header = handle.read(8)
        if len(header) < 8:
            return
        chunk, length = header[:4], struct.unpack("<I" if little else ">I", header[4:])[0]
        yield chunk, length, position + 8
        position += 8 + length + (length & 1)
        if position >= size:
            return


def _wav(handle: BinaryIO, size: int, rf64: bool) -> Optional[PcmHeader]:
    fmt = None
    for chunk, length, offset in _chunks(handle, size, little=True):
        if chunk == b"fmt " and length >= 16:
            handle.seek(offset)
            data = handle.read(min(length, 40))
            tag, channels, rate, _, align, bits = struct.unpack("<HHIIHH", data[:16])
            extensible = tag == EXTENSIBLE
            if extensible and len(data) >= 26:
                tag = struct.unpack("<H", data[24:26])[0]
            fmt = (tag, channels, rate, bits, align, extensible)
        elif chunk == b"data" and fmt is not None:
            unknown = rf64 or length in STREAMING_SIZES
            return PcmHeader("wav", fmt[0], fmt[1], float(fmt[2]), fmt[3], fmt[4], None if unknown else length, max(0, size - offset), fmt[5])
    return None


def _extended_float(data: bytes) -> float:
    """AIFF's 80-bit IEEE extended sample rate."""
    exponent, mantissa = struct.unpack(">HQ", data)
    sign = -1.0 if exponent & 0x8000 else 1.0
    exponent &= 0x7FFF
    if exponent == 0 and mantissa == 0:
        return 0.0
    return sign * mantissa * 2.0 ** (exponent - 16383 - 63)


def _aiff(handle: BinaryIO, size: int, compressed: bool) -> Optional[PcmHeader]:
    common = None
    for chunk, length, offset in _chunks(handle, size, little=False):
        if chunk == b"COMM" and length >= 18:
            handle.seek(offset)
            data = handle.read(min(length, 22))
            channels, _, bits = struct.unpack(">hIh", data[:8])
            kind = data[18:22] if compressed and len(data) >= 22 else b"NONE"
            tag = IEEE_FLOAT if kind in (b"fl32", b"FL32", b"fl64", b"FL64") else PCM
            common = (tag, channels, _extended_float(data[8:18]), bits)
        elif chunk == b"SSND" and common is not None and length >= 8:
            tag, channels, rate, bits = common
            frame = channels * ((bits + 7) // 8)
            data_bytes = None if length in STREAMING_SIZES else length - 8
            return PcmHeader("aiff", tag, channels, rate, bits, frame, data_bytes, max(0, size - offset - 8))
    return None
