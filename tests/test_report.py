"""``stembeam report``'s data (pipeline/report_page.py) from tables built in the test: safe data
files, relative audio links, failures grouped by reason, corpus aggregates equal to numpy's,
runs, 2/4/5-stem outputs with and without features, the envelope_db column, the files written
(local, stale shards removed) and the command line. The page itself is checked in a real browser
by tests/test_report_browser.py (``make test-browser``)."""
from __future__ import annotations

import base64
import datetime
import json
import os
import subprocess
import sys
import urllib.parse
import zlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stembeam.model.features.envelope import ENVELOPE_POINTS, envelope_db
from stembeam.model.features.schema import FRAMES_SCHEMA, SOURCES_SCHEMA, TRACKS_SCHEMA
from stembeam.pipeline import report_page
from stembeam.pipeline.outputs import OutputTables
from stembeam.pipeline.report_page import PageSettings, audio_href, box, build_report, histogram, reason_group, script_json, shard_of
from stembeam.transforms.records import METADATA_SCHEMA, RowContext, StemFacts, Track, error_row, metadata_row
from tests.conftest import REPO

HOSTILE = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>\u2028&amp;"
T0 = datetime.datetime(2026, 1, 5, 10, 0, tzinfo=datetime.timezone.utc)


def _data(files: dict, name: str):
    """The value a data file assigns (``window.STEMBEAM[key] = JSON;``)."""
    text = files[name].decode("utf-8")
    head, _, body = text.partition("] = ")
    assert head.startswith("(window.STEMBEAM = window.STEMBEAM || {})[") and body.endswith(";\n")
    return json.loads(body[:-2])


def _shard(files: dict, track_id: str, shards: int) -> dict:
    return _data(files, report_page.shard_file(shard_of(track_id, shards)))[track_id]


# ---------------------------------------------------------------------------------------------
# Building blocks


def test_data_files_are_script_literals_that_cannot_close_a_tag():
    """A data file holds no ``<``, ``>`` or ``&`` and no raw U+2028/2029 (which end a line in
    older JavaScript), whatever the strings, and parses back to the same value; NaN is refused."""
    value = {"id": HOSTILE, "reason": "</script><!-- \u2029 ]]> '\"", "n": [1.5, None]}
    data = script_json("shard:0", value)
    text = data.decode("utf-8")
    assert not set("<>&\u2028\u2029") & set(text)
    assert _data({"f": data}, "f") == value
    with pytest.raises(ValueError):
        script_json("x", {"v": float("nan")})


def test_audio_links_are_relative_to_the_report_folder_and_percent_encoded(tmp_path):
    """Stems inside the output are ``../stems/...`` (local or gs://), a local mixture elsewhere a
    relative path, a file a copy of the folder cannot reach (another bucket, local beside
    remote) has no link; every character a URL gives a meaning to is encoded."""
    output = str(tmp_path / "out")
    folder = os.path.join(output, "stems", 'a b#?%"<x>')
    assert audio_href(os.path.join(folder, "vocals.wav"), output) == "../stems/a%20b%23%3F%25%22%3Cx%3E/vocals.wav"
    assert audio_href(str(tmp_path / "music" / "song.flac"), output) == "../../music/song.flac"
    assert audio_href("file://" + str(tmp_path / "music" / "song.flac"), output) == "../../music/song.flac"
    assert audio_href("gs://bucket/out/stems/t/vocals.wav", "gs://bucket/out") == "../stems/t/vocals.wav"
    assert audio_href("gs://bucket/out/stems/t/vocals.wav", "gs://bucket/out/") == "../stems/t/vocals.wav"
    assert audio_href("gs://bucket/out2/stems/t/vocals.wav", "gs://bucket/out") is None
    assert audio_href("gs://music/song.mp3", output) is None
    assert audio_href("/music/song.mp3", "gs://bucket/out") is None
    assert audio_href(None, output) is None


