"""numpy STFT / inverse STFT and segmenting equal TensorFlow's and the whole-track transform."""
import numpy as np
import pytest
import tensorflow as tf

from stembeam.model import spectral
from stembeam.model.config import get_config
from stembeam.model import segment_graph
from stembeam.model.separation import OverlapAdd, segment_count, segment_waveform

pytestmark = pytest.mark.fast
CONFIG = get_config("2stems")


def _tf_stft(waveform):
    hann = lambda n, dtype: tf.signal.hann_window(n, periodic=True, dtype=dtype)  # noqa: E731
    out = tf.signal.stft(tf.constant(waveform.T), 4096, 1024, window_fn=hann, pad_end=True)
    return np.transpose(out.numpy(), (1, 2, 0))


def test_stft_matches_tf_signal_with_end_padding():
    waveform = np.random.default_rng(0).standard_normal((50_001, 2)).astype(np.float32)
    ours = spectral.stft(waveform, 4096, 1024)
    theirs = _tf_stft(waveform)
    assert ours.shape == theirs.shape == (49, 2049, 2)  # ceil(50001 / 1024), no leading frame
    np.testing.assert_allclose(ours, theirs, atol=2e-3, rtol=0)


def test_istft_matches_tf_signal_times_two_thirds():
    spec = _tf_stft(np.random.default_rng(1).standard_normal((30_000, 2)).astype(np.float32))
    hann = lambda n, dtype: tf.signal.hann_window(n, periodic=True, dtype=dtype)  # noqa: E731
    theirs = tf.signal.inverse_stft(tf.constant(np.transpose(spec, (2, 0, 1))), 4096, 1024, window_fn=hann).numpy().T * (2 / 3)
    ours = spectral.istft(spec, 4096, 1024)
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


def test_identity_masks_reconstruct_inside_the_signal():
    waveform = np.random.default_rng(2).uniform(-1, 1, (20_000, 2)).astype(np.float32)
    back = spectral.istft(spectral.stft(waveform, 4096, 1024), 4096, 1024)[:20_000]
    # Full 4x overlap only from sample 3072 on: the graph's edges are not perfectly reconstructed.
    np.testing.assert_allclose(back[3072:-3072], waveform[3072:-3072], atol=1e-5)


def test_segments_equal_whole_track_stft_and_overlap_add():
    n = 2 * CONFIG.T * CONFIG.frame_step + 12_345  # three segments, the last one short
    waveform = np.random.default_rng(3).standard_normal((n, 2)).astype(np.float32)
    whole = spectral.stft(waveform, 4096, 1024)
    assert segment_count(n, CONFIG) == 3
    pieces = [spectral.stft(segment_waveform(waveform, j, CONFIG), 4096, 1024, frames=CONFIG.T) for j in range(3)]
    stacked = np.concatenate(pieces)
    np.testing.assert_allclose(stacked[: whole.shape[0]], whole, atol=2e-3)
    assert not stacked[whole.shape[0] :].any()  # frames past ceil(n/hop) are zero, as the graph pads
    adder = OverlapAdd(CONFIG)
    streamed = np.concatenate([adder.add(spectral.istft(p, 4096, 1024)) for p in pieces] + [adder.finish()])[:n]
    np.testing.assert_allclose(streamed, spectral.istft(whole, 4096, 1024)[:n], atol=1e-4)


def test_ratio_masks_are_spleeters():
    sources = np.zeros((1, CONFIG.F, 1, 2), dtype=np.float32)
    sources[0, 0, 0] = [3.0, 4.0]
    masks = segment_graph.ratio_masks(tf.constant(sources), CONFIG).numpy()
    assert masks.shape == (1, CONFIG.n_bins, 1, 2)
    np.testing.assert_allclose(masks[0, 0, 0], [9 / 25, 16 / 25], rtol=1e-6)
    np.testing.assert_allclose(masks[0, 1, 0], [0.5, 0.5], rtol=1e-6)  # eps/S over eps on silence
    assert not masks[0, CONFIG.F :].any()  # mask extension "zeros" above F


def test_overlap_add_equals_tf_signal():
    frames = tf.constant(np.random.default_rng(4).standard_normal((2, 3, 7, 4096)).astype(np.float32))
    np.testing.assert_allclose(
        segment_graph.overlap_add(frames, 1024).numpy(), tf.signal.overlap_and_add(frames, 1024).numpy(), atol=1e-5
    )
