"""model.synthesis (masks, inverse FFT and overlap-add in numpy) gives the TF graph's bits
(model.segment_graph's ``_synthesis``, the previous release's path), issue 23."""
import contextlib
import dataclasses
import os

import numpy as np
import pytest
import tensorflow as tf

from stembeam.model import synthesis
from stembeam.model.config import get_config
from stembeam.model.segment_graph import SegmentSeparator
from tests.conftest import CC0, needs_shared


def _graph_and_numpy(separator, spec, sources, chunk=synthesis.CHUNK_FRAMES):
    graph = separator._synthesis(tf.constant(spec), tf.constant(sources)).numpy()  # noqa: SLF001 - the release's path
    mine = synthesis.synthesize(spec, sources, separator._window, separator.config, chunk)  # noqa: SLF001
    return graph, mine


def _same_bits(a, b) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype == np.float32 and np.array_equal(a.view(np.uint32), b.view(np.uint32))


def _random_inputs(config, batch, seed):
    """A mixture STFT and U-net magnitudes with silent frames, exact zeros and a loud frame."""
    rs = np.random.RandomState(seed)
    count = len(config.instruments)
    spec = ((rs.randn(batch, 2, config.T, config.F) + 1j * rs.randn(batch, 2, config.T, config.F)) * 3).astype(np.complex64)
    sources = (np.abs(rs.randn(batch, config.T, config.F, 2, count)) * rs.rand(batch, config.T, 1, 1, 1) * 5).astype(np.float32)
    spec[0, :, 5:9] = 0  # silent frames (as at the end of a track)
    sources[0, 5:9] = 0
    sources[-1, 20, :, 0, 0] = 0  # one stem exactly zero: the mask is eps/S over the rest
    spec[-1, 1, 30] *= 1e4
    return spec, sources


@pytest.mark.fast
@pytest.mark.parametrize("stems", ["2stems", "4stems", "5stems"])
def test_random_segments_give_the_graphs_bits(stems):
    config = get_config(stems)
    separator = SegmentSeparator(None, config)
    assert synthesis.supports(config)
    graph, mine = _graph_and_numpy(separator, *_random_inputs(config, 2, len(stems)))
    assert graph.shape == (2, config.segment_samples, 2, len(config.instruments))
    assert _same_bits(graph, mine)


@pytest.mark.fast
@pytest.mark.parametrize("chunk", [1, 3, 7, 64, 100])
def test_chunks_that_do_not_divide_the_segment_give_the_same_bits(chunk):
    # T = 100 frames: the chunks end inside the segment, the last one short, and the tail of q - 1 blocks.
    config = dataclasses.replace(get_config("2stems"), T=100)
    separator = SegmentSeparator(None, config)
    graph, mine = _graph_and_numpy(separator, *_random_inputs(config, 3, chunk), chunk=chunk)
    assert graph.shape[1] == (100 - 1) * config.frame_step + config.frame_length
    assert _same_bits(graph, mine)


@pytest.mark.fast
def test_average_mask_extension_keeps_the_graph():
    config = dataclasses.replace(get_config("2stems"), mask_extension="average")
    assert not synthesis.supports(config)
    assert SegmentSeparator(None, config)._window is None  # noqa: SLF001 - the TF graph runs


@needs_shared
def test_real_music_through_the_official_model_gives_the_graphs_bits():
    from stembeam.model.decode import load_audio
    from stembeam.model.load import load_model
    from stembeam.model.separation import segment_count, segment_waveform

    config, model = load_model("spleeter:2stems")
    separator = SegmentSeparator(model, config)
    waveform = load_audio(os.path.join(CC0, "2.Lithium", "mixture.flac"))
    last = segment_count(len(waveform), config) - 1
    spans = np.stack([segment_waveform(waveform, i, config) for i in (0, last)])  # the last one mostly padding
    spec, mix = separator._analysis(tf.constant(spans))  # noqa: SLF001
    sources = separator._unets(mix).numpy()  # noqa: SLF001
    graph, mine = _graph_and_numpy(separator, spec.numpy(), sources)
    assert _same_bits(graph, mine)
    # and what the separator returns is it
    assert _same_bits(separator.soft(spans), graph)
    tail = mine[1, -200000:]  # beyond the track's end
    assert not tail.any() and not np.signbit(tail).any()  # +0.0 as the graph's 0 + ... sums, never -0.0