def test_stem_links_hold_wherever_the_output_is():
    """The pipeline writes stems at {output}/stems/{folder}/{file}: their links are ../stems/...
    however --output was spelled (relative, gs://) and wherever the folder is now."""
    for uri in ("out/stems/a b/vocals.wav", "/data/out/stems/a b/vocals.wav", "gs://bucket/out/stems/a b/vocals.wav", "file:///o/stems/a b/vocals.wav"):
        assert report_page.stem_href(uri) == "../stems/a%20b/vocals.wav"
    assert report_page.stem_href('/o/stems/_script_alert(1)_"x#?/v.wav') == "../stems/_script_alert%281%29_%22x%23%3F/v.wav"


def test_failures_group_by_reason_without_their_file_names():
    a = "/music/a.mp3: not decodable as audio (ffmpeg: Invalid data found when processing input)"
    b = "gs://b/x y.mp3: not decodable as audio (ffmpeg: Invalid data found when processing input)"
    assert reason_group(a, ["/music/a.mp3", "a"]) == reason_group(b, ["gs://b/x y.mp3", "x y"]) == (
        "not decodable as audio (ffmpeg: Invalid data found when processing input)")
    assert reason_group("t1: features failed: ValueError: bad", ["/m/t1.wav", "t1"]) == "features failed: ValueError: bad"
    assert reason_group("/m/a.mp3", ["/m/a.mp3"]) == "/m/a.mp3"  # nothing left: the reason as it is


def test_corpus_aggregates_equal_numpy():
    """Boxes are numpy's quartiles, minimum and maximum; histograms count every value once in bins
    on multiples of their width; missing and non-finite values are left out."""
    rng = np.random.default_rng(0)
    values = rng.normal(-14, 3, 1001)
    stats = box(list(values) + [None, float("nan")])
    q1, median, q3 = np.percentile(values, [25, 50, 75])
    assert stats["n"] == 1001
    assert (stats["q1"], stats["median"], stats["q3"]) == (round(q1, 2), round(median, 2), round(q3, 2))
    assert (stats["min"], stats["max"], stats["mean"]) == (round(values.min(), 2), round(values.max(), 2), round(values.mean(), 2))
    assert box([None]) is None
    tempo = rng.uniform(61, 179, 500)
    hist = histogram(list(tempo), 5.0)
    edges = np.asarray(hist["edges"])
    assert edges[0] == 60 and edges[-1] == 180 and np.all(np.diff(edges) == 5)
    assert hist["counts"] == np.histogram(tempo, bins=edges)[0].tolist() and sum(hist["counts"]) == 500
    share = histogram([0.0, 100.0, 50.0, 2.5], 5.0, 0.0, 100.0)
    assert len(share["counts"]) == 20 and share["counts"][0] == 2 and share["counts"][10] == 1 and share["counts"][-1] == 1


def test_envelope_db_is_the_power_mean_of_equal_spans():
    """envelope_db: ENVELOPE_POINTS spans of frames, each its power mean in whole dB (the sources
    table's column); fewer points for fewer frames; the frame floor stays the floor."""
    levels = np.concatenate([np.full(1000, -10.0), np.full(1000, -40.0)])
    points = envelope_db(levels)
    assert len(points) == ENVELOPE_POINTS
    assert points[:100] == [-10] * 100 and points[100:] == [-40] * 100
    mixed = envelope_db(np.tile([-10.0, -20.0], 200))  # each span: 2 frames, one of each
    assert set(mixed) == {round(10 * np.log10((0.1 + 0.01) / 2))} == {-13}
    assert envelope_db(np.array([-6.0, -120.0, -3.0])) == [-6, -120, -3]
    assert envelope_db(np.zeros(0)) == []
    odd = envelope_db(np.arange(401, dtype=float) * -0.1)  # 401 frames: spans of 2 or 3 frames, none empty
    assert len(odd) == ENVELOPE_POINTS and odd[0] > odd[-1]


