"""Bad inputs to `stembeam separate`: one clear line each, non-zero exit, the rest still written."""
import os
import subprocess
import sys

from tests.conftest import EXAMPLE, REPO, needs_shared


@needs_shared
def test_bad_files_reported_and_others_written(tmp_path):
    missing = tmp_path / "missing.wav"
    text = tmp_path / "notes.mp3"
    text.write_text("these are not the droids\n")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "stembeam.pipeline.cli", "separate", "-o", str(out), str(missing), str(text), EXAMPLE, str(empty)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {missing}: file not found",
        f"error: {text}: " + errors[1].split(": ", 2)[2],
        f"error: {empty}: empty file (0 bytes)",
    ]
    assert "not decodable as audio" in errors[1]
    assert sorted(os.listdir(out / "audio_example")) == ["accompaniment.wav", "vocals.wav"]
    assert "separated 1 of 4 files" in result.stderr
