"""The corpus job's DoFns and PTransforms one at a time on Beam's TestPipeline, on a real 14-s
excerpt and on synthetic signals: ReadManifest, DecodeAndChunk, FilterSegments + WriteStems,
SeparateTracks with the official model, ToErrorRows, WriteMetadata, MarkProgress; and the resume
key (transforms/resume.py). Part of the fast tier (`make test-fast`).

Where the model is not under test, a stand-in inference gives each segment's stems as fixed
gains of its samples, so the expected stems follow exactly from the decoded samples."""
import dataclasses
import hashlib
import json
import os
import shutil

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile
from apache_beam.ml.inference.base import PredictionResult
# Renamed so that pytest does not take Beam's class for a test class.
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from stembeam.model.config import SPLEETER_2STEMS
from stembeam.model.decode import load_audio
from stembeam.model.encode import write_audio
from stembeam.model.separation import overlap_add_segments, segment_count, segment_waveform, separate_waveform, with_residual
from stembeam.pipeline.summary import counters
from stembeam.transforms import storage
from stembeam.transforms.audio import ERRORS, FINISHED_EARLIER, LENGTHS, DecodeAndChunk
from stembeam.transforms.inference import FilterSegments, Separation
from stembeam.transforms.manifest import ReadManifest
from stembeam.transforms.progress import DECODED, DONE, FAILED, SKIPPED, MarkProgress, mark_key, metadata_progress, read_tally
from stembeam.transforms.records import METADATA_SCHEMA, Chunk, DecodeNote, RowContext, StemFacts, Track, default_track_id, error_row, metadata_row
from stembeam.transforms.resume import changed_fields, decoding_change, job_key, key_run_here, source_identity, track_key, with_precision
from stembeam.transforms.stem_files import MARKER, StemFiles, marker_uri, read_marker, track_folder
from stembeam.transforms.write import METADATA_FILE, ToErrorRows, WriteMetadata, WriteStems
from tests.conftest import CC0, needs_shared

pytestmark = [needs_shared, pytest.mark.fast]

CONFIG = SPLEETER_2STEMS
RATE = CONFIG.sample_rate
SECONDS = 14.0  # two segments: the first whole (11.96 s), the second padded
# float32 WAV stems: what the file holds is the float32 signal itself, bit for bit.
KEY = job_key("spleeter:2stems", "f" * 64, "wav", "128k", "soft", bit_depth=32)
VOCALS_GAIN = 0.25  # the stand-in inference: vocals = 0.25 x the mixture, accompaniment = 0.75 x


def _files(output, key=KEY, run_id="run1") -> StemFiles:
    return StemFiles(str(output), key, bit_depth=32, version="test", run_id=run_id)


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, np.float32).tobytes()).hexdigest()


def _stand_in_signals(span: np.ndarray) -> np.ndarray:
    """``[L, 2]`` samples -> ``[L, 2, 2]`` stems (vocals, accompaniment): fixed gains."""
    return np.stack([VOCALS_GAIN * span, (1 - VOCALS_GAIN) * span], axis=-1).astype(np.float32)


def _stand_in_inference(chunk: Chunk):
    """What RunInference gives FilterSegments: ``(Chunk reference, PredictionResult(samples,
    (signals, precision)))``."""
    return chunk.reference(), PredictionResult(chunk.span, (_stand_in_signals(chunk.span), "float32"))


def _read_stem(path) -> np.ndarray:
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    assert rate == RATE
    return samples


@pytest.fixture(scope="module")
def excerpt(tmp_path_factory):
    """14 s of a cc0 song (real music) as a float32 WAV: ``(path, its samples as load_audio reads them)``."""
    path = str(tmp_path_factory.mktemp("excerpt") / "lithium.wav")
    write_audio(path, load_audio(os.path.join(CC0, "2.Lithium", "mixture.flac"), offset=5.0, duration=SECONDS), bit_depth=32)
    return path, load_audio(path)


# --- ReadManifest --------------------------------------------------------------------------------