def test_envelope_db_of_an_analysed_source(tmp_path):
    """The sources table's envelope_db from the analysis of a real file: 6 s of a sine at -20 dBFS
    RMS then 4 s of silence give -20 dB over the first 60 % of the points (the spans across the
    edge between) and the floor after; stereo or mono, 44.1 or 48 kHz alike."""
    import soundfile

    from stembeam.model.features.analysis import SourceInput, analyse_source

    for rate, channels in ((44100, 2), (48000, 1)):
        t = np.arange(6 * rate) / rate
        tone = np.sqrt(2) * 0.1 * np.sin(2 * np.pi * 440 * t)  # RMS 0.1: -20 dBFS
        signal = np.concatenate([tone, np.zeros(4 * rate)])
        path = str(tmp_path / f"tone-{rate}.wav")
        soundfile.write(path, np.repeat(signal[:, None], channels, axis=1).astype(np.float32), rate, subtype="FLOAT")
        envelope = analyse_source(path, SourceInput(path)).row()["envelope_db"]  # the sources table's column
        assert len(envelope) == ENVELOPE_POINTS
        assert envelope[2:118] == [-20] * 116 and envelope[122:] == [-120] * 78, envelope
        assert -24 <= envelope[0] <= -20  # the first frame is centred on the first sample (zero padding before it)
        edge = envelope[118:122]
        assert edge == sorted(edge, reverse=True) and len([v for v in edge if -120 < v < -20]) <= 2


# ---------------------------------------------------------------------------------------------
# Tables as the jobs write them


def _metadata(tracks: dict, failed: dict, output: str, created=T0) -> pa.Table:
    """Metadata rows: ``tracks`` {id: (stems, duration)}, ``failed`` {id: (uri, reason)}."""
    rows = []
    for k, (track_id, (stems, duration)) in enumerate(tracks.items()):
        when = created + datetime.timedelta(seconds=10 * k)
        for stem in stems:
            folder = Track(track_id, f"/music/{k}.flac").folder_name  # where the pipeline writes them
            context = RowContext(f"spleeter:{len(stems)}stems", "wav", "0.1.0", "float32", 16, 1024)
            row = metadata_row(context, track_id, f"/music/{k}.flac",
                               stem=StemFacts(stem, f"{output}/stems/{folder}/{stem}.wav", 44100, 2, duration, 0.1, 0.5))
            rows.append({**row, "created_at": when})
    for track_id, (uri, reason) in failed.items():
        rows.append({**error_row(RowContext("spleeter:2stems", "wav", "0.1.0", "float32", 16, 1024), track_id, uri, reason), "created_at": created})
    return pa.Table.from_pylist(rows, schema=METADATA_SCHEMA)


def _features(tracks: dict, frames: bool = False, seed: int = 0) -> tuple:
    """Feature tables for ``tracks`` {id: (stems, duration)}: sources, tracks (and frames) rows."""
    rng = np.random.default_rng(seed)
    sources, rows, frame_rows = [], [], []
    for k, (track_id, (stems, duration)) in enumerate(tracks.items()):
        for name in ("mixture",) + tuple(stems):
            sources.append({
                "track_id": track_id, "source": name, "source_uri": f"/music/{k}.flac" if name == "mixture" else f"/x/{track_id}/{name}.wav",
                "duration_s": duration, "sample_rate": 44100, "integrated_lufs": float(rng.uniform(-30, -8)), "loudness_range_lu": 4.0,
                "sample_peak_dbfs": -1.0, "rms_dbfs": -20.0, "share_db": 0.0 if name == "mixture" else float(rng.uniform(-20, 0)),
                "mfcc_mean": [0.0] * 13, "envelope_db": rng.integers(-90, 0, ENVELOPE_POINTS).tolist(), "status": "ok", "feature_version": "3",
            })
            if frames:
                short = rng.uniform(-40, -10, int(duration * 10)).astype(np.float32)
                short[:5] = np.nan  # silence
                frame_rows.append({
                    "track_id": track_id, "source": name, "frame_hop_s": 512 / 22050, "rms_db": rng.uniform(-60, -10, int(duration / (512 / 22050))).tolist(),
                    "vocal_active": None, "f0_hz": rng.uniform(100, 400, int(duration / (512 / 22050))).tolist() if name == "vocals" else None,
                    "short_term_hop_s": 0.1, "short_term_lufs": [None if np.isnan(v) else float(v) for v in short], "feature_version": "3",
                })
        beats = np.arange(0.5, duration, 0.5)
        rows.append({
            "track_id": track_id, "tempo_bpm": float(rng.uniform(80, 160)), "tempo_source": "accompaniment", "beat_times_s": beats.tolist(),
            "vocal_presence_ratio": float(rng.uniform(0, 1)), "vocal_segments": [{"start_s": 1.0, "end_s": 4.5}, {"start_s": 6.0, "end_s": 9.0}],
            "first_vocal_s": 1.0, "key_tonic": ["C", "F#", "A"][k % 3], "key_mode": ["major", "minor"][k % 2], "key_strength": 0.7, "tuning_cents": 3.0,
            "chroma_mean": [0.5] * 12, "tonality_source": "accompaniment", "vocal_f0_median_hz": 220.0 if frames else None, "status": "ok",
            "feature_version": "3",
        })
    frames_table = pa.Table.from_pylist(frame_rows, schema=FRAMES_SCHEMA) if frames else None
    return pa.Table.from_pylist(sources, schema=SOURCES_SCHEMA), pa.Table.from_pylist(rows, schema=TRACKS_SCHEMA), frames_table