@pytest.mark.fast
def test_non_finite_spectra_give_the_graphs_inf_and_nan_without_warnings():
    import warnings

    # A mixture near float32's limit (the CLI then refuses its stems with one error line).
    config = dataclasses.replace(get_config("2stems"), T=40)
    separator = SegmentSeparator(None, config)
    spec, sources = _random_inputs(config, 1, 5)
    spec[0, 0, 3:6] = np.complex64(complex(np.inf, 0))
    sources[0, 3:6] = np.inf
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        graph, mine = _graph_and_numpy(separator, spec, sources)
    assert np.isnan(graph).any()
    assert np.array_equal(np.isnan(graph), np.isnan(mine)) and np.array_equal(graph[~np.isnan(graph)], mine[~np.isnan(mine)])


@pytest.mark.fast
def test_frames_past_the_last_audible_sample_are_skipped_with_the_same_bits():
    """A track's last segment is mostly padding: its frames past the last non-zero sample have a
    zero spectrum; synthesising only the others gives the graph's bits, zeros after them."""
    config = dataclasses.replace(get_config("2stems"), T=100)
    separator = SegmentSeparator(None, config)
    rs = np.random.RandomState(7)
    spans = np.zeros((3, config.segment_samples, 2), np.float32)
    spans[0] = rs.randn(config.segment_samples, 2)  # every frame
    spans[1, : 37 * config.frame_step + 5] = rs.randn(37 * config.frame_step + 5, 2)  # frames 0..37 reach it
    spans[2, 5 * config.frame_step + 3, 1] = -0.25  # one sample: frames 2..5 reach it
    frames = synthesis.audible_frames(spans, config)
    assert frames.tolist() == [100, 38, 6]
    assert synthesis.audible_frames(np.zeros_like(spans), config).tolist() == [0, 0, 0]
    odd = np.zeros_like(spans)
    odd[0, 7, 0], odd[1, -1, 1], odd[2, 3000, 0] = np.nan, 1e-30, -0.0  # NaN and denormals count, -0.0 does not
    assert synthesis.audible_frames(odd, config).tolist() == [1, 100, 0]
    spec, _ = separator._analysis(tf.constant(spans))  # noqa: SLF001
    spec = spec.numpy()
    for b, used in enumerate(frames):
        assert not spec[b, :, used:].any() and spec[b, :, used - 1].any()
    sources = np.abs(rs.randn(3, config.T, config.F, 2, 2)).astype(np.float32)
    graph = separator._synthesis(tf.constant(spec), tf.constant(sources)).numpy()  # noqa: SLF001
    skipped = synthesis.synthesize(spec, sources, separator._window, config, 7, frames=frames)  # noqa: SLF001
    assert _same_bits(graph, skipped)
    assert not skipped[1, (38 - 1) * config.frame_step + config.frame_length :].any()


@pytest.mark.fast
def test_non_finite_magnitudes_in_skipped_frames_give_the_graphs_nans():
    """Inf or NaN spread through the U-nets into padding frames: then every frame is synthesised."""
    config = dataclasses.replace(get_config("2stems"), T=40)
    separator = SegmentSeparator(None, config)
    spec, sources = _random_inputs(config, 1, 3)
    spec[0, :, 20:] = 0
    sources[0, 30] = np.nan
    graph = separator._synthesis(tf.constant(spec), tf.constant(sources)).numpy()  # noqa: SLF001
    mine = separator._synthesise(spec, sources, np.array([20]), None)  # noqa: SLF001
    assert np.isnan(graph).any()
    assert np.array_equal(np.isnan(graph), np.isnan(mine)) and np.array_equal(graph[~np.isnan(graph)], mine[~np.isnan(mine)])


