"""Speed without changing float32 bytes (issue 13): silent segments skip the model; --precision
bfloat16 is recorded in the metadata and the resume key, and falls back to float32 (one line) on
a CPU without bfloat16 instructions."""
import dataclasses
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from stembeam.model import precision
from stembeam.model.decode import load_audio
from stembeam.model.encode import write_audio
from tests.conftest import EXAMPLE, needs_shared, snr_db, write_manifest

pytestmark = needs_shared


def test_silent_segments_are_exact_zeros_without_a_model_call(two_stems, decoded):
    config, separator = two_stems
    from stembeam.model.separation import segment_waveform

    audible = segment_waveform(decoded(EXAMPLE), 0, config)
    silent = np.zeros_like(audible)
    calls = []
    unets = separator._unets
    separator._unets = lambda mix: calls.append(mix.shape[0]) or unets(mix)
    try:
        alone = separator.soft(audible[None])
        before = separator.silent_segments
        mixed = separator.soft(np.stack([silent, audible, silent]))
        assert calls == [1, 1], "the U-nets saw only the audible segment"
        assert separator.silent_segments - before == 2
        all_silent = separator.soft(np.stack([silent, silent]))
        assert calls == [1, 1], "an all-silent batch makes no model call"
    finally:
        separator._unets = unets
    assert all_silent.shape == (2, config.segment_samples, 2, 2) and not np.any(all_silent)
    assert not np.any(mixed[[0, 2]])
    assert np.array_equal(mixed[1], alone[0]), "the audible segment's signals are the same bytes as when it is alone"
    assert np.abs(alone).max() > 0.01


def test_bfloat16_request_on_a_cpu_without_it_says_so_once_and_runs_float32(tmp_path, capsys):
    plain = tmp_path / "cpuinfo"
    plain.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n")
    bf16 = tmp_path / "cpuinfo-bf16"
    bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16\n")
    assert precision.effective_precision("float32", str(plain), gpu=()) == "float32"
    assert capsys.readouterr().err == ""
    assert precision.effective_precision("bfloat16", str(plain), gpu=()) == "float32"
    assert precision.effective_precision("bfloat16", str(plain), gpu=()) == "float32"
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["stembeam: --precision bfloat16: this CPU has no bfloat16 instructions (avx512_bf16 or amx_bf16); running in float32"]
    assert precision.effective_precision("bfloat16", str(bf16), gpu=()) == "bfloat16"
    assert precision.effective_precision("bfloat16", str(bf16), gpu=()) == "bfloat16"
    assert capsys.readouterr().err.splitlines() == [
        "stembeam: --precision bfloat16: this CPU has avx512_bf16 but no AMX (amx_bf16); bfloat16 U-nets are usually slower than "
        "float32 on such CPUs (keep float32 for speed); running in bfloat16 as asked"
    ]
    amx = tmp_path / "cpuinfo-amx"
    amx.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert precision.effective_precision("bfloat16", str(amx), gpu=()) == "bfloat16"
    assert capsys.readouterr().err == ""
    # GPUs: Keras mixed precision, float16 where the GPU has no bfloat16 arithmetic (T4: 7.5).
    assert precision.effective_precision("bfloat16", str(plain), gpu=(7, 5)) == "mixed_float16"
    assert precision.effective_precision("bfloat16", str(plain), gpu=(8, 9)) == "mixed_bfloat16"
    with pytest.raises(ValueError, match="--precision 'half'"):
        precision.effective_precision("half")


def test_auto_is_bfloat16_where_it_pays_and_float32_elsewhere_without_a_line(tmp_path, capsys):
    cpus = {}
    for name, flags in (("plain", "fpu sse2 avx2 avx512f"), ("bf16", "avx512f avx512_bf16"), ("amx", "avx512f avx512_bf16 amx_bf16 amx_tile")):
        cpus[name] = tmp_path / name
        cpus[name].write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    assert precision.effective_precision("auto", str(cpus["amx"]), gpu=()) == "bfloat16"
    # without AMX, oneDNN's bfloat16 convolutions are slower than float32's: auto keeps float32
    assert precision.effective_precision("auto", str(cpus["bf16"]), gpu=()) == "float32"
    assert precision.effective_precision("auto", str(cpus["plain"]), gpu=()) == "float32"
    assert precision.effective_precision("auto", str(cpus["plain"]), gpu=(7, 5)) == "mixed_float16"
    assert precision.effective_precision("auto", str(cpus["plain"]), gpu=(8, 0)) == "mixed_bfloat16"
    assert capsys.readouterr().err == ""
    assert "--precision bfloat16 (or auto)" in precision.faster_precision_hint(str(cpus["amx"]))
    assert precision.faster_precision_hint(str(cpus["bf16"])) is None and precision.faster_precision_hint(str(cpus["plain"])) is None