def _settings(output, **kwargs) -> PageSettings:
    return PageSettings(output=output, generated_at=T0, **kwargs)


TWO = ("vocals", "accompaniment")
FIVE = ("vocals", "piano", "drums", "bass", "other")


def test_two_stems_with_features_frames_a_failure_and_a_hostile_id(tmp_path):
    """The data of a 2-stem output with features and frame series: counts, runs, failures, corpus
    aggregates equal to numpy's over the tables, the track table, and each track's data in the
    shard its id's CRC-32 names, with links, envelope, beats, segments and thinned series."""
    output = str(tmp_path / "out")
    ok = {"1.Hydrogen": (TWO, 30.0), "2.Lithium": (TWO, 30.0), HOSTILE: (TWO, 100.0)}
    failed = {"broken": ('/music/broken"<script>alert(1)</script>.wav', '/music/broken"<script>alert(1)</script>.wav: not decodable as audio (x)')}
    sources, tracks, frames = _features(ok, frames=True)
    tables = OutputTables(_metadata(ok, failed, output), sources, tracks, frames)
    files = dict(build_report(tables, _settings(output, tracks_per_shard=1)))
    summary = _data(files, report_page.SUMMARY_FILE)

    assert summary["counts"] == {"tracks": 4, "ok": 3, "failed": 1, "separated": 3, "already_done": 0, "audio_hours": round(160 / 3600, 3),
                                 "features_ok": 3, "features_failed": 0}
    assert summary["stems"] == list(TWO) and summary["has_frames"] and summary["vocal_pitch"] and summary["shards"] == 4
    (run,) = summary["runs"]
    assert (run["tracks_ok"], run["tracks_failed"], run["model"], run["codec"], run["bit_depth"]) == (3, 1, ["spleeter:2stems"], ["wav"], ["16"])
    (group,) = summary["failures"]["groups"]
    assert group["reason"] == "not decodable as audio (x)" and group["count"] == 1 and group["rows"][0]["file"] == failed["broken"][0]

    plots = summary["plots"]
    for stats in plots["loudness"]:
        values = [v for v, s in zip(sources.column("integrated_lufs").to_pylist(), sources.column("source").to_pylist()) if s == stats["source"]]
        assert stats["median"] == round(float(np.median(values)), 2) and stats["n"] == 3
    assert [s["source"] for s in plots["loudness"]] == ["mixture", "vocals", "accompaniment"]
    assert [s["source"] for s in plots["share"]] == ["vocals", "accompaniment"]
    assert sum(plots["tempo"]["counts"]) == 3 and sum(plots["vocals"]["counts"]) == 3
    assert plots["key"]["tonics"] == ["C", "F#", "A"] and plots["key"]["modes"] == {"major": [1, 0, 1], "minor": [0, 1, 0]}

    table = _data(files, report_page.TABLE_FILE)
    ids = table["data"]["id"]
    assert table["rows"] == 4 and ids == sorted(ids)
    row = ids.index("broken")
    assert table["data"]["status"][row] == "failed" and table["data"]["error"][row] == failed["broken"][1]
    row = ids.index("2.Lithium")
    assert table["data"]["tempo_bpm"][row] == round(tracks.column("tempo_bpm")[1].as_py(), 1)
    assert table["data"]["share:vocals"][row] == round(sources.column("share_db")[4].as_py(), 1)

    hostile = _shard(files, HOSTILE, 4)
    assert hostile["id"] == HOSTILE and [s["name"] for s in hostile["sources"]] == ["mixture", "vocals", "accompaniment"]
    vocals = hostile["sources"][1]
    folder = Track(HOSTILE, "/music/2.flac").folder_name
    assert folder.startswith("_script_alert(1)__script__'__img src=x") and vocals["href"] == "../stems/" + urllib.parse.quote(folder, safe="") + "/vocals.wav"
    assert hostile["sources"][0]["href"] == os.path.relpath("/music/2.flac", os.path.join(output, "report"))
    row = sources.column("source").to_pylist().index("vocals", 6)
    assert np.frombuffer(base64.b64decode(vocals["features"]["envelope_b64"]), np.int8).tolist() == sources.column("envelope_db")[row].as_py()
    assert hostile["features"]["beats"] == np.arange(0.5, 100, 0.5).tolist()
    assert hostile["features"]["vocal_segments"] == [[1.0, 4.5], [6.0, 9.0]]
    # 100 s of short-term loudness (1000 values every 0.1 s) thinned to 500 (every 0.2 s): power means.
    series = hostile["series"]
    raw = np.asarray(frames.column("short_term_lufs")[6].as_py()[:6], dtype=float)
    assert len(series["short_term"]["mixture"]) == 500 and series["short_term_hop_s"] == 0.2
    assert series["short_term"]["mixture"][:2] == [None, None]
    assert series["short_term"]["mixture"][2] == round(10 * np.log10((0 + 10 ** (raw[5] / 10)) / 2), 1)
    f0 = np.asarray(frames.column("f0_hz")[7].as_py())
    # 4306 f0 frames (23.2 ms) thinned to at most 1500: medians of 3 frames.
    assert f0.shape[0] == 4306 and len(series["f0"]) == 1436 and series["f0_hop_s"] == round(3 * 512 / 22050, 5)
    assert series["f0"][0] == round(float(np.median(f0[:3])), 1) and series["f0"][-1] == round(float(f0[-1]), 1)
    assert _shard(files, "broken", 4)["error"] == failed["broken"][1]
    for track_id in ok:
        assert _shard(files, track_id, 4)["status"] == "ok"
    assert {name for name in files if name.startswith("data/tracks/")} == {report_page.shard_file(k) for k in range(4)}


