"""A corpus of damaged, odd and hostile audio files, generated from a real song (no stored binaries).

``make_corpus(folder)`` writes every case and returns them as Case rows: the file, what a run
must make of it (``ok``: clean stems; ``damaged``: stems, with the damage in decode_warnings;
``error``: an error row naming the file) and a phrase the warning or error must hold. Run it
alone to write the files and print the table:
  .venv/bin/python -m tests.damaged_corpus FOLDER
"""
from __future__ import annotations

import dataclasses
import os
import struct
import subprocess
import sys

import numpy as np

RATE = 44100


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    path: str
    outcome: str  # ok | damaged | error
    says: str  # a phrase the warning (damaged) or the error (error) holds; "" for ok
    what: str  # the case in words, for the closing table
    same_as: str | None = None  # a good file whose samples this one must decode to


def _song(seconds: float) -> np.ndarray:
    """``seconds`` of a real song (../shared's cc0 Lithium mixture from 5 s), float64 stereo."""
    import soundfile

    from tests.conftest import CC0

    song, rate = soundfile.read(os.path.join(CC0, "2.Lithium", "mixture.flac"), dtype="float64", start=5 * RATE, frames=int(seconds * RATE))
    assert rate == RATE
    return song


def _ffmpeg(source: str, target: str, *args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", source, *args, target], check=True)


def _edit(source: str, target: str, change) -> None:
    with open(source, "rb") as handle:
        data = bytearray(handle.read())
    with open(target, "wb") as handle:
        handle.write(bytes(change(data)))


def _flip(offset_from_end: int | None = None, fraction: float | None = None):
    def change(data):
        index = len(data) - offset_from_end if offset_from_end is not None else int(len(data) * fraction)
        data[index] ^= 0xFF
        return data

    return change


def _wav_field(offset: int, fmt: str, value: int):
    def change(data):
        data[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
        return data

    return change


def _claim_twice(data):
    size = len(data) - 44
    data[4:8] = struct.pack("<I", 36 + 2 * size)
    data[40:44] = struct.pack("<I", 2 * size)
    return data


def _damage_ogg_page(data):
    index = data.find(b"OggS", len(data) // 2)
    data[index + 30 : index + 40] = b"\xff" * 10
    return data


def _zero_mp3_frames(data):
    middle = len(data) // 2
    data[middle : middle + 400] = b"\x00" * 400
    return data


def _streaminfo_claims(frames: int):
    """A FLAC whose STREAMINFO claims ``frames`` samples (bytes 18..26 hold rate, channels, bits, total)."""

    def change(data):
        packed = int.from_bytes(data[18:26], "big")
        packed = (packed & ~((1 << 36) - 1)) | frames
        data[18:26] = packed.to_bytes(8, "big")
        return data

    return change


def make_corpus(folder: str, seconds: float = 6.0) -> list:
    """Write every case into ``folder``; the list of Case."""
    import soundfile

    os.makedirs(folder, exist_ok=True)
    song = _song(seconds)

    def path(name):
        return os.path.join(folder, name)

    soundfile.write(path("good.wav"), song, RATE, subtype="PCM_16")
    soundfile.write(path("good-flac.flac"), song, RATE, subtype="PCM_16")
    soundfile.write(path("int32.wav"), song, RATE, subtype="PCM_32")
    _ffmpeg(path("good.wav"), path("good-mp3.mp3"), "-c:a", "libmp3lame", "-b:a", "128k")
    _ffmpeg(path("good.wav"), path("good-ogg.ogg"), "-c:a", "libvorbis")
    with open(path("streamed.wav"), "wb") as handle:  # sizes 0xFFFFFFFF, as ffmpeg writes to a pipe
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", path("good.wav"), "-f", "wav", "-"], stdout=handle, check=True)
    _edit(path("good-flac.flac"), path("last-frame.flac"), _flip(offset_from_end=50))
    _edit(path("good-flac.flac"), path("mid-flip.flac"), _flip(fraction=0.5))
    _edit(path("good-flac.flac"), path("cut.flac"), lambda data: data[: len(data) // 3])
    _edit(path("good-flac.flac"), path("cut-8000.flac"), lambda data: data[:8000])
    _edit(path("good-flac.flac"), path("claims-1s.flac"), _streaminfo_claims(RATE))
    _edit(path("good.wav"), path("block-align-0.wav"), _wav_field(32, "<H", 0))
    _edit(path("good.wav"), path("truncated.wav"), _claim_twice)
    _edit(path("good.wav"), path("rate-1hz.wav"), lambda data: _wav_field(28, "<I", 4)(_wav_field(24, "<I", 1)(data)))
    _edit(path("good.wav"), path("channels-1000.wav"), _wav_field(22, "<H", 1000))
    _edit(path("good-ogg.ogg"), path("page.ogg"), _damage_ogg_page)
    _edit(path("good-mp3.mp3"), path("frames.mp3"), _zero_mp3_frames)
    with open(path("text.wav"), "wb") as handle:
        handle.write(b"these are not the droids you are looking for\n" * 20)
    open(path("empty.wav"), "wb").close()
    return [
        Case("good.wav", path("good.wav"), "ok", "", "16-bit WAV"),
        Case("good-flac.flac", path("good-flac.flac"), "ok", "", "16-bit FLAC", same_as="good.wav"),
        Case("good-mp3.mp3", path("good-mp3.mp3"), "ok", "", "MP3 (LAME, Xing header)"),
        Case("good-ogg.ogg", path("good-ogg.ogg"), "ok", "", "Ogg/Vorbis"),
        Case("int32.wav", path("int32.wav"), "ok", "", "32-bit integer PCM WAV"),
        Case("streamed.wav", path("streamed.wav"), "ok", "", "WAV streamed out of ffmpeg (sizes 0xFFFFFFFF)", same_as="good.wav"),
        Case("block-align-0.wav", path("block-align-0.wav"), "damaged", "block align is 0", "WAV header with block align 0", same_as="good.wav"),
        Case("last-frame.flac", path("last-frame.flac"), "damaged", "CRC", "FLAC, a byte flipped 50 bytes from the end"),
        Case("mid-flip.flac", path("mid-flip.flac"), "damaged", "(read by ffmpeg instead)", "FLAC, a byte flipped mid-file"),
        Case("cut.flac", path("cut.flac"), "damaged", "its header claims", "FLAC cut after a third of its bytes"),
        Case("cut-8000.flac", path("cut-8000.flac"), "error", "not decodable", "FLAC cut after 8,000 bytes (inside its first frame)"),
        Case("claims-1s.flac", path("claims-1s.flac"), "damaged", "of the 1.00 s its header claims", "FLAC whose header claims 1 s"),
        Case("truncated.wav", path("truncated.wav"), "damaged", "its header claims", "WAV whose header claims twice its data"),
        Case("page.ogg", path("page.ogg"), "damaged", "its header claims", "Ogg with a damaged page"),
        Case("frames.mp3", path("frames.mp3"), "damaged", "ffmpeg", "MP3 with 400 bytes of frames zeroed"),
        Case("rate-1hz.wav", path("rate-1hz.wav"), "error", "claims 1 Hz", "WAV header claiming 1 Hz"),
        Case("channels-1000.wav", path("channels-1000.wav"), "error", "1000 channels", "WAV header claiming 1000 channels"),
        Case("text.wav", path("text.wav"), "error", "not decodable as audio", "text named .wav"),
        Case("empty.wav", path("empty.wav"), "error", "empty file", "empty file"),
    ]


if __name__ == "__main__":
    for case in make_corpus(sys.argv[1] if len(sys.argv) > 1 else "damaged-corpus"):
        print(f"{case.name:20} {case.outcome:8} {case.what}")