def test_read_manifest_gives_tracks_and_one_error_row_per_bad_row(tmp_path):
    """A CSV manifest with relative and absolute paths, a default id, a duplicate id, a value that
    is not a number, a row without a uri and a line with too many fields: the good rows are Tracks
    (relative paths resolved against the manifest's folder), every other row one error row
    ``(track_id, uri, reason)`` naming its row or line."""
    (tmp_path / "album").mkdir()
    manifest = tmp_path / "album" / "m.csv"
    manifest.write_text(
        "uri,track_id,offset,duration\n"
        "songs/a.wav,a,1.5,10\n"
        "/music/b.flac,,,\n"
        "c.mp3,a,,\n"
        "d.wav,d,abc,\n"
        ",e,,\n"
        "\n"
        "f.wav,f,1,2,extra\n"
    )
    folder = str(tmp_path / "album")
    with BeamTestPipeline() as pipeline:
        read = pipeline | ReadManifest(str(manifest))
        assert_that(read["tracks"], equal_to([
            Track("a", os.path.join(folder, "songs", "a.wav"), 1.5, 10.0, row=1),
            Track(default_track_id("/music/b.flac"), "/music/b.flac", 0.0, None, row=2),
        ]), label="tracks")
        assert_that(read["errors"], equal_to([
            ("a", os.path.join(folder, "c.mp3"), "manifest row 3: duplicate track_id 'a' (first at row 1)"),
            ("d", os.path.join(folder, "d.wav"), "manifest row 4: offset 'abc' is not a number"),
            ("e", "", "manifest row 5: no 'uri' (or 'path') value"),
            ("line-8", "", "manifest line 8: 5 fields where the header has 4"),
        ]), label="errors")


