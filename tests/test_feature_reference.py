"""The features' numpy code (model/features: filters, spectral, rhythm, tonality, peaks) against
librosa 0.11, whose definitions it keeps, on the mixtures and true stems of ../shared's
cc0-multitrack songs and on click tracks: filter banks, STFT and spectral statistics within
float32 rounding, onsets, tempo, beats and tuning peaks identical. (Vocal pitch: test_vocal_pitch.py.)"""
import os

import numpy as np
import pytest
import soundfile
import soxr

from stembeam.model.features.analysis import SourceAnalyser
from stembeam.model.features.filters import chroma_filters, hann_window, mel_filters
from stembeam.model.features.framing import ANALYSIS_RATE, HOP, N_FFT
from stembeam.model.features.peaks import localmax, localmin, peak_pick
from stembeam.model.features.rhythm import beat_frames, mean_tempogram, onset_frames, tempo_from_tempogram
from stembeam.model.features.spectral import WINDOW_POWER, SpectralStats, mel_db, power_spectrum, rms_db
from stembeam.model.features.tonality import spectral_peaks
from tests.conftest import CC0, CC0_SONGS, needs_shared
from tests.librosa_reference import librosa

RATE = 44100


@pytest.fixture(scope="module")
def sources():
    """``{"song/source": [n, 2] float32 at 44.1 kHz}``: each cc0 song's mixture, true vocals and accompaniment (drums + bass + other)."""
    if not os.path.isdir(CC0):
        pytest.skip(f"reference data not found at {CC0}")
    found = {}
    for song in CC0_SONGS:
        read = lambda name: soundfile.read(os.path.join(CC0, song, f"{name}.flac"), dtype="float32")[0]  # noqa: E731,B023
        found[f"{song}/mixture"] = read("mixture")
        found[f"{song}/vocals"] = read("vocals")
        found[f"{song}/accompaniment"] = read("drums") + read("bass") + read("other")
    return found


