"""Paths are never patterns (issue 20): every command with outputs, sources, model folders and
datasets whose names hold ``[ ]`` (glob characters); results replaced only once the new ones are
written; what killed runs leave (Beam's ``beam-temp-*``, ``$TMPDIR`` folders, gs:// ``_work/``)
swept."""
import io
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from stembeam.model.decode import load_audio
from stembeam.model.encode import write_audio
from tests.conftest import EXAMPLE, MODELS, REPO, needs_shared, run_corpus, stem_folder, write_manifest

pytestmark = needs_shared
OFFICIAL = os.path.join(MODELS, "2stems")
RATE = 44100


@pytest.fixture(scope="module")
def example():
    return load_audio(EXAMPLE)


def _wav(path, audio, start, seconds):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    write_audio(str(path), audio[int(start * RATE) : int((start + seconds) * RATE)])
    return str(path)


def _tree(root, skip=()):
    """``{relative path: bytes}`` of every file under ``root`` (not those starting with ``skip``)."""
    found = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if not os.path.relpath(path, root).startswith(tuple(skip)):
                found[os.path.relpath(path, root)] = open(path, "rb").read()
    return found


LEFT_BY_A_FAILED_JOB = ("_work/", ".stembeam-job.json")  # swept by the next run


def _plant(root, files):
    for name, data in files.items():
        os.makedirs(os.path.dirname(os.path.join(root, name)), exist_ok=True)
        with open(os.path.join(root, name), "wb") as handle:
            handle.write(data)


def test_an_output_and_a_model_folder_with_brackets_leave_their_siblings_alone(tmp_path, example):
    """`--output "runs/run[12]"` next to runs/run1 and runs/run2, the model read from a folder
    named `2stems [copy]`: the job succeeds, its stems and metadata are right, its rerun skips the
    track, and not a byte of run1/ or run2/ changes (the glob used to empty their metadata/ and
    delete run1's marker and temporaries)."""
    runs = tmp_path / "runs"
    siblings = {
        "metadata/tracks-00000-of-00001.parquet": b"an earlier table", "stems/a/.stembeam.json": b"{}", "stems/a/vocals.wav": b"a stem",
        "stems/a/.tmp-x.wav": b"a live job's partial stem", "_work/spool/a/000000.npy": b"spool",
    }
    for name in ("run1", "run2"):
        _plant(runs / name, siblings)
    model = tmp_path / "models" / "2stems [copy]"
    model.mkdir(parents=True)
    for name in os.listdir(OFFICIAL):
        os.symlink(os.path.join(OFFICIAL, name), model / name)
    song = _wav(tmp_path / "a.wav", example, 0, 3)
    manifest = write_manifest(tmp_path / "m.csv", [(song, "a")])
    output = runs / "run[12]"

    assert run_corpus(manifest, output, "--model_dir", str(model)) == (1, 0, 0)
    for name in ("run1", "run2"):
        assert _tree(runs / name) == siblings, name
    assert sorted(os.listdir(output)) == ["metadata", "stems"]  # no _work/, no lock left
    assert sorted(os.listdir(output / "metadata")) == ["tracks-00000-of-00001.parquet"]
    rows = pq.read_table(output / "metadata" / "tracks-00000-of-00001.parquet").to_pylist()
    assert sorted((r["track_id"], r["stem"], r["stem_uri"], r["status"]) for r in rows) == [
        ("a", s, os.path.join(str(output), "stems", "a", f"{s}.wav"), "ok") for s in ("accompaniment", "vocals")
    ]
    assert load_audio(str(output / "stems" / "a" / "vocals.wav")).shape[0] == 3 * RATE
    assert run_corpus(manifest, output, "--model_dir", str(model)) == (0, 1, 0)
    for name in ("run1", "run2"):
        assert _tree(runs / name) == siblings, name


