"""MIR features (model/features, transforms/features, `stembeam features`, `pipeline --features`):
each measure against an independent reference on signals generated here or on ../shared's songs."""
import json
import math
import os

import mir_eval
import numpy as np
import pyloudnorm
import pytest
import soundfile

from stembeam.model.features.analysis import SourceAnalyser, SourceInput, analyse_track
from stembeam.model.features.framing import ANALYSIS_RATE, FRAME_S
from stembeam.model.features.loudness import LoudnessMeter
from stembeam.model.features.rhythm import tempo_and_beats
from stembeam.model.features.vocals import vocal_activity
from tests.conftest import CC0, CC0_SONGS, needs_shared
from tests.librosa_reference import librosa

RATE = 44100


def _sine(dbfs, seconds, rate=48000, freq=1000.0):
    t = np.arange(int(seconds * rate)) / rate
    tone = 10 ** (dbfs / 20) * np.sin(2 * np.pi * freq * t)
    return np.stack([tone, tone], axis=1)


def _meter(signal, rate=48000, block_s=7.3):
    """A LoudnessMeter fed ``signal`` in blocks that do not line up with its 10 ms ticks."""
    meter = LoudnessMeter(rate, signal.shape[1])
    step = int(block_s * rate)
    for start in range(0, signal.shape[0], step):
        meter.write(signal[start : start + step])
    return meter


@pytest.mark.parametrize(
    "levels, expected",
    [
        ([(-23, 20)], -23.0),  # Tech 3341 case 1
        ([(-33, 20)], -33.0),  # case 2
        ([(-36, 10), (-23, 60), (-36, 10)], -23.0),  # case 3: relative gate
        ([(-72, 10), (-36, 10), (-23, 60), (-36, 10), (-72, 10)], -23.0),  # case 4: absolute and relative gates
        ([(-26, 20), (-20, 20.1), (-26, 20)], -23.0),  # case 5
    ],
    ids=["sine-23", "sine-33", "case3", "case4", "case5"],
)
def test_ebu_tech_3341_integrated_loudness(levels, expected):
    signal = np.concatenate([_sine(level, seconds) for level, seconds in levels])
    assert _meter(signal).integrated_lufs() == pytest.approx(expected, abs=0.1)


@pytest.mark.parametrize(
    "levels, expected",
    [([(-20, 20), (-30, 20)], 10), ([(-20, 20), (-15, 20)], 5), ([(-40, 20), (-20, 20)], 20), ([(-50, 20), (-35, 20), (-20, 20), (-35, 20), (-50, 20)], 15)],
    ids=["case1", "case2", "case3", "case4"],
)
def test_ebu_tech_3342_loudness_range(levels, expected):
    """Tech 3342's LRA cases (its tolerance: +-1 LU)."""
    signal = np.concatenate([_sine(level, seconds) for level, seconds in levels])
    assert _meter(signal).loudness_range_lu() == pytest.approx(expected, abs=1.0)


def _write(path, signal, rate=RATE):
    soundfile.write(str(path), np.asarray(signal, dtype=np.float32), rate, subtype="FLOAT")
    return str(path)


def _finite_everywhere(value):
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite_everywhere(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite_everywhere(v) for v in value)
    return True


def test_silence_and_very_short_sources_give_nulls_not_nan(tmp_path):
    silence = _write(tmp_path / "silence.wav", np.zeros((RATE * 5, 2)))
    short = _write(tmp_path / "short.wav", 0.1 * _sine(0, 0.2, RATE))
    sources = {"mixture": SourceInput(silence), "vocals": SourceInput(silence), "accompaniment": SourceInput(short)}
    result = analyse_track("quiet", sources, vocal_pitch=True, frames=True)
    rows = {row["source"]: row for row in result.sources}
    assert all(row["status"] == "ok" for row in rows.values())
    for name in ("mixture", "vocals"):
        assert rows[name]["integrated_lufs"] is None and rows[name]["loudness_range_lu"] is None and rows[name]["rms_dbfs"] is None
        assert rows[name]["sample_peak_dbfs"] is None and rows[name]["spectral_centroid_hz_mean"] is None
    assert rows["accompaniment"]["integrated_lufs"] is None  # 0.2 s: under one 400 ms gating block
    assert rows["accompaniment"]["sample_peak_dbfs"] == pytest.approx(-20.0, abs=0.01)
    track = result.track
    assert track["vocal_presence_ratio"] == 0.0 and track["vocal_segments"] == [] and track["first_vocal_s"] is None
    assert track["tempo_bpm"] is None and track["vocal_f0_median_hz"] is None and track["vocal_voiced_ratio"] == 0.0
    assert _finite_everywhere([result.sources, result.track, result.frames])
    json.dumps([result.sources, result.track, result.frames], allow_nan=False)


