"""The evaluation job: museval wiring against museval's own regression scores, the pipeline's
separation scored with the pipeline's numbers, dataset layouts, failures as rows."""
import csv
import json
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from stembeam.pipeline.corpus import run as run_pipeline
from stembeam.pipeline.evaluation import run as run_evaluation
from tests.conftest import AUDIO, CC0, CC0_SONGS, needs_shared, snr_db, stem_folder
from stembeam.transforms.dataset import DatasetTrack, Signal, list_dataset
from stembeam.transforms.evaluate import METRICS

pytestmark = needs_shared
MUSDB_SAMPLE = os.path.join(AUDIO, "musdb18-sample")
ROCK = "Music Delta - 80s Rock"


def _parquet(output, name):
    folder = os.path.join(output, "evaluation")
    return pq.read_table([os.path.join(folder, f) for f in sorted(os.listdir(folder)) if f.startswith(name + "-")]).to_pylist()


def _csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def _link_song(folder, song, with_mixture=True, stems=("vocals", "drums", "bass", "other")):
    os.makedirs(folder, exist_ok=True)
    for name in (("mixture",) if with_mixture else ()) + tuple(stems):
        os.symlink(os.path.join(CC0, song, f"{name}.flac"), os.path.join(folder, f"{name}.flac"))


def test_museval_regression_scores_through_the_job(tmp_path, capsys):
    """museval's regression estimate (np.random.seed(0); vocals then accompaniment, uniform
    noise of the mixture's shape) scored by the job reproduces museval's published per-window
    scores for the MUSDB sample, every window and metric within 1e-3 dB. Tracks that cannot
    be scored are error rows next to it."""
    import soundfile

    from stembeam.model.decode import load_audio

    dataset = tmp_path / "dataset"
    dataset.mkdir()
    os.symlink(os.path.join(MUSDB_SAMPLE, ROCK + ".stem.mp4"), dataset / (ROCK + ".stem.mp4"))
    _link_song(dataset / "no-references", CC0_SONGS[0], stems=())  # estimates but nothing to score them against
    _link_song(dataset / "no-estimates", CC0_SONGS[1])
    estimates = tmp_path / "estimates"
    n = load_audio(os.path.join(MUSDB_SAMPLE, ROCK + ".stem.mp4"), stream=0).shape[0]
    assert n == 300032  # musdb's track.audio.shape[0] for this file
    np.random.seed(0)
    random_vocals, random_accompaniment = np.random.random((n, 2)), np.random.random((n, 2))
    for track in (ROCK, "no-references"):
        (estimates / track).mkdir(parents=True)
        soundfile.write(estimates / track / "vocals.wav", random_vocals, 44100, subtype="FLOAT")
        soundfile.write(estimates / track / "accompaniment.wav", random_accompaniment, 44100, subtype="FLOAT")
    output = str(tmp_path / "out")

    assert run_evaluation(["--dataset", str(dataset), "--estimates", str(estimates), "--output", output]) == 3  # two tracks not scored

    with open(os.path.join(MUSDB_SAMPLE, ROCK + ".museval.json")) as handle:
        reference = json.load(handle)
    windows = _parquet(output, "windows")
    worst = 0.0
    for target in reference["targets"]:
        ours = sorted((w for w in windows if w["track_id"] == ROCK and w["stem"] == target["name"]), key=lambda w: w["window"])
        assert [w["time_s"] for w in ours] == [f["time"] for f in target["frames"]]
        for row, frame in zip(ours, target["frames"]):
            for metric in METRICS:
                worst = max(worst, abs(row[metric] - frame["metrics"][metric]))
    print(f"museval regression estimate through the job: largest |difference| over {len(windows)} windows x 4 metrics = {worst:.2e} dB")
    assert worst < 1e-3, worst
    tracks = {(r["track_id"], r["stem"]): r for r in _parquet(output, "tracks")}
    assert tracks[(ROCK, "vocals")]["status"] == "ok" and tracks[(ROCK, "vocals")]["windows"] == 6
    assert tracks[(ROCK, "vocals")]["SDR"] == pytest.approx(np.median([f["metrics"]["SDR"] for f in reference["targets"][0]["frames"]]), abs=1e-3)
    assert "no stem to score" in tracks[("no-references", None)]["error"]
    assert "no estimate files" in tracks[("no-estimates", None)]["error"] and str(estimates) in tracks[("no-estimates", None)]["error"]
    summary = _csv(os.path.join(output, "summary.csv"))
    assert [r["stem"] for r in summary] == ["vocals", "accompaniment"]
    assert "| SDR |" in capsys.readouterr().out  # the Table-1 medians are printed


