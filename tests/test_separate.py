"""`stembeam separate` against Spleeter's own inference graph, and on real stems."""
import os

import numpy as np
import pytest
import tensorflow as tf

from stembeam.model.separation import separate_waveform
from stembeam.pipeline.cli import main
from tests.conftest import CC0, CC0_SONGS, EXAMPLE, needs_shared, read_wav, snr_db

PARITY_FILES = [EXAMPLE, os.path.join(CC0, "2.Lithium", "mixture.flac")]


def _separate_cli(tmp_path, path, *flags):
    out = tmp_path / "out"
    assert main(["separate", "--no-progress", "-o", str(out), *flags, path]) == 0
    name = os.path.splitext(os.path.basename(path))[0]
    return {stem: read_wav(str(out / name / f"{stem}.wav")) for stem in ("vocals", "accompaniment")}


@needs_shared
@pytest.mark.parametrize("path", PARITY_FILES, ids=["audio_example", "cc0-lithium"])
def test_separate_matches_official_graph(tmp_path, path, official_graph, decoded):
    ours = _separate_cli(tmp_path, path)
    reference = official_graph.separate(decoded(path))
    for stem, signal in reference.items():
        assert ours[stem].shape == signal.shape == decoded(path).shape
        snr = snr_db(signal, ours[stem])
        print(f"parity {os.path.basename(os.path.dirname(path))}/{os.path.basename(path)} {stem}: SNR {snr:.1f} dB")
        assert snr >= 60.0


@needs_shared
def test_separation_math_matches_graph_before_quantisation(two_stems, official_graph, decoded):
    _, separator = two_stems
    waveform = decoded(EXAMPLE)
    ours = separate_waveform(waveform, separator, batch_size=2)
    reference = official_graph.separate(waveform)
    for stem in reference:
        assert snr_db(reference[stem], ours[stem]) >= 100.0  # float32 round-off only


@needs_shared
def test_the_batch_size_does_not_change_a_segments_output(two_stems, decoded):
    """Why --batch_size is not in the resume key: a segment's signals are the same bits alone
    or batched with others."""
    config, separator = two_stems
    waveform, length = decoded(os.path.join(CC0, "2.Lithium", "mixture.flac")), config.segment_samples
    spans = np.stack([waveform[start : start + length] for start in (0, length // 3, length // 2, length)])
    together = separator.soft(spans)
    assert together.shape == (4, length, 2, 2) and np.abs(together).max() > 0.1
    for size in (1, 2, 3):
        assert np.array_equal(separator.soft(spans[:size]), together[:size])


def _official_mwf(official_graph, waveform):
    """Spleeter's --mwf computed on the official graph's own tensors."""
    import norbert

    sources, mix = official_graph.wiener_inputs(waveform)
    v = np.pad(sources, [(0, 0), (0, mix.shape[1] - sources.shape[1]), (0, 0), (0, 0)])
    estimates = norbert.wiener(v, mix)
    hann = lambda n, dtype: tf.signal.hann_window(n, periodic=True, dtype=dtype)  # noqa: E731
    out = {}
    for k, stem in enumerate(("vocals", "accompaniment")):
        spec = tf.constant(np.transpose(estimates[..., k], (2, 0, 1)).astype(np.complex64))
        wave = tf.signal.inverse_stft(spec, 4096, 1024, window_fn=hann).numpy().T * (2.0 / 3.0)
        out[stem] = wave[: waveform.shape[0]]
    return out


@needs_shared
def test_mwf_is_spleeters_norbert_wiener(tmp_path, official_graph, decoded):
    ours = _separate_cli(tmp_path, EXAMPLE, "--mwf", "--mwf-block-frames", "0")
    reference = _official_mwf(official_graph, decoded(EXAMPLE))
    for stem, signal in reference.items():
        snr = snr_db(signal, ours[stem])
        print(f"mwf parity audio_example {stem}: SNR {snr:.1f} dB")
        assert snr >= 60.0


@needs_shared
def test_sdr_on_cc0_multitrack_soft_and_mwf(two_stems, decoded):
    """BSS Eval v4 (museval, 1 s windows, median) of vocals / accompaniment on real stems:
    soft masks, the whole-track Wiener filter (Spleeter's) and the default 512-frame blocks."""
    import museval

    _, separator = two_stems
    modes = {"soft": dict(mwf=False), "mwf whole": dict(mwf=True, mwf_block_frames=0), "mwf 512": dict(mwf=True)}
    table = {}
    for song in CC0_SONGS:
        folder = os.path.join(CC0, song)
        mix = decoded(os.path.join(folder, "mixture.flac"))
        vocals = decoded(os.path.join(folder, "vocals.flac"))
        references = np.stack([vocals, mix - vocals])  # accompaniment = drums + bass + other
        for mode, kwargs in modes.items():
            stems = separate_waveform(mix, separator, batch_size=3, **kwargs)
            sdr, _, _, _ = museval.evaluate(references, np.stack([stems["vocals"], stems["accompaniment"]]), win=44100, hop=44100)
            table[song, mode] = np.nanmedian(sdr, axis=1)
    print("\nSDR (dB, median of 1 s windows)  vocals: " + " / ".join(modes) + "   accompaniment: same order")
    for song in CC0_SONGS:
        vocals = " / ".join(f"{table[song, m][0]:.2f}" for m in modes)
        accompaniment = " / ".join(f"{table[song, m][1]:.2f}" for m in modes)
        print(f"{song:12s} {vocals:>24s}   {accompaniment:>24s}")
        soft, whole, block = table[song, "soft"], table[song, "mwf whole"], table[song, "mwf 512"]
        assert soft[0] > 1.5 and soft[1] > 4.0  # a working separator, not noise
        # Spleeter's MWF on this album: up to +0.4 dB on vocals, within 0.4 dB on accompaniment.
        assert -0.5 <= whole[0] - soft[0] <= 1.0
        assert abs(whole[1] - soft[1]) <= 0.6
        # Blocks of one segment estimate the spatial covariances locally: close to the whole-track filter.
        assert np.all(np.abs(block - whole) <= 0.5)