def test_a_source_with_brackets_has_its_own_identity(tmp_path, example):
    """`Song [Live].wav` beside `Song L.wav`: the resume key holds the size of the file itself
    (the glob gave it Song L's), so overwriting it separates the track again."""
    folder = tmp_path / "music [2]"
    live = _wav(folder / "Song [Live].wav", example, 0, 3)
    _wav(folder / "Song L.wav", example, 0, 5)
    manifest = write_manifest(tmp_path / "m.csv", [(live, "live")])
    output = str(tmp_path / "out")
    assert run_corpus(manifest, output) == (1, 0, 0)
    with open(os.path.join(stem_folder(output, "live"), ".stembeam.json"), encoding="utf-8") as handle:
        key = json.load(handle)["key"]
    assert key["source"]["size"] == os.path.getsize(live)
    _wav(live, example, 4, 2)  # another take under the same name
    assert run_corpus(manifest, output) == (1, 0, 0)
    assert load_audio(os.path.join(stem_folder(output, "live"), "vocals.wav")).shape[0] == 2 * RATE


def _musdb_track(folder, audio, start, seconds):
    """A MUSDB-style track folder: mixture = vocals + accompaniment (halves of the example)."""
    cut = audio[int(start * RATE) : int((start + seconds) * RATE)]
    os.makedirs(folder, exist_ok=True)
    write_audio(os.path.join(folder, "vocals.wav"), 0.5 * cut)
    write_audio(os.path.join(folder, "accompaniment.wav"), 0.5 * cut[::-1].copy())
    write_audio(os.path.join(folder, "mixture.wav"), 0.5 * cut + 0.5 * cut[::-1])


def test_evaluate_and_features_with_brackets_keep_earlier_results_when_a_rerun_fails(tmp_path, example, monkeypatch):
    """`stembeam evaluate` of a dataset `data [v2]` (track `Song [Live]`) with estimates in
    `estimates [x]`, into `eval [1]` next to `eval 1`: the track is scored and `eval 1` is not
    touched. A rerun that fails in the job keeps every earlier table (they used to be deleted
    before the job ran). `stembeam features` of that dataset into `features [1]` works too."""
    from stembeam.transforms import report as stembeam_report
    from stembeam.pipeline.evaluation import run as evaluate
    from stembeam.pipeline.features import run as features

    dataset = tmp_path / "data [v2]"
    _musdb_track(dataset / "test" / "Song [Live]", example, 0, 4)
    estimates = tmp_path / "estimates [x]" / "Song [Live]"
    _musdb_track(estimates, example, 0.01, 4)
    os.remove(estimates / "mixture.wav")
    sibling = {"evaluation/tracks-00000-of-00001.parquet": b"sibling", "evaluation/table.md": b"sibling", "summary.csv": b"sibling"}
    _plant(tmp_path / "eval 1", sibling)
    output = tmp_path / "eval [1]"
    argv = ["--dataset", str(dataset), "--estimates", str(estimates.parent), "--output", str(output)]

    assert evaluate(argv) == 0
    rows = pq.read_table(output / "evaluation" / "tracks-00000-of-00001.parquet").to_pylist()
    assert sorted((r["track_id"], r["stem"], r["status"]) for r in rows) == [("Song [Live]", "accompaniment", "ok"), ("Song [Live]", "vocals", "ok")]
    assert _tree(tmp_path / "eval 1") == sibling
    before = _tree(output)
    assert "evaluation/windows-00000-of-00001.parquet" in before and "summary.csv" in before and not [n for n in before if "_work" in n]

    def broken(self, track_rows):
        raise RuntimeError("the disk filled up")

    monkeypatch.setattr(stembeam_report._WriteFiles, "process", broken)
    with pytest.raises(Exception, match="disk filled up"):
        evaluate(argv)
    assert _tree(output, LEFT_BY_A_FAILED_JOB) == before
    assert _tree(tmp_path / "eval 1") == sibling

    assert features(["--input", str(dataset / "test"), "--output", str(tmp_path / "features [1]")]) == 0
    tracks = pq.read_table(tmp_path / "features [1]" / "features" / "tracks-00000-of-00001.parquet").to_pylist()
    assert [(t["track_id"], t["status"]) for t in tracks] == [("Song [Live]", "ok")]


