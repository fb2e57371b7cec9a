"""Units and references of the MIR features (issue 20, item 6): each against an independent
computation (numpy on the raw signal, pyloudnorm's K-weighting filter) on mono, stereo and
48 kHz input, so a feature reads the same whatever the file's channel count or rate."""
import os

import numpy as np
import pyloudnorm
import pytest
import scipy.signal
import soundfile
import soxr

from stembeam.model.features.analysis import SHORT_TERM_STEP_TICKS, SourceAnalyser, SourceInput, analyse_track
from stembeam.model.features.loudness import TICK_S, LoudnessMeter
from stembeam.model.features.spectral import SILENT_FRAME_DB
from tests.conftest import CC0, needs_shared

SINE_DBFS = 20 * np.log10(np.sqrt(0.5))  # -3.0103: RMS of a full-scale sine


def _power_db(x) -> float:
    """10 log10 of the mean square over every sample and channel (numpy, float64)."""
    x = np.asarray(x, dtype=np.float64)
    return float(10 * np.log10(np.mean(np.square(x))))


def _write(path, signal, rate):
    soundfile.write(str(path), np.asarray(signal, dtype=np.float32), rate, subtype="FLOAT")
    return str(path)


def _resample(signal, rate, to):
    return soxr.resample(np.asarray(signal, dtype=np.float32), rate, to, quality="VHQ")


def _stems_of(song, seconds=10.0):
    """A cc0 song's mixture and its true stems (accompaniment = drums + bass + other), ``seconds`` long, 44.1 kHz stereo."""
    read = lambda name: soundfile.read(os.path.join(CC0, song, f"{name}.flac"), dtype="float32", frames=int(seconds * 44100))[0]  # noqa: E731
    vocals = read("vocals")
    accompaniment = read("drums") + read("bass") + read("other")
    return vocals + accompaniment, vocals, accompaniment


@needs_shared
def test_share_db_is_the_mean_square_ratio_whatever_the_mixtures_channels_and_rate(tmp_path):
    """The stems (stereo, 44.1 kHz, as the corpus job writes them) against a mono mixture, its
    dual-mono copy, a 48 kHz copy of each, and a stereo mixture with its 48 kHz copy: share_db
    is 10 log10 of the stem's mean square over the mixture's (per sample and channel), as numpy
    computes it on the raw signals, so the mono file, its dual-mono copy and the 48 kHz copies
    agree within 0.02 dB."""
    rate = 44100
    mixture, vocals, accompaniment = _stems_of("2.Lithium")
    left = {"mixture": mixture[:, :1], "vocals": vocals[:, :1], "accompaniment": accompaniment[:, :1]}
    cases = {}
    # Mono source: the model duplicates its channel, so the stems are dual-mono.
    stems = {name: SourceInput(_write(tmp_path / f"mono-{name}.wav", np.repeat(left[name], 2, axis=1), rate)) for name in ("vocals", "accompaniment")}
    truth = {name: _power_db(left[name]) - _power_db(left["mixture"]) for name in stems}
    cases["mono"] = (_write(tmp_path / "mono.wav", left["mixture"], rate), stems, truth)
    cases["dual-mono"] = (_write(tmp_path / "dual.wav", np.repeat(left["mixture"], 2, axis=1), rate), stems, truth)
    cases["mono 48 kHz"] = (_write(tmp_path / "mono48.wav", _resample(left["mixture"], rate, 48000), 48000), stems, truth)
    cases["dual-mono 48 kHz"] = (_write(tmp_path / "dual48.wav", _resample(np.repeat(left["mixture"], 2, axis=1), rate, 48000), 48000), stems, truth)
    stereo = {name: SourceInput(_write(tmp_path / f"stereo-{name}.wav", signal, rate)) for name, signal in (("vocals", vocals), ("accompaniment", accompaniment))}
    stereo_truth = {"vocals": _power_db(vocals) - _power_db(mixture), "accompaniment": _power_db(accompaniment) - _power_db(mixture)}
    cases["stereo"] = (_write(tmp_path / "stereo.wav", mixture, rate), stereo, stereo_truth)
    cases["stereo 48 kHz"] = (_write(tmp_path / "stereo48.wav", _resample(mixture, rate, 48000), 48000), stereo, stereo_truth)
    found = {}
    for case, (mixture_path, case_stems, case_truth) in cases.items():
        rows = {row["source"]: row for row in analyse_track(case, {**case_stems, "mixture": SourceInput(mixture_path)}).sources}
        assert rows["mixture"]["share_db"] == 0.0
        found[case] = {name: rows[name]["share_db"] for name in case_truth}
        print(f"\nshare_db, mixture {case}: " + ", ".join(f"{n} {found[case][n]:+.3f} (numpy {case_truth[n]:+.3f})" for n in sorted(case_truth)))
    for case, (_, _, case_truth) in cases.items():
        for name, expected in case_truth.items():
            assert found[case][name] == pytest.approx(expected, abs=0.02), (case, name)
    for name in ("vocals", "accompaniment"):
        assert max(found[c][name] for c in ("mono", "dual-mono", "mono 48 kHz", "dual-mono 48 kHz")) - min(
            found[c][name] for c in ("mono", "dual-mono", "mono 48 kHz", "dual-mono 48 kHz")) < 0.02