@needs_shared
def test_streamed_loudness_equals_pyloudnorm_on_a_five_minute_track():
    """The Lithium mixture looped to 5 minutes, fed in 10 s blocks, against pyloudnorm on the whole array."""
    song, rate = soundfile.read(os.path.join(CC0, "2.Lithium", "mixture.flac"))
    track = np.tile(song, (10, 1))
    meter = _meter(track, rate, 10.0)
    reference = pyloudnorm.Meter(rate)
    integrated, lra = reference.integrated_loudness(track), reference.loudness_range(track)
    print(f"\nstreamed vs pyloudnorm: integrated {meter.integrated_lufs():.4f} vs {integrated:.4f} LUFS, LRA {meter.loudness_range_lu():.4f} vs {lra:.4f} LU")
    assert meter.integrated_lufs() == pytest.approx(integrated, abs=0.05)
    assert meter.loudness_range_lu() == pytest.approx(lra, abs=0.05)


@needs_shared
def test_block_size_does_not_change_the_other_features():
    """Every per-frame series and source value with 10 s blocks vs the whole 30 s in one block
    (tolerances printed: the streamed resampler and frames make them equal to float precision)."""
    song, rate = soundfile.read(os.path.join(CC0, "2.Lithium", "mixture.flac"), dtype="float32")
    results = []
    for step in (song.shape[0], int(10 * rate), 12345):
        analyser = SourceAnalyser(rate, 2, pitch=False, tonality=True)
        for start in range(0, song.shape[0], step):
            analyser.write(song[start : start + step])
        results.append(analyser.finish())
    whole = results[0]
    for part in results[1:]:
        assert part.frame_db.shape == whole.frame_db.shape == (1 + song.shape[0] // 1024,)
        deviations = {
            "rms_db (dB)": float(np.max(np.abs(part.frame_db - whole.frame_db))),
            "onset envelope (relative)": float(np.max(np.abs(part.onset_envelope - whole.onset_envelope)) / np.max(whole.onset_envelope)),
            "chroma (relative)": float(np.max(np.abs(part.tonality.chroma - whole.tonality.chroma)) / np.max(whole.tonality.chroma)),
        }
        a, b = part.row(), whole.row()
        for key in ("integrated_lufs", "loudness_range_lu", "rms_dbfs", "spectral_centroid_hz_mean", "spectral_flatness_mean", "zero_crossing_rate_mean", "onset_rate_hz"):
            deviations[key] = abs(a[key] - b[key])
        deviations["mfcc_mean"] = float(np.max(np.abs(np.subtract(a["mfcc_mean"], b["mfcc_mean"]))))
        print("\nblock-wise vs whole:", {k: f"{v:.2e}" for k, v in deviations.items()})
        assert deviations["rms_db (dB)"] < 0.01 and deviations["onset envelope (relative)"] < 1e-3 and deviations["chroma (relative)"] < 1e-4
        assert deviations["integrated_lufs"] < 1e-6 and deviations["spectral_centroid_hz_mean"] < 0.1 and deviations["onset_rate_hz"] == 0
        assert deviations["mfcc_mean"] < 0.01


def _analyse(signal, rate=RATE, **kwargs):
    analyser = SourceAnalyser(rate, signal.shape[1] if signal.ndim == 2 else 1, **kwargs)
    analyser.write(signal if signal.ndim == 2 else signal[:, None])
    return analyser.finish()


@pytest.mark.parametrize("bpm", [87, 96, 133, 140])
def test_click_track_tempo_and_beats(bpm):
    beats = np.arange(0.5, 30.0, 60.0 / bpm)
    clicks = librosa.clicks(times=beats, sr=RATE, length=30 * RATE)
    tempo, found = tempo_and_beats(_analyse(clicks).onset_envelope)
    f_measure = mir_eval.beat.f_measure(mir_eval.beat.trim_beats(beats), mir_eval.beat.trim_beats(found))
    print(f"\n{bpm} BPM clicks: tempo {tempo:.2f} ({100 * (tempo / bpm - 1):+.2f} %), beat F {f_measure:.3f}")
    assert tempo == pytest.approx(bpm, rel=0.02)
    assert f_measure >= 0.9


def _intersection_over_union(found, truth):
    grid = np.arange(0, 20, 0.001)
    inside = lambda segments: np.any([(grid >= a) & (grid < b) for a, b in segments], axis=0)  # noqa: E731
    a, b = inside(found), inside(truth)
    return float(np.sum(a & b) / np.sum(a | b))


def test_tone_bursts_give_vocal_segments():
    truth = [(2.0, 5.0), (7.5, 9.0), (12.0, 17.3)]
    t = np.arange(20 * RATE) / RATE
    gate = np.any([(t >= a) & (t < b) for a, b in truth], axis=0)
    bursts = 0.2 * np.sin(2 * np.pi * 440 * t) * gate + 1e-4 * np.random.default_rng(0).standard_normal(t.shape)
    analysed = _analyse(bursts)
    _, segments = vocal_activity(analysed.frame_db, analysed.duration_s)
    found = [(s["start_s"], s["end_s"]) for s in segments]
    iou = _intersection_over_union(found, truth)
    print(f"\ntone bursts {truth} -> segments {found}, IoU {iou:.3f}")
    assert len(found) == 3 and iou >= 0.9


def test_220_hz_tone_median_f0_within_10_cents(tmp_path):
    tone = _write(tmp_path / "tone.wav", 0.3 * _sine(0, 4, RATE, 220.0))
    track = analyse_track("tone", {"vocals": SourceInput(tone)}, vocal_pitch=True).track
    cents = 1200 * np.log2(track["vocal_f0_median_hz"] / 220.0)
    print(f"\n220 Hz tone: median f0 {track['vocal_f0_median_hz']:.3f} Hz ({cents:+.2f} cents), voiced {track['vocal_voiced_ratio']:.2f}")
    assert abs(cents) <= 10 and track["vocal_voiced_ratio"] > 0.9


def _chord(midi_notes, seconds=1.0):
    t = np.arange(int(seconds * RATE)) / RATE
    envelope = np.exp(-1.5 * t)
    notes = [sum(0.5**h * np.sin(2 * np.pi * librosa.midi_to_hz(m) * (h + 1) * t) for h in range(4)) for m in midi_notes]
    return 0.1 * envelope * np.sum(notes, axis=0)


@pytest.mark.parametrize(
    "tonic, mode, chords",
    [
        ("C", "major", [(48, 60, 64, 67), (53, 60, 65, 69), (55, 59, 62, 67), (48, 60, 64, 67)]),  # C F G C
        ("A", "minor", [(45, 57, 60, 64), (50, 57, 62, 65), (52, 56, 59, 64), (45, 57, 60, 64)]),  # Am Dm E Am
        ("F#", "major", [(42, 54, 58, 61), (47, 59, 63, 66), (49, 61, 65, 68), (42, 54, 58, 61)]),  # F# B C# F#
    ],
    ids=["C-major", "A-minor", "F#-major"],
)
def test_cadence_key(tmp_path, tonic, mode, chords):
    cadence = np.concatenate([_chord(chord) for chord in chords] * 2)
    path = _write(tmp_path / "cadence.wav", np.stack([cadence, cadence], axis=1))
    track = analyse_track("cadence", {"accompaniment": SourceInput(path)}).track
    print(f"\nI-IV-V-I in {tonic} {mode}: {track['key_tonic']} {track['key_mode']} (r = {track['key_strength']:.3f}), tuning {track['tuning_cents']} cents")
    assert (track["key_tonic"], track["key_mode"]) == (tonic, mode)
    assert abs(track["tuning_cents"]) <= 10


@needs_shared
def test_vocal_activity_of_separated_vocals_agrees_with_true_vocals(official_graph):
    """Frame agreement of the vocal activity read from the official model's vocals and from the true vocals stem."""
    agreements = {}
    for song in CC0_SONGS:
        mixture, rate = soundfile.read(os.path.join(CC0, song, "mixture.flac"), dtype="float32")
        truth, _ = soundfile.read(os.path.join(CC0, song, "vocals.flac"), dtype="float32")
        separated = official_graph.separate(mixture)["vocals"]
        actives = []
        for signal in (truth, separated):
            analysed = _analyse(signal, rate)
            actives.append(vocal_activity(analysed.frame_db, analysed.duration_s)[0])
        agreements[song] = (float(np.mean(actives[0] == actives[1])), float(actives[0].mean()), float(actives[1].mean()))
    print("\nvocal activity, separated vs true vocals (frame agreement, presence true, presence separated):")
    for song, (agreement, true_ratio, separated_ratio) in agreements.items():
        print(f"  {song}: {agreement:.3f}  {true_ratio:.3f}  {separated_ratio:.3f}")
    assert np.mean([a for a, _, _ in agreements.values()]) >= 0.8


def _parquet_rows(output, name):
    import glob

    import pyarrow.parquet as pq

    files = sorted(glob.glob(os.path.join(output, "features", f"{name}-*.parquet")))
    assert len(files) == 1
    return sorted(pq.read_table(files[0]).to_pylist(), key=lambda r: (r["track_id"], r.get("source") or ""))


def _song_folder(root, name, bpm, vocals_from, seconds=6.0):
    """``root/name/{mixture,drums,vocals}.wav``: clicks at ``bpm`` and a 330 Hz 'voice' from ``vocals_from`` s."""
    folder = root / name
    folder.mkdir(parents=True)
    t = np.arange(int(seconds * RATE)) / RATE
    drums = librosa.clicks(times=np.arange(0.25, seconds, 60.0 / bpm), sr=RATE, length=t.shape[0])
    voice = 0.2 * np.sin(2 * np.pi * 330 * t) * (t >= vocals_from)
    for stem, signal in (("drums", drums), ("vocals", voice), ("mixture", drums + voice)):
        _write(folder / f"{stem}.wav", np.stack([signal, signal], axis=1))
    return folder


def _query_example(output, vocals_after, tempo_min, tempo_max):
    """Track ids examples/features_query.py finds."""
    import importlib.util

    from tests.conftest import REPO

    spec = importlib.util.spec_from_file_location("features_query", os.path.join(REPO, "examples", "features_query.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.query(output, vocals_after, tempo_min, tempo_max).column("track_id").to_pylist()


def _features_job(*argv, status=0):
    from stembeam.pipeline.features import run

    assert run(list(argv)) == status


def test_features_job_error_rows_resume_and_same_tables(tmp_path):
    """An unreadable source is an error row naming it (the rest intact); a rerun reuses every
    stored track and writes the same tables; a changed option (--vocal_pitch) recomputes."""
    data = tmp_path / "songs"
    _song_folder(data, "a", 120, 2.0)
    broken = _song_folder(data, "b", 96, 1.0)
    (broken / "vocals.wav").write_text("not audio\n")
    output = str(tmp_path / "out")
    _features_job("--input", str(data), "--output", output, status=3)  # 3: finished, with failed rows
    sources, tracks = _parquet_rows(output, "sources"), _parquet_rows(output, "tracks")
    assert [(r["track_id"], r["source"], r["status"]) for r in sources] == [
        ("a", "drums", "ok"), ("a", "mixture", "ok"), ("a", "vocals", "ok"), ("b", "drums", "ok"), ("b", "mixture", "ok"), ("b", "vocals", "error")
    ]
    bad = sources[-1]["error"]
    assert bad.startswith(str(broken / "vocals.wav")) and "not decodable as audio" in bad
    a, b = tracks
    assert a["status"] == "ok" and a["tempo_bpm"] == pytest.approx(120, rel=0.02) and a["first_vocal_s"] == pytest.approx(2.0, abs=0.1)
    assert b["status"] == "error" and b["error"] == bad and b["tempo_bpm"] == pytest.approx(96, rel=0.02) and b["vocal_presence_ratio"] is None
    markers = {name: os.stat(os.path.join(output, "features", "_done", f"{name}.json")).st_mtime_ns for name in ("a", "b")}
    assert _query_example(output, 1.5, 110, 130) == ["a"] and _query_example(output, 2.5, 110, 130) == []

    _features_job("--input", str(data), "--output", output, status=3)
    assert _parquet_rows(output, "sources") == sources and _parquet_rows(output, "tracks") == tracks
    assert {name: os.stat(os.path.join(output, "features", "_done", f"{name}.json")).st_mtime_ns for name in markers} == markers  # reused

    _features_job("--input", str(data), "--output", output, "--vocal_pitch", status=3)
    again = {r["track_id"]: r for r in _parquet_rows(output, "tracks")}
    assert again["a"]["vocal_f0_median_hz"] == pytest.approx(330, rel=0.006)  # recomputed with pitch
    assert all(os.stat(os.path.join(output, "features", "_done", f"{name}.json")).st_mtime_ns != markers[name] for name in markers)


def test_unchanged_track_is_not_recomputed(tmp_path, monkeypatch):
    """The rerun's reuse is real: analyse_track is not called for a stored track, and is for a touched one."""
    import stembeam.model.features.analysis as analysis

    data = tmp_path / "songs"
    _song_folder(data, "a", 120, 2.0, seconds=4.0)
    touched = _song_folder(data, "b", 120, 2.0, seconds=4.0)
    output = str(tmp_path / "out")
    _features_job("--input", str(data), "--output", output, "--direct_num_workers", "1")
    calls = []
    original = analysis.analyse_track
    monkeypatch.setattr(analysis, "analyse_track", lambda track_id, *a, **k: calls.append(track_id) or original(track_id, *a, **k))
    os.utime(touched / "drums.wav", ns=(1, 1))
    _features_job("--input", str(data), "--output", output, "--direct_num_workers", "1")
    assert calls == ["b"]


@needs_shared
def test_pipeline_with_features_on_one_short_track(tmp_path):
    """The corpus job with --features --feature_frames --feature_plots on a manifest row cut with
    offset/duration: the mixture is analysed over the stems' span; a rerun reuses the stored rows."""
    from stembeam.pipeline.corpus import run
    from tests.conftest import EXAMPLE

    manifest = tmp_path / "m.csv"
    manifest.write_text(f"uri,track_id,offset,duration\n{EXAMPLE},example,1.0,6.0\n")
    output = str(tmp_path / "out")
    argv = ["--manifest", str(manifest), "--output", output, "--features", "--feature_frames", "--feature_plots"]
    assert run(argv) == 0
    sources = {r["source"]: r for r in _parquet_rows(output, "sources")}
    assert sorted(sources) == ["accompaniment", "mixture", "vocals"]
    assert all(r["status"] == "ok" and r["duration_s"] == pytest.approx(6.0) for r in sources.values())
    assert sources["mixture"]["source_uri"] == EXAMPLE and sources["vocals"]["source_uri"] == os.path.join(output, "stems", "example", "vocals.wav")
    assert sources["mixture"]["share_db"] == 0.0 and -12 < sources["vocals"]["share_db"] < 0 and -10 < sources["mixture"]["integrated_lufs"] < -5
    (track,) = _parquet_rows(output, "tracks")
    assert track["status"] == "ok" and track["tempo_source"] == "accompaniment" and 60 < track["tempo_bpm"] < 200 and track["key_tonic"] is not None
    frames = {r["source"]: r for r in _parquet_rows(output, "frames")}
    assert len(frames["vocals"]["rms_db"]) == len(frames["vocals"]["vocal_active"]) == 1 + int(6.0 * ANALYSIS_RATE) // 512
    assert frames["mixture"]["vocal_active"] is None and frames["vocals"]["frame_hop_s"] == pytest.approx(FRAME_S)
    png = os.path.join(output, "features", "plots", "example.png")
    with open(png, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    marker = os.path.join(output, "stems", "example", ".features.json")
    stamp = os.stat(marker).st_mtime_ns
    assert run(argv) == 0
    assert os.stat(marker).st_mtime_ns == stamp and _parquet_rows(output, "tracks") == [track]
    # Without --feature_frames the frames table of the earlier run is stale: dropped after the job.
    assert run(argv[:-2] + ["--feature_plots"]) == 0
    assert sorted(os.listdir(os.path.join(output, "features"))) == ["plots", "sources-00000-of-00001.parquet", "tracks-00000-of-00001.parquet"]


@needs_shared
@pytest.mark.slow
@pytest.mark.parametrize("long", [20, 60], ids=["20min", "60min"])
def test_pipeline_features_memory_does_not_grow_with_track_length(tmp_path, long):
    """Peak RSS of `pipeline --features` on the Lithium song looped to 5 minutes and to ``long`` minutes."""
    import subprocess

    from tests.test_reliability import _job, _manifest, _peak_rss_mb

    song = os.path.join(CC0, "2.Lithium", "mixture.flac")
    figures = {}
    for minutes in (5, long):
        path = str(tmp_path / f"looped_{minutes}.flac")
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-y", "-stream_loop", str(2 * minutes), "-i", "file:" + song, "-t", str(minutes * 60), "-c:a", "flac", "file:" + path],
            check=True,
        )
        manifest = _manifest(tmp_path / f"m{minutes}.csv", [(path, f"t{minutes}")])
        figures[minutes] = _peak_rss_mb(_job(manifest, str(tmp_path / f"out{minutes}"), "--features"))
        (track,) = _parquet_rows(str(tmp_path / f"out{minutes}"), "tracks")
        assert track["status"] == "ok" and track["tempo_bpm"] == pytest.approx(124, rel=0.03)
    print(f"\npipeline --features peak RSS: 5-minute track {figures[5]:.0f} MB, {long}-minute track {figures[long]:.0f} MB, ratio {figures[long] / figures[5]:.2f}")
    assert figures[long] <= 1.5 * figures[5]


@pytest.mark.slow
def test_features_job_reads_and_writes_gcs(tmp_path):
    """`stembeam features` with --input and --output in a gs:// bucket (gcp-storage-emulator)."""
    import io
    import subprocess
    import sys

    import pyarrow.parquet as pq
    from gcp_storage_emulator.server import create_server
    from google.cloud import storage as gcs

    from tests.conftest import REPO
    from tests.test_cloud import _free_port

    _song_folder(tmp_path / "songs", "a", 120, 2.0, seconds=4.0)
    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    env = dict(os.environ, STORAGE_EMULATOR_HOST=f"http://127.0.0.1:{port}", NO_GCE_CHECK="True")
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ.update(STORAGE_EMULATOR_HOST=env["STORAGE_EMULATOR_HOST"])
    try:
        client = gcs.Client.create_anonymous_client()
        client.project = "test"
        bucket = client.create_bucket("features")
        for name in ("mixture", "drums", "vocals"):
            bucket.blob(f"songs/a/{name}.wav").upload_from_filename(str(tmp_path / "songs" / "a" / f"{name}.wav"))
        job = subprocess.run(
            [sys.executable, "-m", "stembeam.pipeline.cli", "features", "--input", "gs://features/songs", "--output", "gs://features/out", "--feature_plots"],
            cwd=REPO, env=env, capture_output=True, text=True,
        )
        assert job.returncode == 0, job.stderr[-3000:]
        names = sorted(blob.name for blob in bucket.list_blobs(prefix="out/"))
        assert "out/features/plots/a.png" in names and "out/features/_done/a.json" in names
        (tracks,) = [n for n in names if n.startswith("out/features/tracks-")]
        (row,) = pq.read_table(io.BytesIO(bucket.blob(tracks).download_as_bytes())).to_pylist()
        assert row["status"] == "ok" and row["tempo_bpm"] == pytest.approx(120, rel=0.02) and row["first_vocal_s"] == pytest.approx(2.0, abs=0.1)
    finally:
        if saved is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        else:
            os.environ["STORAGE_EMULATOR_HOST"] = saved
        server.stop()