def test_prepare_dataset_with_brackets_locks_its_output_and_keeps_records_when_a_rerun_fails(tmp_path, example, monkeypatch):
    """`stembeam prepare-dataset` of `data [v2]` into `records [1]` next to `records 1`: the
    records hold the track, `records 1` is untouched and `train` finds the records. While another
    job holds the output it refuses to start; a rerun that fails keeps the earlier records and
    stats (they used to be deleted first)."""
    from stembeam.model.config import SPLEETER_2STEMS
    from stembeam.model.training import TRAIN, read_examples, record_files
    from stembeam.pipeline.output_lock import OutputInUse
    from stembeam.pipeline.prepare import run as prepare
    from stembeam.transforms.training_examples import MakeExamples

    dataset = tmp_path / "data [v2]"
    _musdb_track(dataset / "Song [Live]", example, 0, 4)
    sibling = {"train-00000-of-00001.tfrecord": b"sibling", "stats.json": b"{}"}
    _plant(tmp_path / "records 1", sibling)
    output = tmp_path / "records [1]"
    argv = ["--dataset", str(dataset), "--output", str(output), "--shards", "1"]

    assert prepare(argv) == 0
    # one track: all of it is training data, and the empty validation shard is not written
    assert sorted(os.listdir(output)) == ["config.json", "stats.json", "train-00000-of-00001.tfrecord"]
    assert [e["track_id"] for e in read_examples(os.path.join(output, "train-*.tfrecord"), SPLEETER_2STEMS)] == ["Song [Live]"]
    assert record_files(str(output), TRAIN) == [os.path.join(str(output), "train-00000-of-00001.tfrecord")]
    assert _tree(tmp_path / "records 1") == sibling
    before = _tree(output)

    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom pipeline.output_lock import OutputLock\nOutputLock(sys.argv[1], 'another job').__enter__()\n"
         "print('held', flush=True)\ntime.sleep(120)\n", str(output)],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputInUse):
            prepare(argv)
    finally:
        holder.kill()
        holder.wait()
    assert _tree(output, LEFT_BY_A_FAILED_JOB) == before

    def broken(self, track):
        raise RuntimeError("the disk filled up")

    monkeypatch.setattr(MakeExamples, "process", broken)
    with pytest.raises(Exception, match="disk filled up"):
        prepare([*argv[:-1], "2"])  # two shards this time: the one-shard records must stay
    assert _tree(output, LEFT_BY_A_FAILED_JOB) == before