def test_five_stems_without_features_and_a_features_only_output(tmp_path):
    """Without features the tracks still have their players and the plots' data is empty (the
    page says so); a `stembeam features` output (no metadata) gets its audio links from the
    sources table."""
    output = str(tmp_path / "out")
    ok = {f"song {k}": (FIVE, 12.5) for k in range(3)}
    files = dict(build_report(OutputTables(_metadata(ok, {}, output)), _settings(output)))
    summary = _data(files, report_page.SUMMARY_FILE)
    assert summary["stems"] == list(FIVE) and not summary["has_features"]
    assert summary["plots"] == {"loudness": [], "share": [], "tempo": None, "key": None, "vocals": None}
    track = _shard(files, "song 1", summary["shards"])
    assert [s["name"] for s in track["sources"]] == ["mixture", *FIVE] and track["features"] is None and track["series"] is None
    assert track["sources"][3]["href"] == "../stems/song%201/drums.wav" and track["sources"][3]["duration_s"] == 12.5  # "song 1" is its own folder

    sources, tracks, _ = _features(ok)
    files = dict(build_report(OutputTables(None, sources, tracks), _settings(output)))
    summary = _data(files, report_page.SUMMARY_FILE)
    assert summary["counts"]["tracks"] == summary["counts"]["ok"] == 3 and not summary["has_metadata"] and summary["runs"] == []
    assert [s["source"] for s in summary["plots"]["loudness"]] == ["mixture", *FIVE]
    track = _shard(files, "song 2", summary["shards"])
    assert [s["name"] for s in track["sources"]] == ["mixture", *FIVE]
    assert track["sources"][1]["href"] == os.path.relpath("/x/song 2/vocals.wav", os.path.join(output, "report")).replace(" ", "%20")
    assert track["duration_s"] == 12.5


