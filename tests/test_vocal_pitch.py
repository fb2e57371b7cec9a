"""Vocal pitch (``--vocal_pitch``): model/features/pitch.py's pYIN against librosa.pyin, the
method stembeam used before issue 31 (tests.librosa_reference.pyin_frames), each run through the
same SourceAnalyser (stereo 44.1 kHz in, mono 22.05 kHz, 10 s Framer pieces decoded one by one).

(a) Synthetic voices with a known f0 (notes with glides and vibrato, 20 formant-shaped harmonics,
breath, consonant bursts and pauses, white noise), generated here: mir_eval's raw pitch accuracy
and voicing recall, no worse than librosa's. (b) ../shared's cc0-multitrack vocals, the true stems
(and, marked slow, the official 2-stems model's): in at least 95 % of the frames both call voiced
the two f0 agree within 50 cents, and they agree on voicing in at least 90 % of the frames.
"""
import os

import mir_eval
import numpy as np
import pytest
import soundfile

import stembeam.model.features.analysis as analysis
from stembeam.model.features.analysis import SourceAnalyser
from stembeam.model.features.framing import ANALYSIS_RATE, HOP
from tests.conftest import CC0, CC0_SONGS, needs_shared
from tests.librosa_reference import pyin_frames

RATE = 44100


def synthetic_voice(seed: int, low_midi: float, high_midi: float, seconds: float = 10.0, vibrato_cents: float = 40.0, snr_db=None, breath_db=None,
                    consonants: bool = False) -> tuple:
    """``(signal [n, 2] float32 at 44.1 kHz, f0 [n] Hz, 0 where unvoiced)``: phrases of 3-6 notes
    (0.25-0.8 s, a 60 ms glide between them, 5.5 Hz vibrato) separated by 0.3-0.9 s pauses."""
    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    midi, voiced = np.zeros(n), np.zeros(n, dtype=bool)
    position, note = int(0.4 * RATE), rng.uniform(low_midi, high_midi)
    while position < n - int(0.6 * RATE):
        for _ in range(rng.integers(3, 7)):
            length = min(int(rng.uniform(0.25, 0.8) * RATE), n - position)
            note = float(np.clip(note + rng.choice([-7, -5, -3, -2, -1, 1, 2, 3, 4, 5, 7]), low_midi, high_midi))
            midi[position : position + length], voiced[position : position + length] = note, True
            position += length
        position += int(rng.uniform(0.3, 0.9) * RATE)
    # A 60 ms glide between notes (into a phrase: from the last note of the one before).
    filled = midi.copy()
    last = np.maximum.accumulate(np.where(voiced, np.arange(n), 0))
    filled[~voiced] = midi[last[~voiced]]
    glide = int(0.06 * RATE)
    midi = np.convolve(np.pad(filled, glide, mode="edge"), np.ones(glide) / glide, mode="same")[glide:-glide]
    phrase_edges = np.flatnonzero(np.diff(voiced.astype(np.int8)))
    t = np.arange(n) / RATE
    midi = midi + voiced * (vibrato_cents / 100) * np.sin(2 * np.pi * 5.5 * t + rng.uniform(0, 2 * np.pi))
    f0 = np.where(voiced, 440.0 * 2 ** ((midi - 69) / 12), 0.0)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    ramp = np.convolve(voiced.astype(float), np.hanning(int(0.03 * RATE)), mode="same")
    ramp /= ramp.max()
    voice = np.zeros(n)
    for k in range(1, 21):
        frequency = k * f0
        formants = 1 + 4 * np.exp(-(((frequency - 650) / 250) ** 2)) + 2.5 * np.exp(-(((frequency - 1150) / 300) ** 2)) + np.exp(-(((frequency - 2600) / 400) ** 2))
        voice += (frequency < 0.45 * RATE) * formants / k * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    voice *= ramp
    power = np.mean(voice[voiced] ** 2)
    if breath_db is not None:
        voice += ramp * rng.standard_normal(n) * np.sqrt(power * 10 ** (breath_db / 10))
    if consonants:
        for edge in phrase_edges[::2]:  # a 70 ms high-passed noise burst before each phrase
            burst = np.diff(rng.standard_normal(int(0.07 * RATE) + 1)) * np.sqrt(power * 10 ** (-12 / 10))
            start = max(0, edge - burst.shape[0] - int(0.02 * RATE))
            voice[start : start + burst.shape[0]] += burst * np.hanning(burst.shape[0])
    if snr_db is not None:
        voice += rng.standard_normal(n) * np.sqrt(power * 10 ** (-snr_db / 10))
    voice *= 0.3 / np.max(np.abs(voice))
    return np.stack([voice, 0.9 * voice], axis=1).astype(np.float32), np.where(ramp > 0.99, f0, 0.0)