def _scores_of(stems_folder, song, folder):
    """Per-window museval scores of written stems, computed here without the job."""
    import museval

    from stembeam.model.decode import load_audio

    refs = {name: load_audio(os.path.join(CC0, song, f"{name}.flac")).astype(np.float64) for name in ("vocals", "drums", "bass", "other")}
    references = [refs["vocals"], refs["drums"] + refs["bass"] + refs["other"]]
    estimates = [load_audio(os.path.join(stems_folder, folder, f"{stem}.wav")).astype(np.float64) for stem in ("vocals", "accompaniment")]
    return museval.evaluate(references, estimates, win=44100, hop=44100)


def _stem_bytes(folder):
    return {
        os.path.join(song, name): open(os.path.join(folder, song, name), "rb").read()
        for song in sorted(os.listdir(folder)) for name in sorted(os.listdir(os.path.join(folder, song))) if not name.startswith(".")
    }


@pytest.mark.parametrize("mwf", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["soft", "mwf"])
def test_evaluation_scores_the_pipelines_stems(tmp_path_factory, capsys, mwf):
    """The job separates with the corpus job's transforms: its stems are `stembeam pipeline`'s
    for the same tracks (soft: byte-identical; --mwf: within one 16-bit step), scoring the
    pipeline's stems gives the same numbers, and those equal museval run directly on the stems. A mixture that
    is not audio is an error row; the tables hold the other tracks."""
    tmp = tmp_path_factory.mktemp("evaluation")
    dataset = tmp / "dataset"
    songs = CC0_SONGS[1:]  # two songs keep CI short; `make evaluate` does all three
    for song in songs:
        _link_song(dataset / song, song)
    (dataset / "9.Broken").mkdir()
    (dataset / "9.Broken" / "mixture.wav").write_text("not audio\n")
    os.symlink(os.path.join(CC0, CC0_SONGS[0], "vocals.flac"), dataset / "9.Broken" / "vocals.flac")
    flags = ["--mwf"] if mwf else []
    output, by_pipeline, rescored = (str(tmp / name) for name in ("out", "pipeline", "rescored"))

    assert run_evaluation(["--dataset", str(dataset), "--output", output, *flags]) == 3  # the broken track
    printed = capsys.readouterr().out

    manifest = tmp / "manifest.csv"
    manifest.write_text("uri,track_id\n" + "".join(f"{dataset / song / 'mixture.flac'},{song}\n" for song in songs))
    assert run_pipeline(["--manifest", str(manifest), "--output", by_pipeline, *flags]) == 0
    ours, theirs = _stem_bytes(os.path.join(output, "stems")), _stem_bytes(os.path.join(by_pipeline, "stems"))
    folders = {song: os.path.basename(stem_folder(output, song)) for song in songs}
    assert sorted(ours) == sorted(theirs) == [f"{folders[song]}/{stem}.wav" for song in songs for stem in ("accompaniment", "vocals")]
    if mwf:
        # --mwf stems of two multi-threaded runs can differ by one 16-bit step in a few samples
        # (float rounding inside norbert); soft-mask stems are bit-exact.
        for name in ours:
            a, b = (np.frombuffer(x[44:], "<i2").astype(np.float64) for x in (ours[name], theirs[name]))
            assert np.abs(a - b).max() <= 1 and snr_db(a, b) > 90, name
    else:
        assert ours == theirs

    tracks = _parquet(output, "tracks")
    broken = [r for r in tracks if r["track_id"] == "9.Broken"]
    assert len(broken) == 1 and broken[0]["status"] == "error" and "mixture.wav" in broken[0]["error"] and "separation failed" in broken[0]["error"]
    windows = _parquet(output, "windows")
    assert {r["filter"] for r in windows} == {"mwf-512" if mwf else "soft"}
    for song in songs[:1]:  # one song: museval is the slow part
        sdr, isr, sir, sar = _scores_of(os.path.join(by_pipeline, "stems"), song, folders[song])
        for k, stem in enumerate(("vocals", "accompaniment")):
            ours = sorted((w for w in windows if w["track_id"] == song and w["stem"] == stem), key=lambda w: w["window"])
            assert len(ours) == 30
            for metric, values in zip(("SDR", "ISR", "SIR", "SAR"), (sdr, isr, sir, sar)):
                # museval keeps 5 decimals; see above for --mwf
                np.testing.assert_allclose([w[metric] for w in ours], values[k], rtol=0, atol=1e-3 if mwf else 5.1e-6)

    # Per-track medians, then the median over tracks: the Table-1 numbers and summary.csv agree.
    ok = [r for r in tracks if r["status"] == "ok"]
    assert len(ok) == 2 * len(songs)
    summary = {r["stem"]: r for r in _csv(os.path.join(output, "summary.csv"))}
    for stem in ("vocals", "accompaniment"):
        for metric in METRICS:
            expected = np.median([r[metric] for r in ok if r["stem"] == stem])
            assert float(summary[stem][metric]) == pytest.approx(expected, abs=1e-4)
    assert f"| SDR | {float(summary['vocals']['SDR']):.2f} | {float(summary['accompaniment']['SDR']):.2f} |" in printed
    # Spleeter-level quality on real stems (the separate tests pin the per-song figures).
    assert float(summary["vocals"]["SDR"]) > 3.0 and float(summary["accompaniment"]["SDR"]) > 7.0

    if not mwf:
        assert run_evaluation(["--dataset", str(dataset), "--estimates", os.path.join(by_pipeline, "stems"), "--output", rescored]) == 0
        again = {(r["track_id"], r["stem"], r["window"]): r for r in _parquet(rescored, "windows")}
        assert len(again) == len(windows)
        for row in windows:
            assert all(again[(row["track_id"], row["stem"], row["window"])][m] == row[m] for m in METRICS)
        scored = {(r["track_id"], r["stem"]): r["estimate_uri"] for r in _parquet(rescored, "tracks") if r["status"] == "ok"}
        assert scored and all(uri.startswith(os.path.join(by_pipeline, "stems")) and uri.endswith(f"/{stem}.wav") for (_, stem), uri in scored.items())

    import matplotlib.image

    plot = matplotlib.image.imread(os.path.join(output, "evaluation", "sdr_boxplot.png"))
    assert plot.shape[0] > 300 and plot.shape[1] > 400