@pytest.mark.fast
@pytest.mark.parametrize("threads", [0, 3])
def test_segments_added_into_a_track_give_the_overlap_adds_bits(threads):
    """The API adds each segment's signals straight into the track's stems (``into``), on one
    thread or a pool (neighbouring segments in turn): the bits of the corpus job's path, the
    segments' own signals overlap-added in order (model.separation.OverlapAdd)."""
    import concurrent.futures

    from stembeam.model.separation import overlap_add_segments

    config = dataclasses.replace(get_config("2stems"), T=40)
    separator = SegmentSeparator(None, config)
    spec, sources = _random_inputs(config, 5, 11)
    frames = np.array([40, 40, 0, 40, 17])  # a silent segment, and a last one mostly padding
    spec[2], spec[4, :, 17:] = 0, 0
    advance, length = config.T * config.frame_step, config.segment_samples
    expected = overlap_add_segments(separator._synthesise(spec, sources, frames, None), config, 4 * advance + length)  # noqa: SLF001
    stems = np.zeros((2, 4 * advance + length, 2), np.float32)
    with concurrent.futures.ThreadPoolExecutor(threads) if threads else contextlib.nullcontext() as pool:
        into = [stems[:, j * advance : j * advance + length] for j in range(5)]
        assert separator._synthesise(spec, sources, frames, pool, into) is None  # noqa: SLF001
    assert np.abs(stems).max() > 0.05 and _same_bits(stems.transpose(1, 2, 0), expected)


@needs_shared
def test_one_song_at_a_time_on_every_core_gives_the_same_bits():
    """Separator (the sequential API) runs the inverse STFT of a batch's segments and channels
    on a thread pool, adding them into the track's stems: the same samples as the corpus job's
    one thread per batch and overlap-add of each segment's signals."""
    from stembeam.model.decode import load_audio
    from stembeam.model.load import load_separator
    from stembeam.model.separation import _batches, overlap_add_segments, separate_waveform

    config, separator = load_separator("spleeter:2stems")
    waveform = load_audio(os.path.join(CC0, "3.Sodium", "mixture.flac"))
    job = overlap_add_segments([signal for _, spans in _batches(waveform, config, 2) for signal in separator.soft(spans)], config, len(waveform))
    for threads in (1, 3):
        separated = separate_waveform(waveform, separator, batch_size=4, synthesis_threads=threads)
        for k, stem in enumerate(config.instruments):
            assert _same_bits(separated[stem], job[..., k]) and np.abs(separated[stem]).max() > 0.1


def test_segments_added_into_a_track_through_the_tf_synthesis_graph():
    """Models whose masks are not zero above F keep the TF synthesis graph: its segment signals
    are added into the track's stems with the overlap-add's bits too, around a silent segment
    that adds nothing."""
    import keras

    from stembeam.model.config import from_spleeter
    from stembeam.model.separation import _batches, overlap_add_segments, separate_waveform
    from stembeam.model.unet import build_model
    from tests.test_spleeter_compat import SPLEETER_TRAIN_CONFIG

    config = from_spleeter(dict(SPLEETER_TRAIN_CONFIG, mask_extension="average"))[0]
    keras.utils.set_random_seed(1)
    separator = SegmentSeparator(build_model(config), config)
    assert separator._window is None  # noqa: SLF001 - the graph's path
    advance = config.T * config.frame_step
    waveform = np.random.RandomState(3).uniform(-0.5, 0.5, (4 * advance, 2)).astype(np.float32)
    waveform[2 * advance : 2 * advance + config.segment_samples] = 0  # segment 2, the first of its batch, hears nothing
    assert separator.soft(np.stack([waveform[2 * advance : 2 * advance + config.segment_samples]])).max() == 0
    job = overlap_add_segments([signal for _, spans in _batches(waveform, config, 2) for signal in separator.soft(spans)], config, len(waveform))
    separated = separate_waveform(waveform, separator, batch_size=2)
    for k, stem in enumerate(config.instruments):
        assert _same_bits(separated[stem], job[..., k]) and np.abs(separated[stem]).max() > 0.01
