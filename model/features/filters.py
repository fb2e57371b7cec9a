"""The analysis window, frequency axes and filter banks, as librosa 0.11 defines them, in numpy.

librosa is not imported at run time: importing any of it compiles (or loads from numba's cache)
its numba functions, ~20 s of one core on a fresh install or worker, and a cache two processes
write at once can crash every later one (numba/numba#10128). tests/test_feature_reference.py
checks each function here against librosa's own.
"""
from __future__ import annotations

import numpy as np
import scipy.signal


def hann_window(n_fft: int) -> np.ndarray:
    """``[n_fft]`` periodic Hann window (librosa.filters.get_window("hann", n_fft, fftbins=True))."""
    return scipy.signal.get_window("hann", n_fft, fftbins=True)


def fft_frequencies(sr: float, n_fft: int) -> np.ndarray:
    """``[1 + n_fft // 2]`` Hz of the STFT's bins."""
    return np.fft.rfftfreq(n=n_fft, d=1.0 / sr)


def hz_to_mel(frequencies) -> np.ndarray:
    """Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, logarithmic above; same shape as ``frequencies``."""
    frequencies = np.asanyarray(frequencies, dtype=np.float64)
    f_sp = 200.0 / 3
    mels = frequencies / f_sp
    min_log_mel, logstep = 1000.0 / f_sp, np.log(6.4) / 27.0
    log_t = frequencies >= 1000.0
    mels[log_t] = min_log_mel + np.log(frequencies[log_t] / 1000.0) / logstep
    return mels


def mel_to_hz(mels) -> np.ndarray:
    """Hz of Slaney mel values (the inverse of hz_to_mel), same shape, float64."""
    mels = np.asanyarray(mels, dtype=np.float64)
    f_sp = 200.0 / 3
    freqs = f_sp * mels
    min_log_mel, logstep = 1000.0 / f_sp, np.log(6.4) / 27.0
    log_t = mels >= min_log_mel
    freqs[log_t] = 1000.0 * np.exp(logstep * (mels[log_t] - min_log_mel))
    return freqs


def mel_filters(sr: float, n_fft: int, n_mels: int = 128) -> np.ndarray:
    """``[n_mels, 1 + n_fft // 2]`` float32 Slaney-normalised triangular mel filters from 0 Hz to
    sr / 2 (librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)).

    Args:
        sr: the signal's rate (Hz).
        n_fft: the STFT's frame length.
        n_mels: the mel bands.
    """
    fftfreqs = fft_frequencies(sr, n_fft)
    mel_f = mel_to_hz(np.linspace(hz_to_mel(np.array([0.0]))[0], hz_to_mel(np.array([sr / 2.0]))[0], n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = np.subtract.outer(mel_f, fftfreqs)
    weights = np.zeros((n_mels, fftfreqs.shape[0]), dtype=np.float32)
    for i in range(n_mels):
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
    weights *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, np.newaxis]
    return weights


def hz_to_octs(frequencies) -> np.ndarray:
    """Octaves above C0 at A440 (librosa.hz_to_octs): log2(f / (440 / 16))."""
    return np.log2(np.asanyarray(frequencies) / (440.0 / 16))


def chroma_filters(sr: float, n_fft: int, n_chroma: int = 12) -> np.ndarray:
    """``[n_chroma, 1 + n_fft // 2]`` float32 chroma filter bank at A440, C first, Gaussian in
    octaves around C5, each column L2-normalised (librosa.filters.chroma(sr=sr, n_fft=n_fft, tuning=0.0)).

    Args:
        sr: the signal's rate (Hz).
        n_fft: the STFT's frame length.
        n_chroma: bins per octave.
    """
    frequencies = np.linspace(0, sr, n_fft, endpoint=False)[1:]
    frqbins = n_chroma * hz_to_octs(frequencies)
    frqbins = np.concatenate(([frqbins[0] - 1.5 * n_chroma], frqbins))
    binwidthbins = np.concatenate((np.maximum(frqbins[1:] - frqbins[:-1], 1.0), [1]))
    distance = np.subtract.outer(frqbins, np.arange(0, n_chroma, dtype="d")).T
    half = np.round(float(n_chroma) / 2)
    distance = np.remainder(distance + half + 10 * n_chroma, n_chroma) - half
    weights = np.exp(-0.5 * (2 * distance / np.tile(binwidthbins, (n_chroma, 1))) ** 2)
    length = np.sum(np.abs(weights) ** 2, axis=0, keepdims=True) ** 0.5  # librosa.util.normalize(norm=2, axis=0)
    length[length < np.finfo(weights.dtype).tiny] = 1.0
    weights = weights / length
    weights *= np.tile(np.exp(-0.5 * (((frqbins / n_chroma - 5.0) / 2) ** 2)), (n_chroma, 1))
    weights = np.roll(weights, -3 * (n_chroma // 12), axis=0)
    return np.ascontiguousarray(weights[:, : int(1 + n_fft / 2)], dtype=np.float32)
