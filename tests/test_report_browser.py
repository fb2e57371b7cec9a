"""``stembeam report`` in a real browser: Debian's chromium, headless, driven by playwright (which
downloads no browser here), on real outputs made once per module:

- ``main``: `pipeline --features --vocal_pitch --feature_frames --report` of ../shared's three
  cc0-multitrack songs, a file that is not audio under a name holding ``<script>`` and quotes,
  and Spleeter's example song under a hostile track id;
- ``four``: a random-weight 4-stem model, run twice (the second run adds a track, --features --report);
- ``bare``: the official model without features, then `stembeam report OUTPUT`.

A track's view is the page's second view, ``index.html#track=ID``.

Each page opens from file:// with no console error and no request but file:// ones; plots are
drawn with data or say why they have none; the stems' players load with the durations of the
metadata; ids and reasons render as text (no dialog opens). Screenshots of the front page and a
track view are saved under the test's temporary folder (and copied to $STEMBEAM_REPORT_SCREENSHOTS
when set). `make test-browser` runs this file (CI too).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import urllib.parse

import pytest

from tests.conftest import CC0, CC0_SONGS, EXAMPLE, needs_shared, write_manifest

pytestmark = [needs_shared, pytest.mark.browser]

CHROMIUM = os.environ.get("STEMBEAM_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags Chromium opens connections of its own at start-up.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
HOSTILE_ID = "<script>alert(1)</script>\"'><img src=x onerror=alert(2)>"
TIMEOUT_MS = 60_000
INDEX_PLOTS = ("plot-loudness", "plot-share", "plot-tempo", "plot-key", "plot-vocals")
TRACK_PLOTS = ("plot-loudness-time", "plot-events", "plot-f0", "plot-overview")


def _data(report: str, name: str):
    text = open(os.path.join(report, *name.split("/")), encoding="utf-8").read()
    return json.loads(text.partition("] = ")[2][:-2])


@pytest.fixture(scope="module")
def browser():
    """Headless chromium (a fresh profile per launch); missing: skipped, except in CI."""
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = "playwright is not installed (pip install -e '.[test]')"
    if problem is None and not os.access(CHROMIUM, os.X_OK):
        problem = f"{CHROMIUM} not found (apt-get install chromium; `make install` does)"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem)
        pytest.skip(problem)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


class Visit:
    """A page of its own context that records console errors, uncaught errors, dialogs (none
    may open: a dialog would be a script from the data) and every request (refused unless file://)."""

    def __init__(self, browser):
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.context.route(re.compile(r"^(?!file:)"), lambda route: route.abort())
        self.page = self.context.new_page()
        self.errors, self.requests, self.dialogs = [], [], []
        self.page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.on("request", lambda request: self.requests.append(request.url))
        self.page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))

    def index(self, report: str):
        self.page.goto("file://" + os.path.join(report, "index.html"))
        self.page.wait_for_function("() => document.body.dataset.table === 'ready' && document.body.dataset.plots === 'ready'", timeout=TIMEOUT_MS)
        return self.page

    def track(self, report: str, track_id: str, ready: str = "ready"):
        self.page.goto("file://" + os.path.join(report, "index.html") + "#track=" + urllib.parse.quote(track_id, safe=""))
        _wait_for_track(self.page, track_id, ready)
        return self.page

    def check_clean(self):
        assert self.errors == []
        assert self.dialogs == []
        assert self.requests and all(url.startswith("file://") for url in self.requests), [u for u in self.requests if not u.startswith("file://")]

    def close(self):
        self.context.close()


@pytest.fixture()
def visit(browser):
    opened = Visit(browser)
    yield opened
    opened.close()


def _wait_for_track(page, track_id: str, state: str = "ready") -> None:
    """Until the track view of ``track_id`` is drawn (or ``state``: missing)."""
    page.wait_for_function(f"() => document.body.dataset.track === {json.dumps(state)} && document.body.dataset.trackId === {json.dumps(track_id)}",
                           timeout=TIMEOUT_MS)


def _plot(page, div_id: str) -> dict:
    """What a plot's div holds: drawn traces with their point counts, or the message it shows."""
    return page.evaluate("""id => {
        const div = document.getElementById(id);
        const paths = Array.from(div.querySelectorAll('g.trace path')).filter(p => (p.getAttribute('d') || '').length > 8);
        return {empty: div.classList.contains('empty'), text: div.textContent,
                points: (div.data || []).map(t => (t.x || t.q1 || []).filter(v => v !== null).length),
                traces: div.querySelectorAll('g.trace').length, paths: paths.length};
    }""", div_id)


def _assert_drawn(page, ids):
    for div_id in ids:
        plot = _plot(page, div_id)
        assert not plot["empty"] and plot["points"] and all(plot["points"]) and plot["traces"] >= len(plot["points"]) and plot["paths"], (div_id, plot)


