"""Audio decoding (tensorflow-io, ffmpeg fallback) and encoding (wav, ffmpeg codecs).

Decoded audio is ``[samples, 2]`` float32 at the requested rate: mono is
duplicated, more than two channels are downmixed by ffmpeg, other rates resampled.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import wave

import numpy as np

CODECS = {
    # codec name -> (file extension, ffmpeg encoder arguments)
    "wav": ("wav", None),
    "flac": ("flac", ["-c:a", "flac"]),
    "mp3": ("mp3", ["-c:a", "libmp3lame"]),
    "ogg": ("ogg", ["-c:a", "libvorbis"]),
    "m4a": ("m4a", ["-c:a", "aac"]),
}


_TFIO_LOCK = threading.Lock()


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


def decode_tfio(path: str, sample_rate: int, offset: float = 0.0, duration: float | None = None) -> np.ndarray:
    """Decode with tensorflow-io; raises on formats or layouts it cannot handle."""
    import tensorflow as tf
    import tensorflow_io as tfio

    # Concurrent AudioIOTensors in one process returned another file's samples (seen with the
    # multi-threaded DirectRunner): tensorflow-io decoding is serialised per process.
    with _TFIO_LOCK:
        audio = tfio.audio.AudioIOTensor(path)
        rate = int(audio.rate.numpy())
        channels = int(audio.shape[1])
        if channels > 2:
            raise ValueError(f"{channels} channels: downmix needs ffmpeg")
        start = int(round(offset * rate))
        stop = None if duration is None else start + int(round(duration * rate))
        samples = _scale_to_float(audio[start:stop].numpy())
    if samples.size and rate != sample_rate:
        samples = tfio.audio.resample(tf.constant(samples), rate_in=rate, rate_out=sample_rate).numpy()
    return samples


def decode_ffmpeg(path: str, sample_rate: int, offset: float = 0.0, duration: float | None = None) -> np.ndarray:
    """Decode with the ffmpeg binary to stereo float32 at ``sample_rate``."""
    if shutil.which("ffmpeg") is None:
        raise AudioDecodeError(path, "tensorflow-io cannot decode it and ffmpeg is not installed")
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", _ffmpeg_input(path)]
    if offset:
        cmd += ["-ss", f"{offset}"]
    if duration is not None:
        cmd += ["-t", f"{duration}"]
    cmd += ["-vn", "-f", "f32le", "-acodec", "pcm_f32le", "-ac", "2", "-ar", str(sample_rate), "pipe:1"]
    result = subprocess.run(cmd, capture_output=True)
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = message[-1] if message else f"ffmpeg exited with {result.returncode}"
        reason = reason.replace(_ffmpeg_input(path), "").strip(": ")
        raise AudioDecodeError(path, f"not decodable as audio (ffmpeg: {reason})")
    return np.frombuffer(result.stdout, dtype=np.float32).reshape(-1, 2).copy()


def load_audio(path: str, sample_rate: int = 44100, offset: float = 0.0, duration: float | None = None) -> np.ndarray:
    """Decode ``path`` to ``[samples, 2]`` float32 at ``sample_rate``.

    tensorflow-io first, ffmpeg when it fails. Raises AudioDecodeError naming the
    file and the reason (missing, empty, directory, not audio, no samples).
    """
    _check_readable(path)
    try:
        waveform = decode_tfio(path, sample_rate, offset, duration)
    except Exception:  # noqa: BLE001 - any tensorflow-io failure falls back to ffmpeg
        waveform = decode_ffmpeg(path, sample_rate, offset, duration)
    if waveform.ndim != 2 or waveform.shape[0] == 0:
        raise AudioDecodeError(path, "no audio samples decoded")
    waveform = _to_stereo(waveform)
    if not np.all(np.isfinite(waveform)):
        raise AudioDecodeError(path, "decoded audio contains NaN or Inf")
    return np.ascontiguousarray(waveform, dtype=np.float32)


def _write_wav(path: str, waveform: np.ndarray, sample_rate: int) -> None:
    pcm = np.round(np.clip(waveform, -1.0, 32767.0 / 32768.0) * 32768.0).astype("<i2")
    with wave.open(path, "wb") as out:
        out.setnchannels(waveform.shape[1])
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm.tobytes())


def _write_ffmpeg(path: str, waveform: np.ndarray, sample_rate: int, codec: str, bitrate: str | None) -> None:
    ext, args = CODECS[codec]
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "f32le", "-ar", str(sample_rate), "-ac", str(waveform.shape[1]), "-i", "pipe:0"]
    cmd += args
    if bitrate and codec not in ("flac",):
        cmd += ["-b:a", bitrate]
    cmd += ["-f", {"m4a": "mp4"}.get(codec, ext), "file:" + os.path.abspath(path)]
    result = subprocess.run(cmd, input=np.ascontiguousarray(waveform, dtype="<f4").tobytes(), capture_output=True)
    if result.returncode != 0:
        raise OSError(f"{path}: ffmpeg could not encode {codec}: {result.stderr.decode('utf-8', 'replace').strip()}")


def write_audio(path: str, waveform: np.ndarray, sample_rate: int = 44100, codec: str = "wav", bitrate: str | None = "128k") -> None:
    """Write ``waveform [samples, C]`` atomically (temporary name in the same folder, then rename).

    wav is 16-bit PCM (as Spleeter writes it); other codecs go through ffmpeg.
    """
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; known: {sorted(CODECS)}")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix="." + CODECS[codec][0], dir=folder)
    os.close(fd)
    try:
        if codec == "wav":
            _write_wav(tmp, waveform, sample_rate)
        else:
            _write_ffmpeg(tmp, waveform, sample_rate, codec, bitrate)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