def test_the_command_line_hints_at_bfloat16_on_amx_only_to_a_person_at_a_terminal(tmp_path, capsys, monkeypatch):
    from stembeam.pipeline import cli

    amx = tmp_path / "cpuinfo-amx"
    amx.write_text("processor\t: 0\nflags\t\t: avx512f avx512_bf16 amx_bf16 amx_tile\n")
    monkeypatch.setenv("STEMBEAM_CPUINFO", str(amx))
    cli._precision_hint("separate", ["-o", "out", "song.wav"])  # noqa: SLF001
    assert capsys.readouterr().err == "", "not at a terminal (scripts, logs, CI): no hint"
    monkeypatch.setattr(cli.sys.stderr, "isatty", lambda: True)
    for command, rest in (("separate", ["-o", "out", "song.wav"]), ("pipeline", ["--manifest", "m.csv"])):
        cli._precision_hint(command, rest)  # noqa: SLF001
        assert capsys.readouterr().err.splitlines() == [precision.faster_precision_hint()]
    for command, rest in (("separate", ["--precision", "float32", "song.wav"]), ("pipeline", ["--precision=bfloat16"]), ("features", [])):
        cli._precision_hint(command, rest)  # noqa: SLF001
        assert capsys.readouterr().err == "", f"{command} {rest}: chosen, or no separation"
    monkeypatch.setenv("STEMBEAM_CPUINFO", str(tmp_path / "missing"))
    cli._precision_hint("separate", ["song.wav"])  # noqa: SLF001
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("stems", ["2stems", "4stems", "5stems"])
@pytest.mark.parametrize("channels", [2, 1])
def test_bfloat16_transcription_of_the_unets_is_the_keras_model(stems, channels):
    """model.unet.reduced_precision_unets (the bfloat16 path on CPUs) computes what the Keras
    U-nets compute: in float32 the same numbers within rounding, for every official layout
    (LeakyReLU/ReLU, ELU, softmax masks, mono), with batch norms away from the identity."""
    import dataclasses

    from stembeam.model.config import get_config
    from stembeam.model.unet import build_model, reduced_precision_unets

    config = dataclasses.replace(get_config(stems), T=64, F=128, n_channels=channels)
    model = build_model(config)
    rs = np.random.RandomState(len(stems) + channels)
    for layer in model.layers:
        if "batch_normalization" in layer.name:
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([gamma * rs.uniform(0.5, 1.5, gamma.shape), beta + 0.1 * rs.randn(*beta.shape),
                               mean + 0.1 * rs.randn(*mean.shape), variance * rs.uniform(0.5, 2.0, variance.shape)])
    mix = np.abs(rs.randn(2, config.T, config.F, channels)).astype(np.float32)
    reference = model(mix).numpy()
    assert reference.shape == (2, config.T, config.F, 2, len(config.instruments))

    def relative_error(dtype):
        out = reduced_precision_unets(model, config, dtype)(mix).numpy()
        assert out.shape == reference.shape and out.dtype == np.float32
        return float(np.sqrt(np.mean((out - reference) ** 2) / np.mean(reference**2)))

    assert relative_error("float32") < 1e-5
    assert 1e-4 < relative_error("bfloat16") < 3e-2


def _run(manifest, output, *flags):
    from stembeam.pipeline.corpus import run_pipeline
    from stembeam.pipeline.summary import COUNTERS, counters as summary

    result = run_pipeline(["--manifest", manifest, "--output", str(output), *flags]).result
    counts = summary(result, COUNTERS)
    return counts["tracks_ok"], counts["tracks_skipped"]


def _precisions(output):
    rows = pq.read_table(os.path.join(str(output), "metadata", "tracks-00000-of-00001.parquet")).to_pylist()
    return sorted((row["stem"], row["precision"]) for row in rows)


