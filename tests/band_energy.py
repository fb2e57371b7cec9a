"""Where a signal's energy lies in the model's own STFT (periodic Hann 4096, hop 1024): what
Spleeter's 16 kHz models add above 11025 Hz (tests/test_16khz.py, tests/benchmarks/sixteen_khz.py)."""
import numpy as np


def band_energy(signal: np.ndarray, first_bin: int) -> float:
    """Energy of ``signal [n, channels]`` in the bins ``first_bin..2048`` of the model's own STFT
    (periodic Hann 4096, hop 1024, frames from sample 0; bin k is k * 44100 / 4096 Hz), over the
    frames that lie within the signal (the stems end abruptly where they are cropped)."""
    n = 4096
    window = np.hanning(n + 1)[:-1]
    frames = np.stack([signal[i : i + n].astype(np.float64) for i in range(0, len(signal) - n + 1, 1024)])
    return float(np.sum(np.abs(np.fft.rfft(frames * window[None, :, None], axis=1)[:, first_bin:]) ** 2))


def high_band_share(signal: np.ndarray, first_bin: int = 1025) -> float:
    """Share of the energy of ``signal`` from bin ``first_bin`` on (1025: above 11025 Hz)."""
    return band_energy(signal, first_bin) / band_energy(signal, 0)


def rounding_energy(signal: np.ndarray, first_bin: int) -> float:
    """The energy 16-bit rounding (uniform, LSB^2 / 12 per sample) puts in those bins on average."""
    n, window = 4096, np.hanning(4097)[:-1]
    frames = len(range(0, len(signal) - n + 1, 1024))
    return frames * signal.shape[1] * (n // 2 + 1 - first_bin) * float(np.sum(window**2)) * (2.0**-15) ** 2 / 12