def test_a_second_filter_separates_again_into_the_same_output(tmp_path):
    """Stems of a finished track are reused only for the same model, codec, source and filter:
    an --mwf run after a soft one into the same output separates again."""
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"uri,track_id\n{os.path.join(AUDIO, 'spleeter-example', 'audio_example.mp3')},example\n")
    output = str(tmp_path / "out")
    vocals = os.path.join(output, "stems", "example", "vocals.wav")
    assert run_pipeline(["--manifest", str(manifest), "--output", output]) == 0
    soft = open(vocals, "rb").read()
    umask = os.umask(0)
    os.umask(umask)
    for written in (vocals, os.path.join(output, "stems", "example", ".stembeam.json")):
        assert os.stat(written).st_mode & 0o777 == 0o666 & ~umask  # readable by others, like any file
    assert run_pipeline(["--manifest", str(manifest), "--output", output, "--mwf"]) == 0
    assert open(vocals, "rb").read() != soft
    assert run_pipeline(["--manifest", str(manifest), "--output", output]) == 0
    assert open(vocals, "rb").read() == soft


def test_dataset_layouts(tmp_path):
    """MUSDB folders with splits (test by default), .stem.mp4 files, manifests with stem columns."""
    root = tmp_path / "musdb"
    _link_song(root / "train" / "A", CC0_SONGS[0])
    _link_song(root / "test" / "B", CC0_SONGS[1])
    _link_song(root / "test" / "C", CC0_SONGS[2], stems=("vocals",))
    os.symlink(os.path.join(MUSDB_SAMPLE, ROCK + ".stem.mp4"), root / "test" / (ROCK + ".stem.mp4"))

    os.symlink(os.path.join(CC0, CC0_SONGS[0]), root / "test" / "D")  # a symlinked track folder counts too

    found = sorted(list_dataset(str(root)), key=lambda t: t.track_id)
    assert [t.track_id for t in found] == ["B", "C", "D", ROCK] and {t.split for t in found} == {"test"}
    assert dict(found[0].stems).keys() == {"vocals", "drums", "bass", "other"}
    assert found[3].mixture == Signal(str(root / "test" / (ROCK + ".stem.mp4")), 0)
    assert dict(found[3].stems)["vocals"].stream == 4 and dict(found[3].stems)["drums"].stream == 1
    assert sorted(t.track_id for t in list_dataset(str(root), "all")) == ["A", "B", "C", "D", ROCK]
    assert [t.track_id for t in list_dataset(str(root), "train")] == ["A"]

    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "uri,track_id,vocals,accompaniment\n"
        f"musdb/test/B/mixture.flac,,musdb/test/B/vocals.flac,{root}/test/B/other.flac\n"
        f"{root}/test/{ROCK}.stem.mp4,rock,,\n"
        ",nothing,,\n"
        f"{root}/train/A/mixture.flac,B,,\n"
    )
    items = list(list_dataset(str(manifest)))
    tracks = [t for t in items if isinstance(t, DatasetTrack)]
    errors = [e for e in items if not isinstance(e, DatasetTrack)]
    assert [t.track_id for t in tracks] == ["B", "rock"]
    assert tracks[0].mixture.uri == str(root / "test" / "B" / "mixture.flac")  # relative to the manifest's folder
    assert dict(tracks[0].stems) == {"accompaniment": Signal(str(root / "test" / "B" / "other.flac")), "vocals": Signal(str(root / "test" / "B" / "vocals.flac"))}
    assert len(dict(tracks[1].stems)) == 4
    assert "row 3" in errors[0][2] and "duplicate track_id 'B'" in errors[1][2]
    assert "no tracks found" in list(list_dataset(str(tmp_path / "nowhere")))[0][2]


