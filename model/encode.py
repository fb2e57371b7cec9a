"""Encoding stems: 16-bit WAV as Spleeter writes it, 24-bit and float WAV and 16-bit FLAC through
libsndfile, other codecs through ffmpeg; each file appears whole under its name or not at all."""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
import wave

import numpy as np

from stembeam._compat import soundfile_without_peak_chunk

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


def check_codec(codec: str) -> None:
    """Raise ValueError naming the known codecs unless ``codec`` is one of CODECS."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose one of {', '.join(sorted(CODECS))}")


# ffmpeg's bitrates: bits per second, with an optional k or M.
_BITRATE = re.compile(r"^[0-9]+(\.[0-9]+)?[kKM]?$")


def check_bitrate(codec: str, bitrate: str | None) -> None:
    """Check a bitrate for ``codec`` (only lossy codecs use one).

    Args:
        codec: one of CODECS.
        bitrate: a bitrate ffmpeg takes (``128k``, ``96000``, ``1.5M``), or None.
    Raises:
        ValueError: a lossy codec and a bitrate that is none.
    """
    if codec in LOSSLESS_CODECS or bitrate is None:
        return
    text = str(bitrate)
    if not _BITRATE.match(text) or float(text.rstrip("kKM")) <= 0:
        raise ValueError(f"bitrate {bitrate!r} is not a bitrate (e.g. 128k, 320k, 96000)")


def default_bit_depth(codec: str) -> int | None:
    """The bit depth ``codec``'s files get unless told otherwise (wav 16, flac 24; None: a lossy codec)."""
    depths = BIT_DEPTHS.get(codec)
    return depths[0] if depths else None


def check_bit_depth(codec: str, bit_depth: int | None) -> None:
    """Check a bit depth for ``codec``.

    Args:
        codec: one of CODECS.
        bit_depth: 16, 24 or 32 (float) for wav, 24 or 16 for flac; None: the codec's default.
    Raises:
        ValueError: a bit depth ``codec`` does not write (lossy codecs have none).
    """
    if bit_depth is None or bit_depth == default_bit_depth(codec):
        return
    if bit_depth not in BIT_DEPTHS.get(codec, ()):
        allowed = "; ".join(f"{name}: {' or '.join(map(str, depths))}" for name, depths in BIT_DEPTHS.items())
        raise ValueError(f"bit depth {bit_depth} is not available for {codec} ({allowed}; lossy codecs have none)")


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