VOICES = {
    "tenor, clean": dict(seed=1, low_midi=48, high_midi=67),
    "soprano, breathy": dict(seed=2, low_midi=62, high_midi=81, breath_db=-20),
    "bass, 20 dB noise": dict(seed=3, low_midi=40, high_midi=58, snr_db=20),
    "alto, consonants, 10 dB noise": dict(seed=4, low_midi=53, high_midi=74, snr_db=10, consonants=True),
    "tenor, 100-cent vibrato, 30 dB noise": dict(seed=5, low_midi=50, high_midi=69, vibrato_cents=100, snr_db=30),
}


def _f0(signal: np.ndarray, rate: int, method=None) -> np.ndarray:
    """``[frames]`` f0 of ``signal`` through the analysis; ``method`` replaces its pitch_frames."""
    saved = analysis.pitch_frames
    if method is not None:
        analysis.pitch_frames = method
    try:
        analyser = SourceAnalyser(rate, signal.shape[1], pitch=True)
        for start in range(0, signal.shape[0], int(analysis.BLOCK_S * rate)):
            analyser.write(signal[start : start + int(analysis.BLOCK_S * rate)])
        return analyser.finish().f0
    finally:
        analysis.pitch_frames = saved


def _melody_scores(truth: np.ndarray, estimate: np.ndarray) -> tuple:
    """``(raw pitch accuracy, voicing recall, voicing false alarm)`` (mir_eval, 50 cents) of frame-wise f0s."""
    times = np.arange(truth.shape[0]) * HOP / ANALYSIS_RATE
    ref_voicing, ref_cent, est_voicing, est_cent = mir_eval.melody.to_cent_voicing(times, truth, times, np.nan_to_num(estimate, nan=0.0))
    recall, false_alarm = mir_eval.melody.voicing_measures(ref_voicing, est_voicing)
    return mir_eval.melody.raw_pitch_accuracy(ref_voicing, ref_cent, est_voicing, est_cent), recall, false_alarm


def test_synthetic_voices_pitch_no_worse_than_librosas_pyin():
    rows = []
    for name, recipe in VOICES.items():
        signal, f0 = synthetic_voice(**recipe)
        truth = f0[np.arange(1 + signal.shape[0] // (2 * HOP)) * 2 * HOP].astype(np.float64)  # frame i centred at i x 512 samples of 22.05 kHz
        ours, theirs = _f0(signal, RATE), _f0(signal, RATE, pyin_frames)
        assert ours.shape == theirs.shape == truth.shape
        rows.append((name, _melody_scores(truth, ours), _melody_scores(truth, theirs), float(np.mean((ours == theirs) | (np.isnan(ours) & np.isnan(theirs))))))
    print("\nsynthetic voices: raw pitch accuracy / voicing recall / voicing false alarm (mir_eval, 50 cents), stembeam vs librosa.pyin; identical frames")
    for name, (rpa, recall, false_alarm), (rpa_ref, recall_ref, false_alarm_ref), same in rows:
        print(f"  {name:<38} {rpa:.3f} / {recall:.3f} / {false_alarm:.3f}   vs {rpa_ref:.3f} / {recall_ref:.3f} / {false_alarm_ref:.3f}   {100 * same:.2f} %")
    for name, (rpa, recall, _), (rpa_ref, recall_ref, _), _ in rows:
        assert rpa >= rpa_ref and recall >= recall_ref, name
        assert rpa >= 0.9 and recall >= 0.8, name  # the voices are pitched as generated: the measure can fail
    assert min(same for *_, same in rows) >= 0.995


def _agreement(ours: np.ndarray, theirs: np.ndarray) -> tuple:
    """``(share of the frames both call voiced whose f0 agree within 50 cents, share of frames with the same voicing, frames both voiced)``."""
    both = np.isfinite(ours) & np.isfinite(theirs)
    cents = 1200 * np.abs(np.log2(ours[both] / theirs[both]))
    return float(np.mean(cents <= 50)), float(np.mean(np.isfinite(ours) == np.isfinite(theirs))), int(both.sum())


def _compare_on(vocals: dict) -> None:
    rows = {name: _agreement(_f0(signal, RATE), _f0(signal, RATE, pyin_frames)) for name, signal in vocals.items()}
    print("\nvocal pitch vs librosa.pyin: f0 within 50 cents where both voiced / same voicing / frames both voiced")
    for name, (pitch, voicing, count) in rows.items():
        print(f"  {name:<34} {100 * pitch:6.2f} %  {100 * voicing:6.2f} %  {count}")
    for name, (pitch, voicing, count) in rows.items():
        assert count > 200 and pitch >= 0.95 and voicing >= 0.90, name


@needs_shared
def test_true_vocals_pitch_agrees_with_librosas_pyin():
    _compare_on({f"{song} true vocals": soundfile.read(os.path.join(CC0, song, "vocals.flac"), dtype="float32")[0] for song in CC0_SONGS})


@needs_shared
@pytest.mark.slow
def test_separated_vocals_pitch_agrees_with_librosas_pyin(official_graph):
    vocals = {}
    for song in CC0_SONGS:
        mixture, _ = soundfile.read(os.path.join(CC0, song, "mixture.flac"), dtype="float32")
        vocals[f"{song} separated vocals"] = official_graph.separate(mixture)["vocals"].astype(np.float32)
    _compare_on(vocals)