def _assert_says(page, div_id, *words):
    plot = _plot(page, div_id)
    assert plot["empty"] and plot["traces"] == 0 and all(word in plot["text"] for word in words), (div_id, plot)


def _rows(page) -> list:
    return page.eval_on_selector_all("#track-table tbody tr", "rows => rows.map(r => r.dataset.id)")


def _players(page) -> list:
    """``[(source, readyState, duration, expected duration or None)]`` once every player has its metadata."""
    page.wait_for_function("() => Array.from(document.querySelectorAll('#players audio')).every(a => a.readyState >= 1)", timeout=TIMEOUT_MS)
    return page.evaluate("Array.from(document.querySelectorAll('#players audio')).map(a => "
                         "[a.dataset.source, a.readyState, a.duration, a.dataset.expected === undefined ? null : Number(a.dataset.expected)])")


def _screenshot(page, folder, name: str) -> str:
    path = os.path.join(str(folder), name)
    page.screenshot(path=path, full_page=True)
    wanted = os.environ.get("STEMBEAM_REPORT_SCREENSHOTS")
    if wanted:
        os.makedirs(wanted, exist_ok=True)
        shutil.copy(path, os.path.join(wanted, name))
    return path


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory):
    return tmp_path_factory.mktemp("screenshots")


# ---------------------------------------------------------------------------------------------
# The outputs


@pytest.fixture(scope="module")
def main(tmp_path_factory):
    """``(output, report folder, metadata rows)`` of `pipeline --features --vocal_pitch --feature_frames --report`."""
    import pyarrow.parquet as pq

    from stembeam.pipeline.corpus import run

    root = tmp_path_factory.mktemp("main")
    broken_folder = root / 'bad "<script>alert(1)<'
    broken_folder.mkdir()
    broken = broken_folder / "script>.wav"  # the file's path holds <script>alert(1)</script>
    broken.write_bytes(b"not audio")
    rows = [(os.path.join(CC0, song, "mixture.flac"), song) for song in CC0_SONGS] + [(str(broken), "broken-row"), (EXAMPLE, HOSTILE_ID)]
    manifest = write_manifest(root / "manifest.csv", rows)
    output = str(root / "out")
    assert run(["--manifest", manifest, "--output", output, "--features", "--vocal_pitch", "--feature_frames", "--report"]) == 3  # the broken row
    metadata = pq.read_table(os.path.join(output, "metadata", "tracks-00000-of-00001.parquet")).to_pylist()
    return output, os.path.join(output, "report"), metadata


@pytest.fixture(scope="module")
def four(tmp_path_factory):
    """A 4-stem model with random weights, its first run on two 8 s excerpts, then a second run
    with one more and --features --report: ``(output, report folder)``."""
    import keras

    from stembeam.model.config import get_config
    from stembeam.model.load import CONFIG_FILE, KERAS_FILE
    from stembeam.model.unet import build_model
    from stembeam.pipeline.corpus import run

    root = tmp_path_factory.mktemp("four")
    config = get_config("4stems")
    keras.utils.set_random_seed(4)
    model_dir = root / "random-4stems"
    model_dir.mkdir()
    build_model(config).save(str(model_dir / KERAS_FILE))
    (model_dir / CONFIG_FILE).write_text(config.to_json())
    rows = [(os.path.join(CC0, song, "mixture.flac"), song, 5, 8) for song in CC0_SONGS]
    output = str(root / "out")
    first = write_manifest(root / "first.csv", rows[:2], columns=("uri", "track_id", "offset", "duration"))
    assert run(["--manifest", first, "--output", output, "--model", str(model_dir)]) == 0
    second = write_manifest(root / "second.csv", rows, columns=("uri", "track_id", "offset", "duration"))
    assert run(["--manifest", second, "--output", output, "--model", str(model_dir), "--features", "--report"]) == 0
    return output, os.path.join(output, "report")


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """Two excerpts separated without features, then `stembeam report OUTPUT`: ``(output, report folder)``."""
    from stembeam.pipeline.cli import main as stembeam
    from stembeam.pipeline.corpus import run

    root = tmp_path_factory.mktemp("bare")
    rows = [(EXAMPLE, "example", 0, 4), (os.path.join(CC0, CC0_SONGS[2], "mixture.flac"), "sodium", 10, 4)]
    manifest = write_manifest(root / "manifest.csv", rows, columns=("uri", "track_id", "offset", "duration"))
    output = str(root / "out")
    assert run(["--manifest", manifest, "--output", output]) == 0
    assert stembeam(["report", output]) == 0
    return output, os.path.join(output, "report")


