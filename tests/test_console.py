"""What a user sees: only stembeam's lines, live progress, one line for a bad manifest or a
mistyped option, error rows for malformed manifest rows."""
import json
import os
import re
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stembeam.pipeline.jobs import unknown_options
from tests.conftest import CC0, CC0_SONGS, EXAMPLE, REPO, needs_shared
from stembeam.transforms.manifest import ManifestError, check_manifest, parse_manifest
from stembeam.transforms.records import Track, default_track_id

pytestmark = pytest.mark.cli  # whole commands as a user types them: `make test-cli` (CI runs it after `make test`)


def _stembeam(*args):
    result = subprocess.run([sys.executable, "-m", "stembeam.pipeline.cli", *args], capture_output=True, text=True, cwd=REPO)
    return result, (result.stdout + result.stderr).splitlines()


@needs_shared
def test_separate_prints_only_its_own_line(tmp_path):
    result, lines = _stembeam("separate", "-o", str(tmp_path), EXAMPLE)
    assert result.returncode == 0, result.stderr[-3000:]
    assert lines == [f"separated 1 of 1 files into {tmp_path}"]
    assert sorted(os.listdir(tmp_path / "audio_example")) == ["accompaniment.wav", "vocals.wav"]


@needs_shared
def test_verbose_brings_the_libraries_logs_back(tmp_path):
    result, lines = _stembeam("separate", "-v", "-o", str(tmp_path), str(tmp_path / "missing.wav"))
    assert result.returncode == 3  # it ran; a file failed
    assert any(re.match(r"\S+ \S+: [IWE] (tensorflow|external)/", line) for line in lines), lines[:20]  # TF's C++ log
    assert f"error: {tmp_path / 'missing.wav'}: file not found" in lines


@needs_shared
def test_pipeline_progress_malformed_rows_and_summary(tmp_path):
    """JSON Lines manifest: three songs, a bad JSON line, a uri that is a list, a missing file."""
    rows = [json.dumps({"uri": os.path.join(CC0, song, "mixture.flac"), "track_id": song}) for song in CC0_SONGS]
    rows[1:1] = ["{bad json", json.dumps({"uri": ["a.wav"], "track_id": "listed"})]
    rows.append(json.dumps({"uri": str(tmp_path / "missing.flac"), "track_id": "missing"}))
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("\n".join(rows) + "\n")
    output = tmp_path / "out"
    result, lines = _stembeam("pipeline", "--manifest", str(manifest), "--output", str(output), "--progress_interval", "1")
    assert result.returncode == 3, result.stderr[-3000:]  # finished, with failed rows
    progress = [line for line in lines if line.startswith("progress: ")]
    summary = next(i for i, line in enumerate(lines) if line.startswith("stembeam pipeline: "))
    failures = lines[summary + 1 :]
    assert failures[0] == "failed rows (3):" and len(failures) == 5 and failures[-1].startswith("(all in ")
    assert [line for line in lines if line not in progress] == lines[summary:], lines  # nothing but progress, the summary and its failures
    pattern = re.compile(r"progress: (\d+)/6 tracks \((\d+) failed\), ([\d.]+) of [~?\d.]+ min of audio, [?\d.]+x real time, ETA [?\d:]+$")
    parsed = [tuple(float(g) for g in pattern.match(line).groups()) for line in progress]
    assert len(parsed) >= 2
    assert parsed == sorted(parsed, key=lambda p: (p[0], p[2]))  # counts and minutes only rise
    assert len({p for p in parsed}) >= 2  # something moved before the end
    assert progress[-1].startswith("progress: 6/6 tracks (3 failed), 1.5 of 1.5 min of audio,") and progress[-1].endswith("ETA 0:00:00")
    assert re.match(r"stembeam pipeline: 3 tracks separated, 0 already done, 3 failed; 90 s of audio, 9 chunks inferred; 0:\d\d:\d\d wall, [\d.]+x real time; stems under ", lines[summary])
    metadata = pq.read_table(str(output / "metadata")).to_pylist()
    assert sorted(r["track_id"] for r in metadata if r["status"] == "ok") == sorted(s for s in CC0_SONGS for _ in range(2))
    errors = {r["track_id"]: r["error"] for r in metadata if r["status"] == "error"}
    assert errors["line-2"].startswith("manifest line 2: not valid JSON")
    assert errors["row-3"] == "manifest row 3: uri ['a.wav'] is list, not text"
    assert "missing" in errors
    assert not os.path.exists(output / "_work")