def test_runs_are_told_apart_by_the_run_start_or_by_gaps():
    """Tracks written two hours before the others were already done: by a gap of over 30 minutes,
    or exactly by the start of the run the report follows (pipeline --report)."""
    old = _metadata({"a": (TWO, 10.0), "b": (TWO, 10.0)}, {}, "/o", created=T0)
    new = _metadata({"c": (TWO, 20.0)}, {"d": ("/m/d.wav", "/m/d.wav: bad")}, "/o", created=T0 + datetime.timedelta(hours=2))
    tables = OutputTables(pa.concat_tables([old, new]))
    for settings in (_settings("/o"), _settings("/o", run_started=T0 + datetime.timedelta(minutes=90))):
        summary = _data(dict(build_report(tables, settings)), report_page.SUMMARY_FILE)
        assert (summary["counts"]["separated"], summary["counts"]["already_done"], summary["counts"]["failed"]) == (1, 2, 1)
        assert [(r["tracks_ok"], r["tracks_failed"], r["audio_hours"]) for r in summary["runs"]] == [(2, 0, round(20 / 3600, 3)), (1, 1, round(20 / 3600, 3))]


# ---------------------------------------------------------------------------------------------
# The files and the command


def _write_output(output, tables: OutputTables) -> None:
    os.makedirs(os.path.join(output, "metadata"))
    pq.write_table(tables.metadata, os.path.join(output, "metadata", "tracks-00000-of-00001.parquet"))
    os.makedirs(os.path.join(output, "features"))
    for name in ("sources", "tracks", "frames"):
        if getattr(tables, name) is not None:
            pq.write_table(getattr(tables, name), os.path.join(output, "features", f"{name}-00000-of-00001.parquet"))