# ---------------------------------------------------------------------------------------------
# The real output with features, frames, a failure and a hostile id


def test_front_page_opens_offline_with_every_plot_drawn(main, visit, screenshots):
    """index.html from file://: no console error, only file:// requests, every corpus plot drawn
    from data; the run's counts, and the failure's reason and file shown as text."""
    output, report, metadata = main
    page = visit.index(report)
    _assert_drawn(page, INDEX_PLOTS)
    cards = page.eval_on_selector_all("#run-cards .card", "cards => cards.map(c => [c.querySelector('.label').textContent, c.querySelector('.value').textContent])")
    assert ["tracks", "5"] in cards and ["ok", "4"] in cards and ["failed", "1"] in cards
    assert ["separated by the latest run", "4"] in cards and ["already done (earlier runs)", "0"] in cards
    facts = page.inner_text("#run-facts")
    assert "--features --vocal_pitch --feature_frames --report" in facts and "spleeter:2stems" in facts
    (error,) = [row["error"] for row in metadata if row["status"] == "error"]
    failures = page.inner_text("#failures-body")
    assert error in failures and "not decodable as audio" in failures
    assert page.locator("#failures-body td", has_text="script>.wav").count() >= 2  # file and reason cells, as text
    assert sorted(_rows(page)) == sorted(["broken-row", HOSTILE_ID, *CC0_SONGS])
    _screenshot(page, screenshots, "report-front-page.png")
    visit.check_clean()


def test_the_track_table_filters_sorts_and_links(main, visit):
    """Filtering by id leaves that row; by status the failed row with its reason; a numeric
    filter keeps the tracks above the value; sorting orders by value; the id links to its view."""
    import pyarrow.parquet as pq

    output, report, _ = main
    tempo = {row["track_id"]: row["tempo_bpm"] for row in pq.read_table(os.path.join(output, "features", "tracks-00000-of-00001.parquet")).to_pylist()}
    page = visit.index(report)
    page.fill("input[data-key=id]", "3.sod")
    assert _rows(page) == ["3.Sodium"]
    page.fill("input[data-key=id]", "")
    page.select_option("select[data-key=status]", "failed")
    assert _rows(page) == ["broken-row"]
    assert 'bad "<script>alert(1)</script>.wav: not decodable' in page.inner_text("#track-table tbody td[data-key=error]")
    page.select_option("select[data-key=status]", "")
    page.fill("input[data-key=tempo_bpm]", ">125")
    assert sorted(_rows(page)) == sorted(t for t, bpm in tempo.items() if bpm > 125) != []
    page.fill("input[data-key=tempo_bpm]", "")
    page.click("button.sort[data-key=tempo_bpm]")
    assert _rows(page) == sorted(tempo, key=tempo.get) + ["broken-row"]  # no tempo: last
    page.click("button.sort[data-key=tempo_bpm]")
    assert _rows(page) == sorted(tempo, key=tempo.get, reverse=True) + ["broken-row"]
    page.click("#track-table a:text-is('2.Lithium')")
    _wait_for_track(page, "2.Lithium")
    assert page.inner_text("#track-title") == "2.Lithium" and page.is_hidden("#front")
    page.go_back()  # the front page as it was left: the same sort, filters and page
    page.wait_for_selector("#front", state="visible")
    assert page.is_hidden("#track") and _rows(page) == sorted(tempo, key=tempo.get, reverse=True) + ["broken-row"]
    visit.check_clean()


def test_track_views_play_the_stems_and_draw_every_plot(main, visit, screenshots):
    """Each separated track's view: the mixture's and stems' players load their metadata, the
    stems with the metadata's durations; short-term loudness, beats and vocal activity, the f0
    contour and the overview are drawn from data."""
    output, report, metadata = main
    durations = {(row["track_id"], row["stem"]): row["duration_s"] for row in metadata if row["status"] == "ok"}
    for track_id in [*CC0_SONGS, HOSTILE_ID]:
        page = visit.track(report, track_id)
        players = _players(page)
        assert [p[0] for p in players] == ["mixture", "vocals", "accompaniment"]
        for source, state, duration, expected in players[1:]:
            assert state >= 1 and expected == pytest.approx(durations[(track_id, source)], abs=1e-4)
            assert duration == pytest.approx(durations[(track_id, source)], abs=1e-3)
        assert players[0][2] == pytest.approx(durations[(track_id, "vocals")], abs=0.05)  # the whole mixture file: the stems' span
        _assert_drawn(page, TRACK_PLOTS)
        assert page.inner_text("#caption-loudness").startswith("Short-term loudness (LUFS")
        assert _plot(page, "plot-overview")["points"] == [400, 400, 400]  # 200 points each way per source
        if track_id == CC0_SONGS[0]:
            _screenshot(page, screenshots, "report-track-view.png")
    visit.check_clean()


