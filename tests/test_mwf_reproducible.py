"""`--mwf` gives the same bits every run (issue 20, item 16).

numpy picks a fused-multiply-add SIMD kernel or a scalar fallback for each complex product and
complex absolute value by comparing buffer addresses, so norbert.wiener's results depended on
where malloc put its temporaries: in the pipeline's worker threads, with TensorFlow and Beam
allocating beside them, the same block of frames gave different stems from run to run
(model.wiener.norbert_wiener). These checks fail with ``norbert.wiener`` in its place.
"""
import hashlib
import os
import threading

import numpy as np
import pytest

from tests.conftest import CC0, needs_shared, read_wav, stem_folder, write_manifest

pytestmark = needs_shared
BLOCK = 256
SONGS = ("3.Sodium", "1.Hydrogen")


@pytest.fixture(scope="module")
def wiener_inputs(two_stems, decoded):
    """``(config, spec [T, 2049, 2], sources [T, 1024, 2, 2], frames)``: the Wiener filter's
    inputs for the first segment of a real mixture and for its last (268 of 512 frames)."""
    from stembeam.model.separation import segment_count, segment_frames, segment_waveform

    config, separator = two_stems
    waveform = decoded(os.path.join(CC0, "1.Hydrogen", "mixture.flac"))
    last = segment_count(waveform.shape[0], config) - 1
    specs, sources = separator.spectra(np.stack([segment_waveform(waveform, j, config) for j in (0, last)]))
    frames = [segment_frames(j, waveform.shape[0], config) for j in (0, last)]
    assert frames[1] < config.T
    return config, specs, sources, frames


def _at_offset(array: np.ndarray, offset: int) -> np.ndarray:
    """A copy of ``array`` whose first byte is ``offset`` bytes past a 64-byte boundary."""
    raw = np.empty(array.nbytes + 128, np.uint8)
    start = (-raw.ctypes.data) % 64 + offset
    copy = raw[start : start + array.nbytes].view(array.dtype).reshape(array.shape)
    copy[...] = array
    assert copy.ctypes.data % 64 == offset
    return copy


def _churn(rng: np.random.Generator, kept: list) -> None:
    """Allocate and free buffers of assorted sizes, as the pipeline's other work does between
    two filter calls, so the filter's temporaries land at other addresses."""
    for _ in range(int(rng.integers(1, 12))):
        kept.append(np.ones(int(rng.integers(16, 400_000)), np.uint8))
    del kept[: int(rng.integers(0, len(kept) + 1))]


def test_wiener_segment_bits_do_not_depend_on_buffers_or_threads(wiener_inputs):
    """The same segment filtered from inputs at other alignments, on one worker thread and on two
    at once with the heap in other states, gives exactly the main thread's bits."""
    from stembeam.model.wiener import wiener_segment

    config, specs, sources, frames = wiener_inputs
    reference = [wiener_segment(specs[k], sources[k], config, frames[k], BLOCK) for k in range(2)]
    offsets = [0, 8, 16, 24, 40, 56]
    results, errors = [], []

    def work(worker: int, calls: int):
        rng = np.random.default_rng(worker)
        kept = []
        try:
            for call in range(calls):
                k = (worker + call) % 2
                offset = offsets[(worker * calls + call) % len(offsets)]
                spec, source = _at_offset(specs[k], offset), _at_offset(sources[k], (offset * 3) % 64 // 4 * 4)
                _churn(rng, kept)
                out = wiener_segment(spec, source, config, frames[k], BLOCK)
                results.append((worker, call, k, offset, int(np.count_nonzero(out.view(np.uint32) != reference[k].view(np.uint32)))))
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    for workers in ((0,), (1, 2)):  # one worker thread, then two at once
        threads = [threading.Thread(target=work, args=(worker, 4)) for worker in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors
    assert len(results) == 12
    differing = [r for r in results if r[-1]]
    print(f"{len(differing)} of {len(results)} calls differ from the main thread's bits: {differing}")
    assert not differing, f"(worker, call, segment, input offset, words differing): {differing}"


def test_mwf_pipeline_runs_give_identical_stems(tmp_path, monkeypatch):
    """The same ``--mwf --mwf_block_frames 256`` job (20 s of two real songs) into three fresh
    outputs gives the same float32 signals for every segment and byte-identical stems."""
    from stembeam.pipeline.corpus import run
    from stembeam.transforms import write

    segments = {}  # (run, track, segment) -> sha1 of the segment's float32 signals
    add = write._TrackInFlight.add

    def recording_add(flight, signals, precision):
        segments[attempt, flight.track.track_id, flight.next] = hashlib.sha1(np.ascontiguousarray(signals, np.float32).tobytes()).hexdigest()
        add(flight, signals, precision)

    monkeypatch.setattr(write._TrackInFlight, "add", recording_add)
    rows = [(os.path.join(CC0, song, "mixture.flac"), song.split(".")[1].lower(), 20) for song in SONGS]
    manifest = write_manifest(tmp_path / "manifest.csv", rows, ("uri", "track_id", "duration"))
    stems = []
    for attempt in range(3):
        output = str(tmp_path / f"out{attempt}")
        assert run(["--manifest", manifest, "--output", output, "--mwf", "--mwf_block_frames", str(BLOCK)]) == 0
        files = {}
        for song in SONGS:
            folder = stem_folder(output, song.split(".")[1].lower())
            for stem in ("vocals", "accompaniment"):
                with open(os.path.join(folder, f"{stem}.wav"), "rb") as handle:
                    files[song, stem] = handle.read()
            assert np.abs(read_wav(os.path.join(folder, "vocals.wav"))).max() > 0.01
        stems.append(files)
    names = sorted({(track, index) for _, track, index in segments})
    assert len(names) == 4 and len(segments) == 12, sorted(segments)  # 2 segments per track
    differing = [(attempt, name) for attempt in (1, 2) for name in names if segments[(attempt, *name)] != segments[(0, *name)]]
    assert not differing, f"(run, segment) with other float32 signals than run 0: {differing}"
    for attempt in (1, 2):
        for key in stems[0]:
            a, b = (np.frombuffer(s[key][44:], "<i2") for s in (stems[0], stems[attempt]))
            assert stems[attempt][key] == stems[0][key], f"run {attempt} {key}: {np.count_nonzero(a != b)} samples differ from run 0"


def test_filter_is_norberts_wiener(wiener_inputs):
    """norbert_wiener is norbert.wiener: the same bits wherever norbert's temporaries took the
    SIMD kernel, at most last-bit rounding elsewhere."""
    import norbert

    from stembeam.model import spectral
    from stembeam.model.wiener import norbert_wiener

    config, specs, sources, _ = wiener_inputs
    v = spectral.extend_bins(sources[0][:BLOCK], config.n_bins)
    theirs = norbert.wiener(v, specs[0][:BLOCK].copy())
    ours = norbert_wiener(v, specs[0][:BLOCK].copy())
    assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
    error = np.sum(np.abs(ours - theirs) ** 2)
    snr = 10 * np.log10(np.sum(np.abs(theirs) ** 2) / error) if error else np.inf
    same = np.mean([np.array_equal(a, b) for a, b in zip(ours, theirs)])
    print(f"norbert_wiener vs norbert.wiener: SNR {snr:.1f} dB, {same:.0%} of frames bit-identical")
    assert snr > 110