def test_killed_runs_leftovers_add_no_rows_and_the_temporary_folder_stays_clean(tmp_path, example, monkeypatch):
    """What a SIGKILLed run leaves: Beam's `beam-temp-*` folders of older releases in metadata/
    and features/, holding complete Parquet files, and staged tables under _work/. The next run
    sweeps them: metadata/ and features/ read as datasets give exactly the job's rows. Every run
    leaves $TMPDIR as it found it (Beam used to leave `beam-requirements-cache`, `beam-temp*`,
    `tmp*` there), and removes the temporary folder of a dead run."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    finished = subprocess.Popen(["true"])  # noqa: S603, S607 - a process id that is no longer alive
    finished.wait()
    _plant(temp / f"stembeam-run-{finished.pid}-abc", {"tmp123/x": b"", "beam-requirements-cache/.keep": b""})  # a killed run's
    song = _wav(tmp_path / "a.wav", example, 0, 3)
    manifest = write_manifest(tmp_path / "m.csv", [(song, "a")])
    output = tmp_path / "out"

    assert run_corpus(manifest, output, "--features") == (1, 0, 0)
    assert os.listdir(temp) == []
    metadata, tables = output / "metadata", output / "features"
    rows = pq.read_table(metadata).num_rows
    sources = pq.read_table(tables / "sources-00000-of-00001.parquet").num_rows
    assert (rows, sources) == (2, 3)
    killed = {
        "metadata/beam-temp-tracks-8115a5a0ed6a11f1b1ac02fc00000001/3cf89ee6.tracks.parquet": (metadata / "tracks-00000-of-00001.parquet").read_bytes(),
        "features/beam-temp-sources-8115a5a0ed6a11f1b1ac02fc00000002/4d.sources.parquet": (tables / "sources-00000-of-00001.parquet").read_bytes(),
        "_work/tables/0123456789ab/metadata/beam-temp-tracks-x/5e.tracks.parquet": b"half a table",
    }
    _plant(output, killed)
    assert pq.read_table(metadata).num_rows == 2 * rows  # what a reader got after a killed run

    assert run_corpus(manifest, output, "--features") == (0, 1, 0)
    assert pq.read_table(metadata).num_rows == rows
    assert sorted(os.path.basename(f) for f in ds.dataset(str(tables), format="parquet").files) == [
        "sources-00000-of-00001.parquet", "tracks-00000-of-00001.parquet"
    ]
    assert pq.read_table(tables / "sources-00000-of-00001.parquet").num_rows == sources
    assert not os.path.exists(output / "_work")
    assert os.listdir(temp) == []


def _objects(client, bucket, prefix):
    return {b.name: b.download_as_bytes() for b in client.bucket(bucket).list_blobs(prefix=prefix)}


def test_gcs_outputs_sweep_their_work_folder(gcs_corpus, tmp_path, monkeypatch, capsys):
    """A gs:// output: the spool, progress marks and staged tables a killed run left under
    `{output}/_work/` and Beam's `beam-temp-*` under metadata/ are removed (FileSystems.exists is
    False for a GCS prefix, so they used to stay forever)."""
    client, _ = gcs_corpus
    monkeypatch.setenv("STEMBEAM_CACHE", str(tmp_path / "cache"))
    out = client.bucket("stembeam-out")
    killed = {
        "sweep/_work/spool/example/000000.npy": b"spool", "sweep/_work/progress/0123456789abcdef.done.60000.0": b"",
        "sweep/_work/tables/0123456789ab/metadata/tracks-00000-of-00001.parquet": b"staged",
        "sweep/metadata/beam-temp-tracks-8115a5a0ed6a11f1b1ac02fc00000001/3cf89ee6.tracks.parquet": b"a complete table",
    }
    for name, data in killed.items():
        out.blob(name).upload_from_string(data)
    client.bucket("stembeam-data").blob("short.csv").upload_from_string("uri,track_id,duration\naudio/example.mp3,example,3\n")
    assert run_corpus("gs://stembeam-data/short.csv", "gs://stembeam-out/sweep", "--model_dir", "gs://stembeam-models/spleeter/2stems") == (1, 0, 0)
    assert "progress: 1/1 tracks (0 failed), 0.1 of 0.1 min of audio" in capsys.readouterr().err  # no stale mark's 60 s
    assert sorted(_objects(client, "stembeam-out", "sweep/")) == [
        "sweep/metadata/tracks-00000-of-00001.parquet", "sweep/stems/example/.stembeam.json", "sweep/stems/example/accompaniment.wav",
        "sweep/stems/example/vocals.wav",
    ]


def test_gcs_output_source_and_model_folder_with_brackets(gcs_corpus, tmp_path, monkeypatch):
    """gs:// names with brackets: a model folder `2stems [v1]`, a source `Song [Live].mp3` beside
    `Song L.mp3` and an output `runs/run[12]` beside run1/ and run2/. Without --temp_location the
    job is refused in one line naming it, nothing written; with it the job succeeds, the siblings
    are untouched, the source's identity is its own, nothing is left under the temp location."""
    from stembeam.pipeline.jobs import UsageError

    client, _ = gcs_corpus
    monkeypatch.setenv("STEMBEAM_CACHE", str(tmp_path / "cache"))
    models, data, out = client.bucket("stembeam-models"), client.bucket("stembeam-data"), client.bucket("stembeam-out")
    for name in os.listdir(OFFICIAL):
        models.blob(f"spleeter/2stems [v1]/{name}").upload_from_filename(os.path.join(OFFICIAL, name))
    data.blob("songs/Song [Live].mp3").upload_from_filename(EXAMPLE)
    data.blob("songs/Song L.mp3").upload_from_string(b"another file, another size")
    data.blob("songs.csv").upload_from_string("uri,track_id,duration\nsongs/Song [Live].mp3,live,3\n")
    siblings = {f"runs/{run}/{name}": data_ for run in ("run1", "run2") for name, data_ in (
        ("metadata/tracks-00000-of-00001.parquet", b"an earlier table"), ("stems/live/.stembeam.json", b"{}"), ("stems/live/vocals.wav", b"stem"))}
    for name, data_ in siblings.items():
        out.blob(name).upload_from_string(data_)
    manifest, output, flags = "gs://stembeam-data/songs.csv", "gs://stembeam-out/runs/run[12]", ["--model_dir", "gs://stembeam-models/spleeter/2stems [v1]"]

    with pytest.raises(UsageError, match=r"^--output gs://stembeam-out/runs/run\[12\] has glob characters .*--temp_location"):
        run_corpus(manifest, output, *flags)
    assert not _objects(client, "stembeam-out", "runs/run[12]")

    assert run_corpus(manifest, output, *flags, "--temp_location", "gs://stembeam-out/tmp") == (1, 0, 0)
    assert _objects(client, "stembeam-out", "runs/run1/") | _objects(client, "stembeam-out", "runs/run2/") == siblings
    written = _objects(client, "stembeam-out", "runs/run[12]/")
    assert sorted(written) == [f"runs/run[12]/{name}" for name in (
        "metadata/tracks-00000-of-00001.parquet", "stems/live/.stembeam.json", "stems/live/accompaniment.wav", "stems/live/vocals.wav")]
    key = json.loads(written["runs/run[12]/stems/live/.stembeam.json"])["key"]
    assert key["source"]["size"] == os.path.getsize(EXAMPLE)
    rows = pq.read_table(io.BytesIO(written["runs/run[12]/metadata/tracks-00000-of-00001.parquet"])).to_pylist()
    assert sorted((r["stem"], r["stem_uri"]) for r in rows) == [(s, f"{output}/stems/live/{s}.wav") for s in ("accompaniment", "vocals")]
    assert not _objects(client, "stembeam-out", "tmp/stembeam-tables/")
    assert run_corpus(manifest, output, *flags, "--temp_location", "gs://stembeam-out/tmp") == (0, 1, 0)