def test_read_manifest_names_the_lines_of_a_broken_json_lines_manifest(tmp_path):
    """JSON Lines: a line that is no JSON, one that is a list, and a uri of the wrong type are
    error rows naming the line or row; ``--limit`` counts rows, not lines."""
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"uri": "a.wav", "track_id": "a"}\n{"uri": \n[1, 2]\n\n{"uri": ["x"], "track_id": "l"}\n{"uri": "z.wav"}\n')
    with BeamTestPipeline() as pipeline:
        read = pipeline | ReadManifest(str(manifest), limit=4)
        assert_that(read["tracks"], equal_to([Track("a", str(tmp_path / "a.wav"), 0.0, None, row=1)]), label="tracks")
        assert_that(read["errors"], equal_to([
            ("line-2", "", "manifest line 2: not valid JSON (Expecting value at column 9)"),
            ("line-3", "", "manifest line 3: not a JSON object but list"),
            ("row-4", "", "manifest row 4: uri ['x'] is list, not text"),
        ]), label="errors")


# --- DecodeAndChunk ------------------------------------------------------------------------------

def _decode(pipeline, tracks, files):
    """Tracks -> DecodeAndChunk's outputs: ``chunks``, ``errors``, ``finished_earlier``, ``lengths``."""
    return pipeline | beam.Create(tracks) | beam.ParDo(DecodeAndChunk(CONFIG, files)).with_outputs(ERRORS, FINISHED_EARLIER, LENGTHS, main="chunks")


def _segment_summary(chunk: Chunk) -> tuple:
    return chunk.track.track_id, chunk.index, chunk.count, chunk.n_samples, _sha256(chunk.span)


def test_decode_and_chunk_cuts_a_real_excerpt_into_the_segments_of_load_audio(excerpt, tmp_path):
    """The 14-s excerpt becomes 2 segments of ``segment_samples`` (527360) samples: the first is
    load_audio's first 527360 samples bit for bit, the second its samples from 524288 on, zero
    padded; its length goes out as ``lengths``. A missing file, a negative duration and an
    offset past the end are one error row each, naming the file and the reason."""
    path, samples = excerpt
    n = samples.shape[0]
    assert n == SECONDS * RATE and segment_count(n, CONFIG) == 2
    tracks = [Track("ex", path), Track("missing", str(tmp_path / "missing.wav")), Track("negative", path, duration=-3.0), Track("late", path, offset=60.0)]
    expected = [("ex", j, 2, n, _sha256(segment_waveform(samples, j, CONFIG))) for j in range(2)]
    assert expected[0][4] == _sha256(samples[: CONFIG.segment_samples])
    with BeamTestPipeline() as pipeline:
        decoded = _decode(pipeline, tracks, _files(tmp_path / "out"))
        assert_that(decoded.chunks | "Summary" >> beam.Map(_segment_summary), equal_to(expected), label="chunks")
        assert_that(decoded[LENGTHS], equal_to([("ex", SECONDS)]), label="lengths")
        assert_that(decoded[FINISHED_EARLIER], equal_to([]), label="finished")
        assert_that(decoded[ERRORS], equal_to([
            ("missing", str(tmp_path / "missing.wav"), f"{tmp_path / 'missing.wav'}: file not found"),
            ("negative", path, f"{path}: duration must be a finite number of seconds > 0, not -3.0"),
            ("late", path, f"{path}: offset 60 s is at or past its end (14.00 s long)"),
        ]), label="errors")
    assert os.listdir(tmp_path / "out" / "_work" / "local") == []  # the decoded samples are gone


# --- FilterSegments and WriteStems ---------------------------------------------------------------

def _separate_with_stand_in(pipeline, tracks, files, residual=False):
    """Tracks -> DecodeAndChunk -> the stand-in inference -> FilterSegments -> WriteStems: the
    corpus job's per-track chain without the model. ``(metadata rows, decoder outputs)``."""
    decoded = _decode(pipeline, tracks, files)
    rows = (
        decoded.chunks
        | "Infer" >> beam.Map(_stand_in_inference)
        | "Filter" >> beam.ParDo(FilterSegments(CONFIG, mwf=False, mwf_block_frames=CONFIG.T, residual=residual))
        | "Write" >> beam.ParDo(WriteStems(CONFIG, files, residual=residual))
    )
    return rows, decoded


def _row_summary(row: dict) -> tuple:
    return row["track_id"], row["stem"], row["status"], row["duration_s"], row["precision"], row["bit_depth"], row["F"]


def test_write_stems_overlap_adds_the_segments_byte_for_byte(excerpt, tmp_path):
    """The stand-in's segment signals through FilterSegments and WriteStems: each stem file is
    model.separation.overlap_add_segments of its segments cropped to the track, bit for bit; one
    row per stem (14 s, float32, 32-bit, F 1024) with the rms and peak of the file's samples;
    then the marker vouching for exactly those rows and stem sizes."""
    path, samples = excerpt
    n = samples.shape[0]
    output = tmp_path / "out"
    with BeamTestPipeline() as pipeline:
        rows, _ = _separate_with_stand_in(pipeline, [Track("ex", path)], _files(output))
        assert_that(rows | beam.Map(_row_summary), equal_to([("ex", stem, "ok", SECONDS, "float32", 32, 1024) for stem in CONFIG.instruments]))
    signals = [_stand_in_signals(segment_waveform(samples, j, CONFIG)) for j in range(2)]
    folder = os.path.join(str(output), "stems", "ex")
    marker = read_marker(os.path.join(folder, MARKER))
    for k, stem in enumerate(CONFIG.instruments):
        expected = overlap_add_segments([s[..., k] for s in signals], CONFIG, n)
        written = _read_stem(os.path.join(folder, f"{stem}.wav"))
        assert written.shape == (n, 2) and written.tobytes() == expected.tobytes(), stem
        (row,) = [r for r in marker["rows"] if r["stem"] == stem]
        assert row["rms"] == pytest.approx(float(np.sqrt(np.mean(np.square(expected, dtype=np.float64)))), rel=1e-12)
        assert row["peak"] == float(np.max(np.abs(expected)))
        assert marker["stem_bytes"][f"{stem}.wav"] == os.path.getsize(os.path.join(folder, f"{stem}.wav"))
    assert marker["key"] == track_key(KEY, Track("ex", path), source_identity(path)) and marker["run_id"] == "run1"
    assert [_row_summary(row) for row in marker["rows"]] == [("ex", stem, "ok", SECONDS, "float32", 32, 1024) for stem in CONFIG.instruments]


def test_the_residual_stem_is_the_mixture_minus_the_others_byte_for_byte(excerpt, tmp_path):
    """FilterSegments with ``residual`` carries each segment's mixture along (its first T*hop
    samples, all of them in the last segment), and WriteStems makes the last stem the mixture
    minus the others: exactly model.separation.with_residual of the decoded samples and the
    overlap-added vocals, so the two stems sum to the mixture within float32 rounding."""
    path, samples = excerpt
    n = samples.shape[0]
    output = tmp_path / "out"
    with BeamTestPipeline() as pipeline:
        rows, _ = _separate_with_stand_in(pipeline, [Track("ex", path)], _files(output), residual=True)
        assert_that(rows | beam.Map(_row_summary), equal_to([("ex", stem, "ok", SECONDS, "float32", 32, 1024) for stem in CONFIG.instruments]))
    vocals = overlap_add_segments([_stand_in_signals(segment_waveform(samples, j, CONFIG))[..., 0] for j in range(2)], CONFIG, n)
    folder = os.path.join(str(output), "stems", "ex")
    written = {stem: _read_stem(os.path.join(folder, f"{stem}.wav")) for stem in CONFIG.instruments}
    assert written["vocals"].tobytes() == vocals.tobytes()
    assert written["accompaniment"].tobytes() == with_residual(np.stack([vocals, np.zeros_like(vocals)], axis=-1), samples)[..., -1].tobytes()
    assert np.max(np.abs(written["vocals"] + written["accompaniment"] - samples)) <= np.spacing(np.float32(np.max(np.abs(samples))))
    # Not the stand-in's own accompaniment (0.75 x): the mixture's rest.
    assert not np.array_equal(written["accompaniment"], overlap_add_segments(
        [_stand_in_signals(segment_waveform(samples, j, CONFIG))[..., 1] for j in range(2)], CONFIG, n))


def test_a_finished_track_is_finished_earlier_until_its_key_or_stems_change(excerpt, tmp_path):
    """After WriteStems wrote a track, DecodeAndChunk with the same resume key gives the rows its
    marker stores (``finished_earlier``) and no segment; with another filter in the key, or with a
    stem deleted, the track is decoded again (2 segments)."""
    path, _ = excerpt
    output = tmp_path / "out"
    track = Track("ex", path)
    with BeamTestPipeline() as pipeline:
        _separate_with_stand_in(pipeline, [track], _files(output))
    stored = read_marker(marker_uri(str(output), track))["rows"]
    assert len(stored) == 2
    later = _files(output, run_id="run2")
    with BeamTestPipeline() as pipeline:
        decoded = _decode(pipeline, [track], later)
        assert_that(decoded[FINISHED_EARLIER], equal_to([stored]), label="finished")
        assert_that(decoded.chunks, equal_to([]), label="chunks")
    other_filter = _files(output, key={**KEY, "filter": "mwf-512"}, run_id="run2")
    for files, deleted in ((other_filter, None), (later, "vocals.wav")):
        if deleted:
            os.remove(os.path.join(track_folder(str(output), track), deleted))
        with BeamTestPipeline() as pipeline:
            decoded = _decode(pipeline, [track], files)
            assert_that(decoded[FINISHED_EARLIER], equal_to([]), label="finished")
            assert_that(decoded.chunks | beam.Map(lambda chunk: (chunk.track.track_id, chunk.index, chunk.count)), equal_to([("ex", 0, 2), ("ex", 1, 2)]),
                        label="chunks")


def _synthetic_segments(plan: tuple) -> list:
    """``(track_id, count, n_samples, seed, first, stop)`` -> segments ``first..stop-1`` of a
    ``count``-segment track as FilterSegments gives them to WriteStems: ``(Chunk reference,
    [L, 2, 2] signals)``, random in [-0.5, 0.5). Made inside the pipeline: a beam.Create of the
    signals themselves takes minutes to encode."""
    track_id, count, n_samples, seed, first, stop = plan
    track = Track(track_id, f"/music/{track_id}.wav", source_identity=(10, 1.0))
    rng = np.random.default_rng(seed)
    signals = [rng.uniform(-0.5, 0.5, (CONFIG.segment_samples, 2, 2)).astype(np.float32) for _ in range(count)]
    return [(Chunk(track, j, count, n_samples), signals[j]) for j in range(first, stop)]


def test_a_track_whose_segments_stop_in_the_bundle_is_one_error_row(tmp_path):
    """One bundle (beam.Create without reshuffling) holds a whole 2-segment track and, in
    between, segments 0..1 of a 3-segment track whose last segment never comes: the whole track
    is written (its stems the overlap-add of its segments, cropped to 1000 samples past the
    first segment's span), the other is one error row naming its file, with no folder left;
    Beam's counters say 1 track written, 1 failed."""
    length = CONFIG.segment_samples + 1000
    whole, cut = ("whole", 2, length, 1), ("cut", 3, 2 * CONFIG.segment_samples, 2)
    output = tmp_path / "out"
    pipeline = BeamTestPipeline()
    segments = pipeline | beam.Create([(*whole, 0, 1), (*cut, 0, 2), (*whole, 1, 2)], reshuffle=False) | beam.FlatMap(_synthetic_segments)
    rows = segments | beam.ParDo(WriteStems(CONFIG, _files(output)))
    assert_that(rows | beam.Map(lambda row: (row["track_id"], row["stem"], row["status"], row["duration_s"], row["error"])), equal_to([
        ("whole", "vocals", "ok", length / RATE, None), ("whole", "accompaniment", "ok", length / RATE, None),
        ("cut", None, "error", None, "/music/cut.wav: only segments 0..1 of 3 arrived in this bundle; the track was not written"),
    ]))
    result = pipeline.run()
    assert counters(result, ("tracks_ok", "tracks_failed")) == {"tracks_ok": 1, "tracks_failed": 1}
    assert sorted(os.listdir(output / "stems")) == ["whole"]
    signals = [s for _, s in _synthetic_segments((*whole, 0, 2))]
    for k, stem in enumerate(CONFIG.instruments):
        expected = overlap_add_segments([s[..., k] for s in signals], CONFIG, length)
        assert _read_stem(output / "stems" / "whole" / f"{stem}.wav").tobytes() == expected.tobytes()


# --- SeparateTracks with the official model ----------------------------------------------------

@pytest.fixture(scope="module")
def launcher_model(two_stems):
    """The official 2-stems model (conftest's ``two_stems``) as the launcher gives it to the
    workers of its process: a ModelSource whose Beam ``Shared`` handle holds it (no file read)."""
    from apache_beam.utils.shared import Shared

    from stembeam.transforms.model_handler import LoadedModel, ModelSource

    config, separator = two_stems
    shared = Shared()
    held = shared.acquire(lambda: LoadedModel(separator))  # Shared keeps a weak reference: held while the module runs
    yield ModelSource(os.path.join("never", "read", "model.keras"), config, shared=shared)
    del held


def test_separate_tracks_gives_the_apis_stems_and_batches_across_tracks(excerpt, launcher_model, two_stems, tmp_path):
    """SeparateTracks (DecodeAndChunk, RunInference of the official 2-stems model 2 segments at a
    time, FilterSegments, WriteStems) over a 5-s track and the 14-s excerpt in one bundle: the
    batches are [5-s track, excerpt's segment 0] and [excerpt's segment 1] (one across tracks,
    3 segments inferred), and every float32 stem is model.separation.separate_waveform's (what
    the Python API gives) bit for bit."""
    from stembeam.transforms.tracks import SeparateTracks

    path, samples = excerpt
    short = str(tmp_path / "short.wav")
    write_audio(short, samples[: 5 * RATE], bit_depth=32)
    output = tmp_path / "out"
    pipeline = BeamTestPipeline()
    separated = (
        pipeline
        | beam.Create([Track("short", short), Track("ex", path)], reshuffle=False)
        | SeparateTracks(Separation(launcher_model, batch_size=2), _files(output))
    )
    assert_that(separated["rows"] | beam.Map(_row_summary), equal_to(
        [("short", stem, "ok", 5.0, "float32", 32, 1024) for stem in CONFIG.instruments]
        + [("ex", stem, "ok", SECONDS, "float32", 32, 1024) for stem in CONFIG.instruments]))
    result = pipeline.run()
    assert counters(result, ("tracks_ok", "chunks_inferred", "batches_across_tracks")) == {"tracks_ok": 2, "chunks_inferred": 3, "batches_across_tracks": 1}
    _, separator = two_stems
    for track_id, mixture in (("short", samples[: 5 * RATE]), ("ex", samples)):
        expected = separate_waveform(mixture, separator)
        for stem in CONFIG.instruments:
            written = _read_stem(output / "stems" / track_id / f"{stem}.wav")
            assert written.tobytes() == expected[stem].tobytes(), (track_id, stem)


# --- ToErrorRows, WriteMetadata ------------------------------------------------------------------

CONTEXT = RowContext("spleeter:2stems", "flac", "9.9", "bfloat16", 24, 1536)


def _without_time(row: dict) -> dict:
    assert row["created_at"].tzinfo is not None
    return {name: value for name, value in row.items() if name != "created_at"}


def test_to_error_rows_gives_one_metadata_row_per_error():
    """``(track_id, uri, reason)`` -> a row of every METADATA_SCHEMA column: the run's context,
    status ``error``, the reason, nothing of a stem; Beam's counter ``tracks_failed`` counts them."""
    errors = [("a", "/m/a.mp3", "/m/a.mp3: file not found"), ("row-3", "", "manifest row 3: no 'uri' (or 'path') value")]
    empty = {"stem": None, "stem_uri": None, "sample_rate": None, "channels": None, "duration_s": None, "rms": None, "peak": None,
             "decode_warnings": None, "claimed_duration_s": None, "source_offset_s": None, "source_duration_s": None, "source_stream": None}
    run = {"model": "spleeter:2stems", "codec": "flac", "pipeline_version": "9.9", "precision": "bfloat16", "bit_depth": 24, "F": 1536}
    pipeline = BeamTestPipeline()
    rows = pipeline | beam.Create(errors) | beam.ParDo(ToErrorRows(CONTEXT))
    assert_that(rows | beam.Map(_without_time), equal_to([
        {"track_id": track_id, "source_uri": uri, "status": "error", "error": reason, **empty, **run} for track_id, uri, reason in errors
    ]))
    result = pipeline.run()
    assert counters(result, ("tracks_failed",)) == {"tracks_failed": 2}
    assert set(METADATA_SCHEMA.names) == set(_without_time(error_row(CONTEXT, "a", "", ""))) | {"created_at"}


def test_write_metadata_writes_one_table_with_the_schema_and_replaces_it(tmp_path):
    """Rows -> ``metadata/tracks-00000-of-00001.parquet``, read back with pyarrow: METADATA_SCHEMA
    and the same rows (times to the microsecond, decode warnings joined). A second run's table
    replaces the first: one file, only its rows."""
    output = str(tmp_path / "out")
    ok = [
        metadata_row(CONTEXT, "a b", "/m/a b.mp3", stem=StemFacts(stem, f"{output}/stems/a b/{stem}.flac", RATE, 2, 3.5, 0.125, 0.875),
                     precision="bfloat16", note=DecodeNote(("1 corrupt frame", "short by 0.1 s"), 3.6))
        for stem in CONFIG.instruments
    ]
    failed = [error_row(CONTEXT, "b", "/m/b.wav", "/m/b.wav: file not found")]
    assert ok[0]["decode_warnings"] == "1 corrupt frame; short by 0.1 s"
    for rows in (ok + failed, failed):
        with BeamTestPipeline() as pipeline:
            pipeline | beam.Create(rows) | WriteMetadata(output)
        assert os.listdir(os.path.join(output, "metadata")) == [METADATA_FILE]
        table = pq.read_table(os.path.join(output, "metadata", METADATA_FILE))
        assert table.schema.remove_metadata().equals(METADATA_SCHEMA)
        assert sorted(table.to_pylist(), key=lambda row: (row["track_id"], row["stem"] or "")) == sorted(rows, key=lambda row: (row["track_id"], row["stem"] or ""))


# --- MarkProgress ---------------------------------------------------------------------------------

def test_mark_progress_leaves_one_mark_per_track_and_status(tmp_path):
    """Marks of written rows, of rows finished earlier, of a failed track and of a decoded
    length (as pipeline/separation.py wires them), one mark written twice (a retried bundle):
    read_tally finds one mark per track and status, the seconds of finished audio and the
    decoded lengths. A mark that cannot be written does not fail the job (marks are advisory)."""
    root = str(tmp_path / "out" / "_work" / "progress")
    written = [metadata_row(CONTEXT, "a", "/m/a.wav", stem=StemFacts(stem, None, None, None, 61.25, None, None)) for stem in CONFIG.instruments]
    written.append(error_row(CONTEXT, "b", "/m/b.wav", "/m/b.wav: file not found"))
    earlier = [metadata_row(CONTEXT, "c", "/m/c.wav", stem=StemFacts(stem, None, None, None, 30.0, None, None)) for stem in CONFIG.instruments]
    with BeamTestPipeline() as pipeline:
        marks = (
            pipeline | "Written" >> beam.Create(written) | "WrittenMarks" >> beam.FlatMap(metadata_progress, "vocals"),
            pipeline | "Earlier" >> beam.Create([earlier]) | "EarlierMarks" >> beam.FlatMap(metadata_progress, "vocals", SKIPPED),
            pipeline | "Lengths" >> beam.Create([("a", 61.25)]) | "DecodedMarks" >> beam.Map(lambda length: (length[0], DECODED, length[1], "")),
            pipeline | "Retried" >> beam.Create([("a", DONE, 61.25, "")]),
        )
        marks | beam.Flatten() | beam.ParDo(MarkProgress(root))
    tally = read_tally(root)
    assert len(os.listdir(root)) == len(tally.marks) == 4
    assert [tally.count(status) for status in (DONE, SKIPPED, FAILED, DECODED)] == [1, 1, 1, 1]
    assert tally.seconds(DONE, SKIPPED) == 91.25
    assert tally.finished_keys() == {mark_key(track_id) for track_id in "abc"}
    assert tally.decoded() == {mark_key("a"): 61.25}

    (tmp_path / "a-file").write_text("")
    with BeamTestPipeline() as pipeline:
        pipeline | beam.Create([("d", DONE, 1.0, "")]) | beam.ParDo(MarkProgress(str(tmp_path / "a-file" / "progress")))
    assert read_tally(root).marks == tally.marks


# --- the resume key (transforms/resume.py) -------------------------------------------------------

def test_the_resume_key_holds_every_field_that_shapes_the_stems(monkeypatch):
    """job_key: the model, its weights' hash, the codec, a lossy codec's bitrate, the filter and
    further options; float32 keys carry no precision (as before --precision); a bfloat16 key
    runs as bfloat16 only on a CPU with bfloat16 instructions. track_key adds the row's source,
    span and stream, the file's identity and a decoding change, in JSON form; changed_fields
    names what differs."""
    from stembeam.model import precision

    key = job_key("spleeter:2stems", "ab" * 32, "flac", "320k", "soft", config_sha256="c" * 64)
    assert key == {"key_version": 1, "model": "spleeter:2stems", "model_fingerprint": "ab" * 32, "codec": "flac", "bitrate": None, "filter": "soft",
                   "config_sha256": "c" * 64}
    assert job_key("spleeter:2stems", "ab" * 32, "mp3", "320k", "mwf-512")["bitrate"] == "320k"
    bfloat16 = {**key, "precision": "bfloat16"}
    assert with_precision(bfloat16, "float32") == key and with_precision(key, "bfloat16") == bfloat16
    monkeypatch.setattr(precision, "gpu_compute_capability", lambda: None)
    monkeypatch.setattr(precision, "cpu_flags", lambda cpuinfo=None: {"avx512_bf16", "amx_bf16"})
    assert key_run_here(bfloat16) == bfloat16 and key_run_here(key) == key
    monkeypatch.setattr(precision, "cpu_flags", lambda cpuinfo=None: {"avx2"})
    assert key_run_here(bfloat16) == key  # runs (and is recorded) as float32

    track = Track("a", "/m/a.wav", 1.5, 10.0)
    full = track_key(key, track, (1234, 1700000000.5))
    assert full == {**key, "source_uri": "/m/a.wav", "source": {"size": 1234, "modified": 1700000000.5}, "offset": 1.5, "duration": 10.0, "stream": None}
    assert full == json.loads(json.dumps(full))  # what the marker stores
    int32 = track_key(key, dataclasses.replace(track, decoding="int32-pcm"), (1234, 1700000000.5))
    assert changed_fields(full, int32) == ["decoding"] and int32["decoding"] == "int32-pcm"
    assert changed_fields(full, track_key(key, dataclasses.replace(track, offset=2.0, stream=1), (1234, 1700000000.5))) == ["offset", "stream"]
    assert changed_fields(full, track_key(key, track, (1234, 1700000001.0))) == ["source"]
    assert changed_fields(None, full) == sorted(name for name, value in full.items() if value is not None)  # None: the same as absent


def test_decoding_changes_and_identities_are_read_from_the_file_itself(tmp_path):
    """decoding_change reads the header: 32-bit integer WAV is ``int32-pcm``, u-law WAVEX
    ``wavex-law``, 16-bit and float WAV and FLAC nothing. source_identity is ``(size, mtime)``
    of exactly the named file (``a[1].wav`` is not a pattern matching ``a1.wav``) and changes
    when the file is rewritten."""
    tone = (0.5 * np.sin(np.arange(4410) / 10.0)).astype(np.float32)[:, None].repeat(2, axis=1)
    kinds = {"int32.wav": ("WAV", "PCM_32"), "ulaw.wav": ("WAVEX", "ULAW"), "pcm16.wav": ("WAV", "PCM_16"), "float.wav": ("WAV", "FLOAT"),
             "song.flac": ("FLAC", "PCM_24")}
    for name, (container, subtype) in kinds.items():
        soundfile.write(str(tmp_path / name), tone, RATE, subtype=subtype, format=container)
    assert {name: decoding_change(str(tmp_path / name)) for name in kinds} == {
        "int32.wav": "int32-pcm", "ulaw.wav": "wavex-law", "pcm16.wav": None, "float.wav": None, "song.flac": None}
    assert decoding_change(str(tmp_path / "missing.wav")) is None  # decoding names the problem

    shutil.copy(tmp_path / "pcm16.wav", tmp_path / "a[1].wav")
    shutil.copy(tmp_path / "int32.wav", tmp_path / "a1.wav")
    size, modified = source_identity(str(tmp_path / "a[1].wav"))
    assert size == os.path.getsize(tmp_path / "pcm16.wav") != os.path.getsize(tmp_path / "a1.wav")
    assert modified == pytest.approx(os.path.getmtime(tmp_path / "a[1].wav"))
    os.utime(tmp_path / "a[1].wav", (modified + 10, modified + 10))
    assert source_identity(str(tmp_path / "a[1].wav")) != (size, modified)
    assert storage.stat(str(tmp_path / "a[1].wav"))[0] == size