def _analysed(signal, rate):
    analyser = SourceAnalyser(rate, signal.shape[1])
    for start in range(0, signal.shape[0], 123457):  # blocks that do not line up with the frames
        analyser.write(signal[start : start + 123457])
    return analyser.finish()


def _sine(rms_dbfs, seconds, rate, channels, freq=997.0):
    t = np.arange(int(seconds * rate)) / rate
    tone = (10 ** ((rms_dbfs - SINE_DBFS) / 20) * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(tone[:, None], channels, axis=1)


@needs_shared
def test_frame_rms_db_is_dbfs():
    """Frame ``rms_db`` is the RMS in dBFS of the frame's samples (the Hann window's power gain
    compensated): a full-scale sine reads -3.01 dB in every inner frame, as numpy's RMS of the raw
    sine, and as the source's ``rms_dbfs``, on mono, stereo and 48 kHz input; on real music the
    power mean of the frames equals the mean square of the raw mono mix (resampled to 22.05 kHz by scipy) within 0.03 dB; the
    spectral means' -60 dBFS gate keeps a sine at -57 dBFS RMS and drops one at -63."""
    for rate, channels in ((44100, 1), (44100, 2), (48000, 2), (22050, 1)):
        sine = _sine(SINE_DBFS, 5.0, rate, channels)
        analysed = _analysed(sine, rate)
        inner = analysed.frame_db[4:-4]
        print(f"\nfull-scale sine, {rate} Hz x{channels}: frame rms_db {inner.min():.3f}..{inner.max():.3f}, numpy {_power_db(sine):.3f}, rms_dbfs {analysed.row()['rms_dbfs']:.3f}")
        assert _power_db(sine) == pytest.approx(SINE_DBFS, abs=0.01) and analysed.row()["rms_dbfs"] == pytest.approx(SINE_DBFS, abs=0.01)
        assert np.all(np.abs(inner - SINE_DBFS) < 0.02)
    mixture, _, _ = _stems_of("2.Lithium")
    for case, signal, rate, (up, down) in (
        ("stereo", mixture, 44100, (1, 2)), ("mono", mixture[:, :1], 44100, (1, 2)), ("stereo 48 kHz", _resample(mixture, 44100, 48000), 48000, (147, 320)),
    ):
        analysed = _analysed(signal, rate)
        # Hann frames every N/4 weigh every sample alike (the squared window sums to a constant),
        # so the power mean of the frames is the mean square of what was framed: the mono mix
        # at 22.05 kHz (here resampled by scipy, not soxr as the features are).
        frames = float(10 * np.log10(np.mean(np.power(10.0, analysed.frame_db.astype(np.float64) / 10))))
        reference = _power_db(scipy.signal.resample_poly(np.mean(signal, axis=1, dtype=np.float64), up, down))
        print(f"\nLithium {case}: power mean of frame rms_db {frames:.3f} dB, numpy mean square of the mono mix at 22.05 kHz {reference:.3f} dB")
        assert frames == pytest.approx(reference, abs=0.03)
    for level, kept in ((SILENT_FRAME_DB + 3, True), (SILENT_FRAME_DB - 3, False)):
        for rate, channels in ((44100, 1), (48000, 2)):
            row = _analysed(_sine(level, 3.0, rate, channels), rate).row()
            assert (row["spectral_centroid_hz_mean"] is not None) == kept, (level, rate, channels)
            if kept:
                assert row["spectral_centroid_hz_mean"] == pytest.approx(997.0, rel=0.02)


def _k_weighted_lufs(signal, rate, starts, length):
    """Short-term loudness of ``signal [n, channels]`` over ``[start, start + length)`` sample windows:
    pyloudnorm's K-weighting filter (scipy lfilter on the whole array), mean square summed over channels."""
    meter = pyloudnorm.Meter(rate)
    filtered = np.asarray(signal, dtype=np.float64)
    for stage in meter._filters.values():
        filtered = stage.apply_filter(filtered.T).T
    power = np.sum(np.square(filtered), axis=1)
    sums = np.concatenate([[0.0], np.cumsum(power)])
    with np.errstate(divide="ignore"):
        return -0.691 + 10 * np.log10((sums[starts + length] - sums[starts]) / length)


def test_short_term_loudness_times_are_exact_after_ten_minutes():
    """603 s of silence and then, from exactly 600 s, a 1 kHz tone, at 22.05 kHz (mono and
    stereo), 11025 Hz, 44.1 kHz and 48 kHz: the short-term series (3 s windows, value i said to
    start at i x short_term_hop_s) has its first non-silent window where the tone starts (i = 5971,
    the window [597.1 s, 600.1 s)), 6001 values, and its values over the tone's onset equal the
    loudness computed with numpy on the exact [i x 0.1 s, i x 0.1 s + 3 s) sample spans."""
    hop = SHORT_TERM_STEP_TICKS * TICK_S
    assert hop == pytest.approx(0.1, abs=1e-12)
    onset_s, total_s = 600.0, 603.0
    truth_first = int(np.floor((onset_s - 3.0) / hop + 1e-9)) + 1  # 5971: the first window that ends after the onset
    for rate, channels in ((22050, 1), (22050, 2), (11025, 1), (44100, 1), (48000, 2)):
        meter = LoudnessMeter(rate, channels)
        onset, total = int(onset_s * rate), int(total_s * rate)
        tail = np.zeros((total - onset + 10 * rate, channels), np.float32)
        t = np.arange(total - onset) / rate
        tail[10 * rate :] = (0.1 * np.sin(2 * np.pi * 1000 * t))[:, None]  # the tone, after 10 s of the silence
        step = int(7.3 * rate)
        position = 0
        while position < onset - 10 * rate:  # the silence before the tail, block by block (no 10-minute array)
            count = min(step, onset - 10 * rate - position)
            meter.write(np.zeros((count, channels), np.float32))
            position += count
        for start in range(0, tail.shape[0], step):
            meter.write(tail[start : start + step])
        series = meter.short_term_lufs(SHORT_TERM_STEP_TICKS)
        first = int(np.argmax(np.isfinite(series)))
        indices = np.arange(truth_first - 5, truth_first + 25)
        starts = np.round(indices * hop * rate).astype(np.int64) - (onset - 10 * rate)
        expected = _k_weighted_lufs(tail, rate, starts, int(round(3.0 * rate)))
        got = series[indices]
        finite = np.isfinite(expected)
        worst = float(np.max(np.abs(got[finite] - expected[finite])))
        print(f"\n{rate} Hz x{channels}: {series.shape[0]} values, first non-silent window {first} (starts {first * hop:.2f} s; truth {truth_first}); "
              f"onset values vs numpy on exact spans: max |diff| {worst:.4f} LU")
        assert series.shape[0] == int(round((total_s - 3.0) / hop)) + 1
        assert abs(first - truth_first) <= 1
        assert np.array_equal(np.isfinite(got), finite) and worst < 0.05
