"""README.md is a front page that works: its quick-start commands run as written (in a folder
holding the checkout's examples/, each exits 0 and makes the outputs the README says, and the
Python example then reads them), it has at most 250 lines, and every relative link of README.md
and docs/*.md reaches an existing file and heading."""
from __future__ import annotations

import glob
import os
import re
import shlex
import subprocess
import sys
import unicodedata

import pytest
import soundfile

from tests.conftest import REPO, needs_shared, snr_db

pytestmark = pytest.mark.cli  # `make test-cli` (CI runs it after `make test`)

README = os.path.join(REPO, "README.md")
PAGES = [README] + sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))
MAX_LINES = 250


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def quickstart_commands() -> list:
    """The shell commands of README.md's block marked ``<!-- readme-quickstart ... -->``, split
    into words."""
    (block,) = re.findall(r"<!-- readme-quickstart[^>]*-->\n```sh\n(.*?)```", _read(README), re.S)
    return [shlex.split(line) for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def python_example() -> str:
    """README.md's Python example (the block tests/test_api.py runs too)."""
    (block,) = re.findall(r"<!-- python-api-example[^>]*-->\n```python\n(.*?)```", _read(README), re.S)
    return block


def _option(words: list, *names: str) -> str:
    for name in names:
        if name in words:
            return words[words.index(name) + 1]
    raise AssertionError(f"{' '.join(words)}: none of {names}")


@needs_shared
def test_the_quick_start_runs_as_written(tmp_path):
    """Each quick-start command, in a folder with examples/ as in the checkout: exit 0, and its
    outputs: separate's two stems of the example (as long as the song, summing back to it), the
    corpus job's stems, metadata and features, the report; then the README's Python example on
    that output."""
    import stembeam

    os.symlink(os.path.join(REPO, "examples"), tmp_path / "examples")
    commands = quickstart_commands()
    assert commands and all(words[0] == "stembeam" for words in commands)
    for words in commands:
        assert words[1] in ("separate", "pipeline", "report"), f"{' '.join(words)}: the test has no check of this command's outputs yet"
        done = subprocess.run([sys.executable, "-m", "stembeam", *words[1:]], cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{' '.join(words)}:\n{done.stderr[-3000:]}"

        if words[1] == "separate":
            mixture = stembeam.load_audio(str(tmp_path / "examples" / "audio_example.mp3"))
            folder = tmp_path / _option(words, "-o", "--output_path") / "audio_example"
            stems = {name: soundfile.read(str(folder / f"{name}.wav"), dtype="float32")[0] for name in ("vocals", "accompaniment")}
            assert all(stem.shape == mixture.shape for stem in stems.values())
            # Not exactly the mixture: nothing above 11 kHz is in any stem (docs/models.md).
            assert 15 < snr_db(mixture, stems["vocals"] + stems["accompaniment"]) < 60
        elif words[1] == "pipeline":
            output = tmp_path / _option(words, "--output")
            table = stembeam.read_output(str(output))
            rows = {(row["track_id"], row["stem"]): row for row in table.to_pylist()}
            assert list(rows) == [("audio_example", "mixture"), ("audio_example", "accompaniment"), ("audio_example", "vocals")]
            assert all(row["status"] == "ok" and row["status_source"] == "ok" for row in rows.values())
            assert 60 < rows["audio_example", "mixture"]["tempo_bpm"] < 200 and -40 < rows["audio_example", "vocals"]["integrated_lufs"] < 0
            for stem in ("vocals", "accompaniment"):
                path = os.path.join(tmp_path, rows["audio_example", stem]["stem_uri"])  # relative to where the job ran, as --output was
                assert os.path.samefile(path, output / "stems" / "audio_example" / f"{stem}.wav")
                assert soundfile.info(path).duration == pytest.approx(10.9, abs=0.1)
            assert os.path.isfile(output / "stems" / "audio_example" / ".stembeam.json")
        else:
            report = tmp_path / words[2] / "report"
            assert os.path.isfile(report / "index.html") and "audio_example" in _read(str(report / "data" / "tracks.js"))

    # The README's Python example, run where the quick start left its outputs.
    done = subprocess.run([sys.executable, "-c", python_example()], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "'vocals': (" in done.stdout and "audio_example" in done.stdout and "mixture" in done.stdout


def test_readme_is_a_front_page():
    lines = _read(README).count("\n")
    assert lines <= MAX_LINES, f"README.md has {lines} lines (at most {MAX_LINES}: the rest belongs in docs/)"
    linked = {target.split("#")[0] for target, _ in _links(README)}
    assert {os.path.relpath(page, REPO) for page in PAGES[1:]} <= linked, "every docs/ page is linked from README.md"


def _links(path: str) -> list:
    """``(target, line)`` of every Markdown link of ``path`` outside code blocks."""
    links, fenced = [], False
    for number, line in enumerate(_read(path).splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            links += [(target, number) for target in re.findall(r"\]\(([^)\s]+)\)", re.sub(r"`[^`]*`", "", line))]
    return links


def _anchors(path: str) -> set:
    """GitHub's anchors of the headings of ``path``: lower case, punctuation dropped, spaces as
    hyphens, repeats numbered."""
    anchors, fenced = set(), False
    for line in _read(path).splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        if fenced or not re.match(r"#{1,6} ", line):
            continue
        text = line.lstrip("#").strip().lower()
        slug = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LN").replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=[os.path.relpath(page, REPO) for page in PAGES])
def test_every_link_reaches_a_file_and_heading(page):
    broken = []
    for target, line in _links(page):
        if re.match(r"[a-z]+:", target):
            assert target.startswith("https://"), f"{page}:{line}: {target}"
            continue
        assert not target.startswith("/"), f"{page}:{line}: {target} is absolute (links are relative)"
        file, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(page), file)) if file else page
        if not os.path.exists(resolved):
            broken.append(f"line {line}: {target} (no such file)")
        elif anchor and anchor not in _anchors(resolved):
            broken.append(f"line {line}: {target} (no such heading in {os.path.relpath(resolved, REPO)})")
    assert not broken, f"{os.path.relpath(page, REPO)}:\n" + "\n".join(broken)


def test_the_anchor_rule_is_githubs():
    """The anchors the link check computes for headings of the kinds the pages use."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".md", delete=False) as handle:
        handle.write("# `stembeam report`: see and hear\n## The Wiener filter (`--mwf`)\n```\n# not a heading\n```\n## Exit status\n## Exit status\n")
    try:
        assert _anchors(handle.name) == {"stembeam-report-see-and-hear", "the-wiener-filter---mwf", "exit-status", "exit-status-1"}
    finally:
        os.unlink(handle.name)