class AudioWriter:
    """Streams ``[k, channels]`` float32 blocks into an audio file that appears whole or not at all.

    Blocks go to a temporary name in the target folder (16-bit PCM wav as Spleeter writes
    it, other codecs piped through ffmpeg, 24-bit and float files through libsndfile);
    ``close()`` (or ``finish()`` then ``commit()``) renames it into place, ``abort()`` removes
    it. Keeps the written output's running ``frames``, ``rms`` and ``peak`` (clipped, except in
    float files). A context manager: aborts on an exception, else closes.

    Args:
        path: the file to write (its folder is created).
        sample_rate: Hz.
        channels: channels of every block.
        codec: one of CODECS (``wav``, ``flac``, ``mp3``, ``ogg``, ``m4a``, ``wma``).
        bitrate: lossy codecs' bitrate (``128k``); ignored by lossless ones.
        bit_depth: wav 16, 24 or 32 (float), flac 24 or 16; None: the codec's default.
    Raises:
        ValueError: a codec, bitrate or bit depth that cannot be used.
    """

    def __init__(self, path: str, sample_rate: int = 44100, channels: int = 2, codec: str = "wav", bitrate: str | None = "128k",
                 bit_depth: int | None = None):
        check_codec(codec)
        check_bit_depth(codec, bit_depth)
        check_bitrate(codec, bitrate)
        self.path = path
        self.frames = 0
        # None for lossy codecs; their stats are taken as 16-bit ones always were.
        self.bit_depth = default_bit_depth(codec) if bit_depth is None else bit_depth
        self._squares = 0.0
        self._peak = 0.0
        self._codec = codec
        self._wav = self._ffmpeg = self._errors = self._soundfile = None
        self._finished = False
        self.committed = False
        # Full scale of the integer samples written (the 16-bit stats of the codecs' defaults).
        self._scale = 32768.0
        folder = os.path.dirname(os.path.abspath(path))
        # The folders this writer makes: an abort removes them again while they are empty.
        self._made = []
        missing = folder
        while not os.path.isdir(missing):
            self._made.append(missing)
            missing = os.path.dirname(missing)
        os.makedirs(folder, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix="." + CODECS[codec][0], dir=folder)
        os.close(fd)
        try:
            self._open(sample_rate, channels, codec, bitrate, bit_depth)
        except BaseException:
            self.abort()  # an encoder that cannot start leaves no temporary file
            raise

    def _open(self, sample_rate: int, channels: int, codec: str, bitrate: str | None, bit_depth: int | None) -> None:
        if (codec, bit_depth) in _SOUNDFILE_FORMATS:
            self._scale = float(1 << (bit_depth - 1))
            # The other formats through libsndfile; each codec's default keeps its encoder (wave,
            # ffmpeg), so default stems stay the bytes they always were.
            import soundfile

            container, subtype = _SOUNDFILE_FORMATS[codec, bit_depth]
            self._soundfile = soundfile.SoundFile(self._tmp, "w", sample_rate, channels, subtype, format=container)
            if subtype == "FLOAT":
                # libsndfile stamps a float WAV's PEAK chunk with the time of writing: no chunk,
                # so the same stems are the same file.
                soundfile_without_peak_chunk(self._soundfile)
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
        self._errors = tempfile.TemporaryFile()
        try:
            self._ffmpeg = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._errors)
        except FileNotFoundError:
            raise AudioEncodeError(f"{self.path}: ffmpeg is not installed: {codec} stems need it (wav and flac do not)") from None

    def _ffmpeg_said(self) -> str:
        self._ffmpeg.wait()
        self._errors.seek(0)
        lines = self._errors.read().decode("utf-8", "replace").strip().splitlines()
        return lines[-1] if lines else f"exit code {self._ffmpeg.returncode}"

    def write(self, block: np.ndarray) -> None:
        """Append a block.

        Args:
            block: ``[k, channels]`` float32 samples, full scale 1.0.
        Raises:
            AudioEncodeError: NaN or Inf in ``block``, or the encoder refused it.
        """
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
            try:
                self._ffmpeg.stdin.write(np.ascontiguousarray(block, dtype="<f4").tobytes())
            except BrokenPipeError:
                said = self._ffmpeg_said()
                self.abort()  # the encoder is gone: nothing of the file stays
                raise AudioEncodeError(f"{self.path}: ffmpeg could not encode {self._codec}: {said}") from None

    @property
    def rms(self) -> float:
        """RMS of the samples written so far (after clipping to the file's format), full scale 1.0."""
        return float(np.sqrt(self._squares / max(1, self.frames * 2)))

    @property
    def peak(self) -> float:
        """Largest absolute sample written so far (after clipping to the file's format)."""
        return self._peak

    def finish(self) -> None:
        """Complete the file under its temporary name (``commit()`` moves it into place)."""
        try:
            if self._soundfile is not None:
                self._soundfile.close()
            elif self._wav is not None:
                self._wav.close()
            else:
                try:
                    self._ffmpeg.stdin.close()
                except BrokenPipeError:
                    pass
                if self._ffmpeg.wait() != 0:
                    raise AudioEncodeError(f"{self.path}: ffmpeg could not encode {self._codec}: {self._ffmpeg_said()}")
            apply_default_mode(self._tmp)
            self._finished = True
        except BaseException:
            self.abort()
            raise

    def commit(self) -> None:
        """Move the finished file into place."""
        try:
            os.replace(self._tmp, self.path)
            self.committed = True
        except BaseException:
            self.abort()
            raise

    def close(self) -> None:
        """Finish the file and move it into place."""
        self.finish()
        self.commit()

    def abort(self) -> None:
        """Drop the temporary file."""
        if self._ffmpeg is not None and self._ffmpeg.poll() is None:
            self._ffmpeg.kill()
            self._ffmpeg.wait()
        if self._errors is not None:
            self._errors.close()
        if self._soundfile is not None and not self._soundfile.closed:
            self._soundfile.close()
        if self._wav is not None and not self._finished:
            try:
                self._wav.close()  # may fail to write its header (a full disk): the file goes anyway
            except Exception:  # noqa: BLE001
                pass
        if os.path.exists(self._tmp):
            os.remove(self._tmp)
        for folder in self._made:
            try:
                os.rmdir(folder)
            except OSError:
                break  # not empty (another stem, another file): kept, with its parents

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        if kind is None:
            self.close()
        else:
            self.abort()


def write_audio(path: str, waveform: np.ndarray, sample_rate: int = 44100, codec: str = "wav", bitrate: str | None = "128k",
                bit_depth: int | None = None) -> None:
    """Write a waveform atomically (see AudioWriter).

    Args:
        path: the file to write.
        waveform: ``[samples, channels]`` float32.
        sample_rate, codec, bitrate, bit_depth: as AudioWriter (``bit_depth`` None: the codec's
            default).
    Raises:
        AudioEncodeError; ValueError for bad settings.
    """
    with AudioWriter(path, sample_rate, waveform.shape[1], codec, bitrate, bit_depth) as writer:
        writer.write(waveform)