def test_hostile_id_and_failure_reason_render_as_text(main, visit):
    """The id ``<script>alert(1)</script>"'><img src=x onerror=alert(2)>`` is the title, a table
    cell and a link's text; no dialog opens, no <img> is made; the failed track's view shows its reason."""
    output, report, metadata = main
    page = visit.index(report)
    assert page.locator("#track-table a", has_text="onerror=alert(2)").inner_text() == HOSTILE_ID
    page = visit.track(report, HOSTILE_ID)
    assert page.inner_text("#track-title") == HOSTILE_ID
    assert page.title() == "stembeam report: " + HOSTILE_ID
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    (error,) = [row["error"] for row in metadata if row["status"] == "error"]
    page = visit.track(report, "broken-row")
    assert page.inner_text("#track-reason") == error
    assert page.inner_text("#track-status").startswith("failed")
    _assert_says(page, "plot-overview", "no features")
    assert page.evaluate("document.querySelectorAll('#players audio').length") == 0
    visit.check_clean()


def test_every_id_finds_its_shard_in_the_browser(main, visit, tmp_path):
    """A copy of the output folder, its report written with one track per shard (5 files):
    report.js's CRC-32 finds each track's file, the hostile id's included, and the players load
    the copy's stems; an id that is not in the report says so."""
    from stembeam.pipeline.report import write_report

    output, report, _ = main
    copy = str(tmp_path / "copied")
    shutil.copytree(output, copy, ignore=shutil.ignore_patterns("report"))
    write_report(copy, tracks_per_shard=1)
    assert _data(os.path.join(copy, "report"), "data/summary.js")["shards"] == 5
    for track_id in [*CC0_SONGS, "broken-row", HOSTILE_ID]:
        page = visit.track(os.path.join(copy, "report"), track_id)
        assert page.inner_text("#track-title") == track_id
        if track_id != "broken-row":
            assert [p[0] for p in _players(page)] == ["mixture", "vocals", "accompaniment"]
    assert {url for url in visit.requests if "/stems/" in url} and all(url.startswith("file://" + copy) for url in visit.requests if "/stems/" in url)
    page = visit.track(os.path.join(copy, "report"), "no such track", "missing")
    assert page.inner_text("#track-status") == "This track is not in the report."
    visit.check_clean()


# ---------------------------------------------------------------------------------------------
# Four stems; no features


def test_four_stems_output_of_two_runs(four, visit, screenshots):
    """A random-weight 4-stem model: the second run separated one track, two were already done;
    the plots have the four stems; a track view has five players (8 s stems) and draws its level
    over time from the envelopes; without --vocal_pitch the f0 plot says how to get one."""
    output, report = four
    page = visit.index(report)
    cards = page.eval_on_selector_all("#run-cards .card", "cards => cards.map(c => [c.querySelector('.label').textContent, c.querySelector('.value').textContent])")
    assert ["separated by the latest run", "1"] in cards and ["already done (earlier runs)", "2"] in cards
    _assert_drawn(page, INDEX_PLOTS)
    assert _plot(page, "plot-loudness")["points"] == [1] * 5 and _plot(page, "plot-share")["points"] == [1] * 4
    page = visit.track(report, CC0_SONGS[1])
    players = _players(page)
    assert [p[0] for p in players] == ["mixture", "vocals", "drums", "bass", "other"]
    assert all(p[1] >= 1 and p[2] == pytest.approx(8.0, abs=1e-3) and p[3] == pytest.approx(8.0, abs=1e-4) for p in players[1:])
    _assert_drawn(page, ("plot-loudness-time", "plot-events", "plot-overview"))
    assert page.inner_text("#caption-loudness").startswith("Level over time")
    assert _plot(page, "plot-overview")["points"] == [400] * 5
    _assert_says(page, "plot-f0", "--vocal_pitch", "--feature_frames")
    _screenshot(page, screenshots, "report-track-view-4stems.png")
    visit.check_clean()


def test_output_without_features(bare, visit, screenshots):
    """No features: the front page's plots and the track view's say so (and how to get them);
    the table and the players work."""
    output, report = bare
    page = visit.index(report)
    for div_id in INDEX_PLOTS:
        _assert_says(page, div_id, "--features")
    assert sorted(_rows(page)) == ["example", "sodium"]
    _screenshot(page, screenshots, "report-front-page-no-features.png")
    page = visit.track(report, "sodium")
    players = _players(page)
    assert [p[0] for p in players] == ["mixture", "vocals", "accompaniment"]
    assert all(p[2] == pytest.approx(4.0, abs=1e-3) for p in players[1:])
    for div_id in TRACK_PLOTS:
        _assert_says(page, div_id, "features")
    visit.check_clean()