@pytest.mark.parametrize("kind", ["missing", "no_uri_column", "not_utf8", "not_parquet", "empty"])
def test_manifest_problems_are_one_line_before_the_job(tmp_path, kind):
    manifest = tmp_path / ("m.parquet" if kind == "not_parquet" else "m.csv")
    expected = {
        "missing": f"error: manifest {manifest}: not found",
        "no_uri_column": f"error: manifest {manifest}: no 'uri' (or 'path') column (columns: file, track_id)",
        "not_utf8": f"error: manifest {manifest}: not UTF-8 text (invalid start byte at byte 4)",
        "not_parquet": f"error: manifest {manifest}: not a readable Parquet file",
        "empty": f"stembeam pipeline: manifest {manifest} has no rows; nothing to do",
    }[kind]
    if kind == "no_uri_column":
        manifest.write_text("file,track_id\na.wav,a\n")
    elif kind == "not_utf8":
        manifest.write_bytes(b"uri\n\xff\xfe.wav\n")
    elif kind == "not_parquet":
        manifest.write_text("uri\na.wav\n")
    elif kind == "empty":
        manifest.write_text("uri,track_id\n")
    result, lines = _stembeam("pipeline", "--manifest", str(manifest), "--output", str(tmp_path / "out"))
    assert len(lines) == 1 and lines[0].startswith(expected), lines
    assert result.returncode == (0 if kind == "empty" else 1)
    assert not (tmp_path / "out").exists()  # nothing started


def test_malformed_csv_and_parquet_rows_are_error_rows(tmp_path):
    csv_manifest = tmp_path / "m.csv"
    csv_manifest.write_text("uri,track_id,duration\n/a.wav,a,1\n/b.wav,b\n/c.wav,c,3,extra\n\n/d.wav,d,\n")
    check_manifest(str(csv_manifest))
    assert list(parse_manifest(str(csv_manifest))) == [
        Track("a", "/a.wav", 0.0, 1.0, 1),
        ("line-3", "", "manifest line 3: 2 fields where the header has 3"),
        ("line-4", "", "manifest line 4: 4 fields where the header has 3"),
        Track("d", "/d.wav", 0.0, None, 4),
    ]
    table = pa.table({"uri": ["/a.wav", "/b.wav", "/c.wav"], "track_id": ["a", "b", "c"], "duration": [[1.0], [], [2.0, 3.0]]})
    parquet = tmp_path / "m.parquet"
    pq.write_table(table, parquet)
    items = list(parse_manifest(str(parquet)))
    assert items[0] == ("a", "/a.wav", "manifest row 1: duration [1.0] is not a number")
    assert [item[0] for item in items] == ["a", "b", "c"]
    pq.write_table(pa.table({"uri": [7, 8], "track_id": [["x"], None]}), parquet)
    assert list(parse_manifest(str(parquet))) == [
        ("row-1", "", "manifest row 1: track_id ['x'] is list, not text"),
        Track(default_track_id(str(tmp_path / "8")), str(tmp_path / "8"), 0.0, None, 2),  # a number is taken as its text
    ]
    with pytest.raises(ManifestError, match="no row has a 'uri'"):
        (tmp_path / "n.jsonl").write_text('{"file": "a.wav"}\n')
        check_manifest(str(tmp_path / "n.jsonl"))


def test_mistyped_option_is_refused_with_beams_suggestion(tmp_path):
    result, lines = _stembeam("pipeline", "--manifest", "m.csv", "--output", str(tmp_path), "--batchsize", "8", "--mwf_block_frame", "3")
    assert result.returncode == 1
    assert lines == ["error: stembeam pipeline: unknown option --batchsize (did you mean --batch_size?); unknown option --mwf_block_frame (did you mean --mwf_block_frames?)"]
    result, lines = _stembeam("pipeline", "--verbose", "--output", str(tmp_path), "--batchsize", "8")
    assert result.returncode == 1 and lines[-1].startswith("error: stembeam pipeline: unknown option --batchsize")
    assert "Traceback (most recent call last):" in result.stderr and "FutureWarning" in result.stderr  # google.api_core's, shown again


def test_runner_options_are_known():
    argv = ["--manifest", "m.csv", "--runner", "DirectRunner", "--direct_num_workers", "2", "--direct_running_mode=multi_processing",
            "--experiments", "x", "--sdk_location", "container", "--job_endpoint", "localhost:8099", "--environment_type", "LOOPBACK",
            "--dataflow_service_options", "y", "--project", "p", "-v", "--log_level", "info", "--progress_interval", "5"]
    assert unknown_options(argv, "pipeline") == []
    evaluate = ["--dataset" if arg == "--manifest" else arg for arg in argv] + ["--estimates", "x"]
    assert unknown_options(evaluate, "evaluate") == []
    assert unknown_options(argv, "evaluate") == ["unknown option --manifest"]  # the corpus job's, not evaluate's
    assert unknown_options(["--dataset", "d"], "pipeline")[0].startswith("unknown option --dataset")  # evaluate's flag, not the pipeline's
    flink = ["--runner", "FlinkRunner", "--flink_master", "h:1", "--parallelizm", "2", "--some_java_option", "1"]
    assert unknown_options(flink, "pipeline") == ["unknown option --parallelizm (did you mean --parallelism?)"]  # the rest goes to the job server