def test_training_in_folders_with_brackets_resumes_and_keeps_the_last_checkpoints(tmp_path):
    """`stembeam train` with records in `records [1]` and `--model-dir "model [2]"` (a tiny U-net):
    the records are found, a second trainer resumes at the last step, only the last checkpoint
    is kept, and a checkpoint exported there loads back (TF globs checkpoint prefixes)."""
    import dataclasses

    import tensorflow as tf

    from stembeam.model.checkpoint import checkpoint_prefix, load_official_checkpoint, save_official_checkpoint
    from stembeam.model.config import SPLEETER_2STEMS
    from stembeam.model.training import TRAIN, Trainer, TrainerSettings, serialize_example
    from stembeam.model.unet import build_model

    tiny = dataclasses.replace(SPLEETER_2STEMS, name="tiny:2stems", T=64, F=64, conv_n_filters=(4, 8, 8, 16, 16, 16))
    records, model_dir = tmp_path / "records [1]", str(tmp_path / "model [2]")
    records.mkdir()
    rng = np.random.default_rng(0)
    with tf.io.TFRecordWriter(str(records / f"{TRAIN}-00000-of-00001.tfrecord")) as writer:
        for k in range(3):
            mix = rng.random((64, 64, 2), dtype=np.float32)
            writer.write(serialize_example(mix, {name: mix / 2 for name in tiny.instruments}, f"t{k}", k))
    trainer = Trainer(tiny, str(records), model_dir, TrainerSettings(batch_size=1, keep_checkpoints=1))
    assert trainer.restore_or_initialize() == "initialised from scratch"
    for step in (1, 2):  # what train() does every --checkpoint-every steps (no steps: they take a while to trace)
        trainer.step.assign(step)
        trainer._manager.save(checkpoint_number=step)
    assert sorted(n for n in os.listdir(os.path.join(model_dir, "checkpoints")) if n.endswith(".index")) == ["ckpt-2.index"]
    trainer.step.assign(0)
    assert trainer.restore_or_initialize() == f"resumed at step 2 from {os.path.join(model_dir, 'checkpoints', 'ckpt-2')}"

    save_official_checkpoint(trainer.model, os.path.join(model_dir, "model"), 2)
    loaded = build_model(tiny)
    load_official_checkpoint(loaded, checkpoint_prefix(model_dir))
    for ours, theirs in zip(loaded.weights, trainer.model.weights):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