def test_precision_is_recorded_and_resume_tells_precisions_apart(tmp_path, monkeypatch):
    # Whatever this machine's CPU: bfloat16 runs as bfloat16 (oneDNN emulates it where the
    # instructions are missing), so the rows and keys below do not depend on the hardware.
    monkeypatch.setattr(precision, "cpu_flags", lambda cpuinfo="": {"avx512_bf16", "amx_bf16"})
    song = str(tmp_path / "song.wav")
    write_audio(song, load_audio(EXAMPLE)[: 4 * 44100])
    manifest = write_manifest(tmp_path / "m.csv", [(song, "song")])
    output = tmp_path / "out"
    assert _run(manifest, output) == (1, 0)
    assert _precisions(output) == [("accompaniment", "float32"), ("vocals", "float32")]
    float32 = (output / "stems" / "song" / "vocals.wav").read_bytes()
    assert _run(manifest, output, "--precision", "bfloat16") == (1, 0), "a bfloat16 rerun does not skip float32 stems"
    assert _precisions(output) == [("accompaniment", "bfloat16"), ("vocals", "bfloat16")]
    bfloat16 = (output / "stems" / "song" / "vocals.wav").read_bytes()
    assert bfloat16 != float32
    assert _run(manifest, output, "--precision", "bfloat16") == (0, 1)
    assert _run(manifest, output, "--precision", "auto") == (0, 1), "auto runs as bfloat16 here: the same stems, skipped"
    assert _run(manifest, output, "--precision", "float32") == (1, 0), "nor a float32 rerun bfloat16 stems"
    assert (output / "stems" / "song" / "vocals.wav").read_bytes() == float32, "float32 is exact again"
    assert _precisions(output) == [("accompaniment", "float32"), ("vocals", "float32")]


def test_bfloat16_unets_stay_close_to_float32(two_stems, decoded):
    """The oneDNN bfloat16 U-nets (STFT, masks and inverse STFT in float32) in the same process
    as float32 separators, which stay exact."""
    from stembeam.model.segment_graph import SegmentSeparator
    from stembeam.model.separation import segment_waveform

    config, exact = two_stems
    if precision.effective_precision("bfloat16") != "bfloat16":
        pytest.skip("this CPU has no bfloat16 instructions")
    spans = segment_waveform(decoded(EXAMPLE), 0, config)[None]
    reference = exact.soft(spans)
    reduced = SegmentSeparator(exact._model, config, "bfloat16").soft(spans)
    for k, stem in enumerate(config.instruments):
        snr = snr_db(reference[..., k], reduced[..., k])
        print(f"bfloat16 vs float32 {stem}: SNR {snr:.1f} dB")
        assert 30.0 < snr < 90.0, "bfloat16 differs from float32, a little"
    assert np.array_equal(exact.soft(spans), reference), "float32 stays exact after a bfloat16 separator ran"


def test_bfloat16_from_the_checkpoint_alone_gives_the_keras_models_bits(two_stems, decoded):
    """Where bfloat16 runs, an official checkpoint's U-nets are built from its weights alone,
    without a Keras model (a second of a job's start-up): the same numbers, bit for bit."""
    from stembeam.model.checkpoint import CheckpointWeights
    from stembeam.model.load import load_unets
    from stembeam.model.segment_graph import SegmentSeparator
    from stembeam.model.separation import segment_waveform

    config, exact = two_stems
    assert not isinstance(load_unets("spleeter:2stems", precision="float32")[1], CheckpointWeights), "float32 runs the Keras model"
    if precision.effective_precision("bfloat16") != "bfloat16":
        pytest.skip("this CPU has no bfloat16 instructions")
    loaded_config, weights = load_unets("spleeter:2stems", precision="bfloat16")
    assert isinstance(weights, CheckpointWeights) and loaded_config == config
    spans = segment_waveform(decoded(EXAMPLE), 0, config)[None]
    from_keras = SegmentSeparator(exact._model, config, "bfloat16").soft(spans)
    from_checkpoint = SegmentSeparator(weights, config, "bfloat16").soft(spans)
    assert np.abs(from_keras).max() > 0.01
    assert np.array_equal(from_checkpoint.view(np.uint32), from_keras.view(np.uint32))
    with pytest.raises(TypeError, match="bfloat16"):
        SegmentSeparator(weights, config, "float32")