def test_stem_mp4_references_are_musdbs_16_bit_samples():
    """Streams of a .stem.mp4 decode to 16-bit values (as musdb reads them), the mixture from
    stream 0, and accompaniment = drums + bass + other."""
    from stembeam.transforms.dataset import load_references

    track = [t for t in list_dataset(MUSDB_SAMPLE)][0]
    references = load_references(track)
    assert set(references) == {"vocals", "drums", "bass", "other", "accompaniment"}
    for name in ("vocals", "drums"):
        assert references[name].shape == (300032, 2)
        np.testing.assert_array_equal(references[name] * 32768, np.round(references[name] * 32768))
    np.testing.assert_array_equal(references["accompaniment"], references["drums"] + references["bass"] + references["other"])


def test_the_scores_heading_names_the_filter_residual_and_precision():
    """The heading above evaluate's scores says how the stems were made: --residual's stems are not
    the soft masks' (the last one is the mixture minus the others), and bfloat16 U-nets are named."""
    from stembeam.pipeline.evaluation import describe_separation
    from stembeam.pipeline.options import StembeamOptions

    def job(*flags):
        return StembeamOptions(["--model", "spleeter:2stems", *flags])

    assert describe_separation(job(), "float32") == "spleeter:2stems, soft masks"
    assert describe_separation(job("--mwf"), "bfloat16") == "spleeter:2stems, multichannel Wiener filter, bfloat16 U-nets"
    assert describe_separation(job("--residual"), "float32") == (
        "spleeter:2stems, soft masks, last stem the mixture minus the others (--residual)")