def test_the_command_writes_the_folder_and_drops_stale_shards(tmp_path, capsys):
    """`stembeam report OUTPUT` writes index.html, the assets (plotly.js from the plotly package)
    and the data; a report of fewer shards removes the files of the earlier one, and files of
    another layout. A folder without tables is one error line."""
    from stembeam.pipeline.cli import main
    from stembeam.pipeline.report import write_report

    output = str(tmp_path / "out")
    ok = {f"t{k}": (TWO, 5.0) for k in range(7)}
    _write_output(output, OutputTables(_metadata(ok, {}, output), *_features(ok, frames=True)))
    assert main(["report", output]) == 0
    assert capsys.readouterr().err.strip().endswith(f"stembeam report: {output}/report/index.html")
    report = os.path.join(output, "report")
    assert sorted(os.listdir(report)) == ["assets", "data", "index.html"]
    assert sorted(os.listdir(os.path.join(report, "assets"))) == ["plotly.min.js", "report.css", "report.js"]
    assert open(os.path.join(report, "assets", "plotly.min.js"), "rb").read().startswith(b"/**\n* plotly.js v")
    write_report(output, tracks_per_shard=2)
    assert sorted(os.listdir(os.path.join(report, "data", "tracks"))) == [f"{k:05d}.js" for k in range(4)]
    open(os.path.join(report, "track.html"), "w").close()
    os.makedirs(os.path.join(report, "old"))
    write_report(output)
    assert os.listdir(os.path.join(report, "data", "tracks")) == ["00000.js"]
    assert sorted(os.listdir(report)) == ["assets", "data", "index.html"]

    assert main(["report", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: stembeam report: {tmp_path / 'nothing'}: no metadata/tracks-*.parquet and no features/sources-*.parquet (not a finished stembeam output)"]


def test_report_without_plotly_is_one_line_before_any_job(monkeypatch):
    """--report with the extra missing: a usage error naming it, before the job runs."""
    import importlib.util

    from stembeam.pipeline.jobs import UsageError, wants_report

    assert not wants_report(["--output", "o"], "pipeline")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "plotly" else real(name, *a))
    with pytest.raises(UsageError) as raised:
        wants_report(["--output", "o", "--report"], "pipeline")
    assert str(raised.value) == "stembeam pipeline --report: stembeam report needs plotly: pip install 'stembeam[report]'"


def test_help_imports_neither_tensorflow_nor_beam():
    """`stembeam report --help`, and the jobs' help with its --report flag, answer at once."""
    probe = (
        "import contextlib, io, sys\n"
        "from stembeam.pipeline.cli import main\n"
        "for argv in (['report', '--help'], ['pipeline', '--help'], ['features', '--help']):\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        try:\n"
        "            main(argv)\n"
        "        except SystemExit:\n"
        "            pass\n"
        "    print(argv[0], '--report' in out.getvalue() or 'OUTPUT/report/' in out.getvalue())\n"
        "print(sorted(m for m in ('tensorflow', 'apache_beam', 'plotly', 'pyarrow') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:4] == ["report True", "pipeline True", "features True", "[]"]


def test_the_latest_runs_flags_are_those_given_other_than_the_defaults():
    """What `pipeline --report` shows of its own options: the flags not at their defaults, without
    Beam's options or the console's."""
    from stembeam.pipeline.flags import given_flags

    argv = ["--manifest", "m.csv", "--output", "o", "--features", "--vocal_pitch", "--report", "--runner", "DirectRunner", "--mwf", "--codec", "flac",
            "-v", "--progress_interval", "0", "--batch_size", "2"]
    assert given_flags(argv, "pipeline") == ["--manifest m.csv", "--output o", "--mwf", "--codec flac", "--features", "--vocal_pitch", "--report"]
    assert given_flags(["--input", "x", "--output", "o", "--feature_frames"], "features") == ["--input x", "--output o", "--feature_frames"]
    summary = _data(dict(build_report(OutputTables(_metadata({"a": (TWO, 1.0)}, {}, "/o")), _settings("/o", run_flags=("--mwf",)))), report_page.SUMMARY_FILE)
    assert summary["run_flags"] == ["--mwf"]


def test_crc32_shards_match_zlib():
    """shard_of is zlib's CRC-32 of the id's UTF-8 bytes, which report.js computes too (checked
    in the browser by tests/test_report_browser.py)."""
    for track_id in ("a", HOSTILE, "é/ü", ""):
        assert shard_of(track_id, 97) == zlib.crc32(track_id.encode("utf-8")) % 97


def test_a_gs_output_gets_its_report_in_the_bucket(gcs):
    """`stembeam report gs://...` (gcp-storage-emulator): the tables read and the report written
    through Beam FileSystems, the stems linked relatively inside the bucket; an earlier report's
    extra shard is deleted."""
    import io

    client, env = gcs  # the report runs in a process of its own: Beam's GCS client here may know another module's emulator
    bucket = client.create_bucket("corpus")
    output = "gs://corpus/out"
    ok = {"a b": (TWO, 3.0), HOSTILE: (TWO, 4.0)}
    tables = OutputTables(_metadata(ok, {"bad": ("gs://corpus/in/bad.mp3", "gs://corpus/in/bad.mp3: not decodable as audio (x)")}, output),
                          *_features(ok)[:2])
    for name, table in (("metadata/tracks", tables.metadata), ("features/sources", tables.sources), ("features/tracks", tables.tracks)):
        data = io.BytesIO()
        pq.write_table(table, data)
        bucket.blob(f"out/{name}-00000-of-00001.parquet").upload_from_string(data.getvalue())
    bucket.blob("out/report/data/tracks/00099.js").upload_from_string(b"stale")
    done = subprocess.run([sys.executable, "-m", "stembeam", "report", output], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.strip().endswith(f"stembeam report: {output}/report/index.html")
    names = sorted(blob.name for blob in bucket.list_blobs(prefix="out/report/"))
    assert names == ["out/report/assets/plotly.min.js", "out/report/assets/report.css", "out/report/assets/report.js", "out/report/data/summary.js",
                     "out/report/data/tracks.js", "out/report/data/tracks/00000.js", "out/report/index.html"]
    files = {"shard": bucket.blob("out/report/data/tracks/00000.js").download_as_bytes()}
    track = _data(files, "shard")["a b"]
    assert [s["href"] for s in track["sources"]] == [None, "../stems/a%20b/vocals.wav", "../stems/a%20b/accompaniment.wav"]  # mixture: /music/...
    assert _data(files, "shard")[HOSTILE]["id"] == HOSTILE