def test_checkpoint_weights_of_another_model_are_refused(tmp_path):
    """A checkpoint read without Keras is checked as the Keras load checks it: every layer the
    configuration names is there, and every weight of the checkpoint is used."""
    from stembeam.model.checkpoint import CheckpointWeights, checkpoint_prefix, save_official_checkpoint
    from stembeam.model.config import get_config
    from stembeam.model.unet import build_model, reduced_precision_unets
    from tests.conftest import MODELS

    four = get_config("spleeter:4stems")
    prefix = save_official_checkpoint(build_model(four), str(tmp_path / "model"))
    with pytest.raises(ValueError, match=r"does not match the model: unused \['batch_normalization_24/beta'"):
        reduced_precision_unets(CheckpointWeights(prefix), get_config("spleeter:2stems"), "float32")
    two = CheckpointWeights(checkpoint_prefix(os.path.join(MODELS, "2stems")))
    with pytest.raises(ValueError, match="does not match the model: no weights of layer batch_normalization_29$"):
        reduced_precision_unets(two, four, "float32")
    narrow = dataclasses.replace(get_config("spleeter:2stems"), conv_n_filters=(8, 16, 32, 64, 128, 256))
    with pytest.raises(ValueError, match=r"does not match the model: convolutions of \[16, 32, 64, 128, 256, 512\] filters"):
        reduced_precision_unets(CheckpointWeights(two.prefix), narrow, "float32")


@pytest.mark.slow
def test_bfloat16_quality_on_cc0_multitrack(two_stems, decoded):
    """`make quality`: per track and stem, global SDR and museval SDR (BSS Eval v4, median of 1 s
    windows) of float32 and bfloat16 stems against the true stems, and the SNR of bfloat16
    against float32; every track's SDR, vocals and accompaniment alike, moves by at most 0.05 dB."""
    import museval

    from stembeam.model.segment_graph import SegmentSeparator
    from stembeam.model.separation import separate_waveform
    from tests.conftest import CC0, CC0_SONGS

    config, exact = two_stems
    if precision.effective_precision("bfloat16") != "bfloat16":
        pytest.skip("this CPU has no bfloat16 instructions")
    reduced = SegmentSeparator(exact._model, config, "bfloat16")
    print("\ntrack        stem           global SDR f32 / bf16 (change)   museval SDR f32 / bf16 (change)   SNR bf16 vs f32")
    changes = {"global": [], "museval": []}
    for song in CC0_SONGS:
        mix = decoded(os.path.join(CC0, song, "mixture.flac"))
        vocals = decoded(os.path.join(CC0, song, "vocals.flac"))
        references = {"vocals": vocals, "accompaniment": mix - vocals}
        stems = {name: separate_waveform(mix, separator, batch_size=4) for name, separator in (("f32", exact), ("bf16", reduced))}
        museval_sdr = {
            name: np.nanmedian(museval.evaluate(np.stack(list(references.values())), np.stack([s[k] for k in references]), win=44100, hop=44100)[0], axis=1)
            for name, s in stems.items()
        }
        for k, (stem, reference) in enumerate(references.items()):
            glob = {name: snr_db(reference, s[stem]) for name, s in stems.items()}
            mus = {name: float(museval_sdr[name][k]) for name in stems}
            changes["global"].append(glob["bf16"] - glob["f32"])
            changes["museval"].append(mus["bf16"] - mus["f32"])
            print(f"{song:12s} {stem:14s} {glob['f32']:6.2f} / {glob['bf16']:6.2f} ({glob['bf16'] - glob['f32']:+.3f})"
                  f"          {mus['f32']:6.2f} / {mus['bf16']:6.2f} ({mus['bf16'] - mus['f32']:+.3f})"
                  f"          {snr_db(stems['f32'][stem], stems['bf16'][stem]):5.1f} dB")
    largest = {kind: max(values, key=abs) for kind, values in changes.items()}
    print(f"largest change bf16 - f32: global SDR {largest['global']:+.4f} dB, museval SDR {largest['museval']:+.4f} dB (limit 0.05 dB on every track and stem)")
    assert all(abs(change) <= 0.05 for values in changes.values() for change in values)
