"""In-memory signals as the models' input, as a decoded file would be (``stembeam.Separator``)."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np

from stembeam.model.decode import check_rate
from stembeam.model.decoders import MAX_MAGNITUDE


def to_float(samples: np.ndarray) -> np.ndarray:
    """Samples as float32, integer PCM scaled to [-1, 1).

    Args:
        samples: an array of any shape: integer PCM of any width, signed or unsigned (scaled by
            its type's full range, unsigned types centred first), or floats (kept as they are).
    Returns:
        float32, the same shape.
    Raises:
        ValueError for booleans, complex numbers or anything else that is not samples.
    """
    dtype = samples.dtype
    if dtype.kind in "iu" and dtype.itemsize <= 8:
        bits = 8 * dtype.itemsize
        wide = samples.astype(np.float64)
        if dtype.kind == "u":
            wide -= float(1 << (bits - 1))
        return (wide / float(1 << (bits - 1))).astype(np.float32)
    if dtype.kind == "f":
        return samples.astype(np.float32, copy=False)
    raise ValueError(f"waveform of dtype {dtype}: expected float or integer PCM samples")


def as_model_input(waveform, sample_rate, target_rate: int = 44100) -> np.ndarray:
    """An in-memory signal as a decoded file would be.

    Args:
        waveform: ``[n]`` or ``[n, C]`` samples, float (full scale 1.0) or integer PCM of any
            width, signed or unsigned (scaled by its type's full range).
        sample_rate: its rate in Hz (a whole number within DecodeLimits' rates).
        target_rate: the model's rate.
    Returns:
        ``[m, 2]`` float32 at ``target_rate``: mono duplicated at full level; stereo at
        ``target_rate`` as it is; any other rate or channel count through ffmpeg's resampler
        and downmix, as ``load_audio`` sends such files.
    Raises:
        ValueError: a shape, dtype, rate or values that cannot be audio (NaN, Inf, samples
        beyond +-1000).
    """
    rate = check_rate(sample_rate)
    samples = np.asarray(waveform)
    if samples.ndim == 1:
        samples = samples[:, np.newaxis]
    if samples.ndim != 2 or samples.shape[1] == 0 or samples.shape[0] == 0:
        raise ValueError(f"waveform of shape {np.shape(waveform)}: expected [samples] or [samples, channels] with samples")
    if samples.shape[1] > samples.shape[0] and samples.shape[1] > 8:
        raise ValueError(f"waveform of shape {samples.shape}: expected [samples, channels] (channels last)")
    samples = to_float(samples)
    # Two reductions, no temporary arrays: np.max and np.min give NaN if any sample is NaN.
    high, low = float(np.max(samples)), float(np.min(samples))
    if not (np.isfinite(high) and np.isfinite(low)):
        raise ValueError("waveform contains NaN or Inf")
    peak = max(high, -low)
    if peak > MAX_MAGNITUDE:
        raise ValueError(f"waveform reaches {peak:.3g}, beyond +-{MAX_MAGNITUDE:g} (full scale is 1.0): not audio samples")
    channels = samples.shape[1]
    if rate == int(target_rate) and channels <= 2:
        return np.ascontiguousarray(samples if channels == 2 else np.repeat(samples, 2, axis=1), dtype=np.float32)
    if shutil.which("ffmpeg") is None:
        raise ValueError(f"a {channels}-channel waveform at {rate} Hz needs ffmpeg to become {target_rate} Hz stereo: install ffmpeg")
    out_channels = 1 if channels == 1 else 2
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-f", "f32le", "-ar", str(rate), "-ac", str(channels), "-i", "pipe:0",
           "-f", "f32le", "-acodec", "pcm_f32le", "-ac", str(out_channels), "-ar", str(int(target_rate)), "pipe:1"]
    result = subprocess.run(cmd, input=np.ascontiguousarray(samples, dtype="<f4").tobytes(), capture_output=True)
    if result.returncode != 0:
        lines = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ValueError(f"ffmpeg could not convert the waveform: {lines[-1] if lines else result.returncode}")
    converted = np.frombuffer(result.stdout, dtype="<f4").reshape(-1, out_channels)
    return np.ascontiguousarray(converted if out_channels == 2 else np.repeat(converted, 2, axis=1), dtype=np.float32)