@pytest.fixture(scope="module")
def signals(sources):
    """``{"song/source": [n] float32}``: the mono mix at 22.05 kHz padded as librosa's center=True pads it."""
    return {name: np.pad(soxr.resample(signal.mean(axis=1), RATE, ANALYSIS_RATE), N_FFT // 2) for name, signal in sources.items()}


@pytest.fixture(scope="module")
def envelopes(sources):
    """``{"song/source": onset envelope [n]}`` as the analysis streams it."""
    found = {}
    for name, signal in sources.items():
        analyser = SourceAnalyser(RATE, 2)
        analyser.write(signal)
        found[name] = analyser.finish().onset_envelope
    return found


def test_filter_banks_and_window_equal_librosas():
    mel = librosa.filters.mel(sr=ANALYSIS_RATE, n_fft=N_FFT, n_mels=128)
    chroma = librosa.filters.chroma(sr=ANALYSIS_RATE, n_fft=N_FFT, tuning=0.0)
    print(f"\nmel filters max |diff| {np.max(np.abs(mel_filters(ANALYSIS_RATE, N_FFT) - mel)):.2e}, chroma {np.max(np.abs(chroma_filters(ANALYSIS_RATE, N_FFT) - chroma)):.2e}")
    assert mel_filters(ANALYSIS_RATE, N_FFT).dtype == mel.dtype and np.allclose(mel_filters(ANALYSIS_RATE, N_FFT), mel, rtol=1e-6, atol=1e-9)
    assert chroma_filters(ANALYSIS_RATE, N_FFT).dtype == chroma.dtype and np.allclose(chroma_filters(ANALYSIS_RATE, N_FFT), chroma, rtol=1e-6, atol=1e-9)
    assert np.array_equal(hann_window(N_FFT), librosa.filters.get_window("hann", N_FFT, fftbins=True))


def test_local_extrema_and_peak_picking_equal_librosas(envelopes):
    """On random integers (plenty of ties and plateaus) and on the songs' onset envelopes."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.integers(0, 4, size=(7, 50)).astype(np.float32)
        assert np.array_equal(localmax(x, axis=1), librosa.util.localmax(x, axis=1))
        assert np.array_equal(localmin(x, axis=0), librosa.util.localmin(x, axis=0))
        row = x[0] / 3
        for wait in (0, 1, 3):
            args = {"pre_max": 2, "post_max": 1, "pre_avg": 3, "post_avg": 2, "delta": 0.05, "wait": wait}
            assert np.array_equal(peak_pick(row, **args), librosa.util.peak_pick(row, **args))
    for name, env in envelopes.items():
        found = onset_frames(env)
        assert np.array_equal(found, librosa.onset.onset_detect(onset_envelope=env, sr=ANALYSIS_RATE, hop_length=HOP)), name
        assert found.size > 20, name


@needs_shared
def test_spectrum_and_spectral_statistics_equal_librosas(signals):
    """Per frame: power (float32 FFT vs librosa's float64 one) within 2e-6 of the frame's peak,
    frame level within 0.001 dB, mel bands within 80 dB of the frame's loudest within 0.002 dB,
    onset strength within 1e-4 of its peak; per source: centroid
    within 0.01 Hz, flatness within 1e-5 relative, zero-crossing rate exact, MFCC means within 0.001."""
    worst = {}
    for name, y in signals.items():
        magnitude = np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP, center=False))
        power = power_spectrum(y)
        reference = np.square(magnitude).T
        worst["power"] = max(worst.get("power", 0), float(np.max(np.abs(power - reference) / np.maximum(reference.max(axis=1, keepdims=True), 1e-12))))
        frame_db = rms_db(power)
        reference_db = 20 * np.log10(np.maximum(librosa.feature.rms(S=magnitude, frame_length=N_FFT)[0].astype(np.float64) / np.sqrt(WINDOW_POWER), 1e-6))
        loud = reference_db > -100
        worst["frame dB"] = max(worst.get("frame dB", 0), float(np.max(np.abs(frame_db[loud] - reference_db[loud]))))
        mel = mel_db(power)
        reference_mel = librosa.power_to_db(librosa.feature.melspectrogram(S=np.square(magnitude), sr=ANALYSIS_RATE), ref=1.0, top_db=None)
        # float32's FFT rounding sits ~130 dB under a frame's loudest band: compare the bands within 80 dB of it.
        audible = reference_mel > reference_mel.max(axis=0, keepdims=True) - 80
        worst["mel dB"] = max(worst.get("mel dB", 0), float(np.max(np.abs(mel[audible] - reference_mel[audible]))))
        stats = SpectralStats()
        stats.add(y, power, np.sqrt(power), mel, frame_db)
        found = stats.summary()
        keep = reference_db > -60
        expected = {
            "spectral_centroid_hz_mean": float(np.mean(librosa.feature.spectral_centroid(S=magnitude[:, keep], sr=ANALYSIS_RATE, n_fft=N_FFT))),
            "spectral_flatness_mean": float(np.mean(librosa.feature.spectral_flatness(S=magnitude[:, keep]))),
            "zero_crossing_rate_mean": float(np.mean(librosa.feature.zero_crossing_rate(y, frame_length=N_FFT, hop_length=HOP, center=False)[0][keep])),
        }
        mfcc = np.mean(librosa.feature.mfcc(S=reference_mel[:, keep], n_mfcc=13), axis=1)
        assert np.array_equal(frame_db > -60, keep), name
        worst["centroid Hz"] = max(worst.get("centroid Hz", 0), abs(found["spectral_centroid_hz_mean"] - expected["spectral_centroid_hz_mean"]))
        worst["flatness (relative)"] = max(worst.get("flatness (relative)", 0), abs(found["spectral_flatness_mean"] / expected["spectral_flatness_mean"] - 1))
        worst["zero crossings"] = max(worst.get("zero crossings", 0), abs(found["zero_crossing_rate_mean"] - expected["zero_crossing_rate_mean"]))
        worst["mfcc"] = max(worst.get("mfcc", 0), float(np.max(np.abs(np.subtract(found["mfcc_mean"], mfcc)))))
        env = librosa.onset.onset_strength(S=reference_mel, sr=ANALYSIS_RATE, center=False)
        ours = np.concatenate([[0.0], np.maximum(0.0, mel[:, 1:] - mel[:, :-1]).mean(axis=0)])
        worst["onset strength (relative)"] = max(worst.get("onset strength (relative)", 0), float(np.max(np.abs(ours - env)) / np.max(env)))
    print("\nnumpy vs librosa, worst over the songs' sources: " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))
    assert worst["power"] < 2e-6 and worst["frame dB"] < 1e-3 and worst["mel dB"] < 2e-3
    assert worst["centroid Hz"] < 0.01 and worst["flatness (relative)"] < 1e-5 and worst["zero crossings"] < 1e-12 and worst["mfcc"] < 1e-3
    assert worst["onset strength (relative)"] < 1e-4


def _clicks(bpm: float, seconds: float = 30.0) -> np.ndarray:
    clicks = librosa.clicks(times=np.arange(0.5, seconds, 60.0 / bpm), sr=RATE, length=int(seconds * RATE))
    return np.stack([clicks, clicks], axis=1).astype(np.float32)


def test_tempo_and_beats_equal_librosas(sources, envelopes):
    """The coarse tempo (tempogram mean, log-normal prior) and the beats of the dynamic programme
    at it and at other tempi (odd and even frames per beat), on the songs' sources, click tracks
    and a 5-minute loop (several tempogram pieces): identical to librosa's."""
    cases = dict(envelopes)
    for bpm in (87, 96, 133, 140):
        analyser = SourceAnalyser(RATE, 2)
        analyser.write(_clicks(bpm))
        cases[f"clicks {bpm}"] = analyser.finish().onset_envelope
    looped = SourceAnalyser(RATE, 2)
    for _ in range(10):
        looped.write(sources[f"{CC0_SONGS[1]}/accompaniment"])
    cases["5-minute loop"] = looped.finish().onset_envelope
    compared = 0
    for name, env in cases.items():
        coarse = tempo_from_tempogram(mean_tempogram(env))
        assert coarse == float(librosa.feature.tempo(onset_envelope=env, sr=ANALYSIS_RATE, hop_length=HOP)[0]), name
        for bpm in (coarse, coarse * 2, coarse / 2, 100.0, 121.0):
            beats = beat_frames(env, bpm)
            _, expected = librosa.beat.beat_track(onset_envelope=env, sr=ANALYSIS_RATE, hop_length=HOP, bpm=bpm)
            assert np.array_equal(beats, expected), (name, bpm)
            compared += beats.size
    print(f"\n{len(cases)} envelopes x 5 tempi: {compared} beats, all as librosa's")
    assert compared > 3000


def test_tuning_peaks_equal_librosas_piptrack(signals):
    """The interpolated spectral peaks the tuning is read from: the same (frame, bin) entries
    and frequencies as librosa.piptrack's, magnitudes within float32 rounding."""
    for name, y in list(signals.items())[:6]:
        power = power_spectrum(y)
        magnitude = np.sqrt(power)
        frequency, strength = spectral_peaks(magnitude)
        pitches, mags = librosa.piptrack(S=magnitude.T, sr=ANALYSIS_RATE, n_fft=N_FFT)
        found = pitches > 0
        assert frequency.shape[0] == int(found.sum()) > 1000, name
        assert np.array_equal(frequency, pitches.T[found.T]), name
        assert np.allclose(strength, mags.T[found.T], rtol=1e-6, atol=0), name
