"""The Beam jobs' own flags as plain argparse functions (no Beam import), so that ``--help``
answers at once; pipeline/options.py registers the same functions with Beam's PipelineOptions."""
from __future__ import annotations

import argparse
import functools

from stembeam._compat import argparse_options

BEAM_EPILOG = "Any Beam pipeline option is accepted too (--runner, --project, --direct_num_workers, ...); an unknown one is an error."


def add_console_args(parser) -> None:
    """What every subcommand takes: how much to say."""
    parser.add_argument("-v", "--verbose", action="store_true", default=False, help="show every library's logs and warnings, and tracebacks")
    parser.add_argument(
        "--log_level", "--log-level", default=None, type=str.upper, choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        help="log level of every library (default: only stembeam's own lines)",
    )


def add_job_args(parser) -> None:
    """What every Beam job takes besides its own flags: console, progress, exit status."""
    add_console_args(parser)
    add_allow_failures_arg(parser)
    parser.add_argument(
        "--progress_interval", "--progress-interval", type=float, default=30.0,
        help="seconds between progress lines when stderr is not a terminal (default 30; a terminal gets a bar updated in place); 0: none",
    )


def add_pipeline_args(parser, corpus: bool = True) -> None:
    """The corpus job's flags (``stembeam pipeline``; evaluate takes them too, all but
    ``--manifest``: ``corpus`` False)."""
    if corpus:
        parser.add_argument("--manifest", default=None, help="CSV / JSONL / Parquet manifest (local or gs://)")
    parser.add_argument("--output", default=None, help="output root: stems/, metadata/ (local or gs://)")
    parser.add_argument("--model", default="spleeter:2stems", help="model name (spleeter:2stems|4stems|5stems, -16kHz: to 16 kHz) or folder")
    parser.add_argument("--model_dir", "--model-dir", default=None, help="folder holding the model")
    parser.add_argument("--mwf", action="store_true", default=False, help="multichannel Wiener filter (norbert)")
    parser.add_argument(
        "--mwf_block_frames", "--mwf-block-frames", type=int, default=512,
        help="frames per Wiener-filter block, 1..512 (default 512: one segment, 11.9 s)",
    )
    parser.add_argument("--codec", default="wav", help="wav, flac, mp3, ogg, m4a or wma")
    parser.add_argument("--bitrate", default="128k")
    add_stem_format_args(parser)
    add_decoding_args(parser)
    parser.add_argument("--limit", type=int, default=None, help="only the first N manifest rows")
    parser.add_argument(
        "--batch_size", type=int, default=2,
        help="segments per inference batch (exact; may mix tracks); peak memory grows with it, the stems do not change",
    )
    add_precision_arg(parser)
    parser.add_argument("--no_skip_existing", dest="skip_existing", action="store_false", default=True, help="separate finished tracks again")
    parser.add_argument(
        "--inference_accelerator", default=None,
        help="resource hint for the separation step (decoding, inference, Wiener filter, writing the stems), e.g. 'type:nvidia-tesla-t4;count:1;install-nvidia-driver' "
        "(launch/dataflow.py sets it)",
    )


def add_allow_failures_arg(parser) -> None:
    """--allow_failures: the exit status of a run whose rows (files) partly failed."""
    parser.add_argument(
        "--allow_failures", "--allow-failures", action="store_true", default=False,
        help="exit 0 when the run finished but some rows (files) failed (default: exit 3 then; 1 when the run itself failed)",
    )


def add_decoding_args(parser) -> None:
    """How damaged sources are taken (``stembeam pipeline``, ``evaluate`` and ``separate``)."""
    parser.add_argument(
        "--strict_decoding", "--strict-decoding", action="store_true", default=False,
        help="a damaged source (decoder errors, or a length other than its header's) is an error instead of stems "
        "with decode_warnings in the metadata (the default, which keeps what decodes)",
    )


def add_stem_format_args(parser) -> None:
    """--bit_depth and --residual (``stembeam pipeline``, ``evaluate`` and ``separate``)."""
    parser.add_argument(
        "--bit_depth", "--bit-depth", type=int, default=None, choices=(16, 24, 32),
        help="bits per sample of the stems: wav 16 (default), 24 or 32 (float, keeps peaks above full scale); flac 24 (default) or 16",
    )
    parser.add_argument(
        "--residual", action="store_true", default=False,
        help="the last stem (accompaniment, other) is the mixture minus the other stems: the stems sum to the mixture",
    )


def add_precision_arg(parser) -> None:
    """--precision of the U-nets (model/precision.py), for separate, pipeline and evaluate."""
    parser.add_argument(
        "--precision", default="float32", choices=("float32", "bfloat16", "auto"),
        help="float32 (default: exact, the same stems on every run), bfloat16: the U-nets in bfloat16 on a CPU with AVX512_BF16 or "
        "AMX (oneDNN), Keras mixed precision on a GPU; STFT, masks and inverse STFT stay float32 (SDR within 0.05 dB of float32). "
        "A CPU without bfloat16 says so and runs float32. auto: bfloat16 on a CPU with AMX or a GPU, else float32",
    )


def add_evaluate_args(parser) -> None:
    """The evaluation job's own flags (it also takes add_pipeline_args': --output, --model, --mwf, ...)."""
    parser.add_argument(
        "--dataset", default=None,
        help="folder of <track>/{mixture,vocals,...}.wav|flac (optionally under train/ test/), of *.stem.mp4 files, or a manifest "
        "(uri + one column per stem)",
    )
    parser.add_argument(
        "--split", default=None,
        help="split to evaluate: default 'test' when the dataset has one (MUSDB's scores are on its test set), else every track; 'all' for every track",
    )
    parser.add_argument(
        "--dataset_root", "--dataset-root", default=None,
        help="folder a manifest's relative paths start from (default: the manifest's folder; for Spleeter's dataset CSV, its -d folder)",
    )
    parser.add_argument(
        "--estimates", default=None,
        help="score existing stems {estimates}/{track_id}/{stem}.* (e.g. a pipeline's stems/ folder) instead of separating",
    )


def add_prepare_args(parser) -> None:
    """The training-data job's own flags (``--dataset`` is add_evaluate_args', ``--output`` and
    ``--limit`` add_pipeline_args': Beam parses every options class into one parser, so a flag
    defined twice would take one definition's default)."""
    parser.add_argument("--model_config", "--model-config", default="spleeter:2stems", help="spleeter:2stems (default)|4stems|5stems (-16kHz: to 16 kHz) or a CONFIG.json")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random crops and augmentation")
    parser.add_argument("--repeat", type=int, default=1, help="random crops per segment length of audio")
    parser.add_argument("--augment", action="store_true", default=False, help="random gain per stem and left/right swap (mixture = sum of stems)")
    parser.add_argument(
        "--mixture_from_stems", "--mixture-from-stems", action="store_true", default=False,
        help="use the sum of the stems as the mixture (for files whose mixture is not that sum)",
    )
    parser.add_argument("--shards", type=int, default=4, help="TFRecord files per split")


def add_feature_args(parser, corpus: bool = True) -> None:
    """The MIR feature flags of ``stembeam pipeline --features`` and (all but ``--features``:
    ``corpus`` False) ``stembeam features``."""
    if corpus:
        parser.add_argument("--features", action="store_true", default=False, help="also compute MIR features into {output}/features/")
    parser.add_argument("--vocal_pitch", "--vocal-pitch", action="store_true", default=False, help="features: vocal f0 (pYIN) and its summary")
    parser.add_argument("--feature_frames", "--feature-frames", action="store_true", default=False, help="features: also write per-frame series (frames-*.parquet)")
    parser.add_argument("--feature_plots", "--feature-plots", action="store_true", default=False, help="features: one PNG per track under {output}/features/plots/")


def add_report_arg(parser) -> None:
    """--report of ``stembeam pipeline`` and ``stembeam features``."""
    parser.add_argument(
        "--report", action="store_true", default=False,
        help="after the job, write {output}/report/: a web page of the output (as `stembeam report OUTPUT`; needs stembeam[report])",
    )


def add_features_input_args(parser) -> None:
    parser.add_argument(
        "--input", default=None,
        help="stembeam features: a stembeam pipeline output (has metadata/), a folder of <track>/<source>.wav|flac|mp3... folders, "
             "or a flat folder of audio files (each a mixture-only track)",
    )


def _features_shared(parser) -> None:
    add_features_input_args(parser)
    parser.add_argument("--output", help="output root: features/ (local or gs://)")


def _prepare_shared(parser) -> None:
    # prepare-dataset's help shows only the shared flags it uses.
    parser.add_argument("--dataset", help="folder (MUSDB layout, optionally with train/ test/; or *.stem.mp4) or a manifest with one column per stem")
    parser.add_argument("--output", help="folder for train-*.tfrecord, validation-*.tfrecord, stats.json, config.json (local or gs://)")
    parser.add_argument("--limit", type=int, help="only the first N tracks")


# name -> (description, flag adders): what `stembeam NAME --help` shows, without importing the job.
JOB_HELP = {
    "pipeline": ("Separate every track of a manifest on Apache Beam.", (add_pipeline_args, add_feature_args, add_report_arg, add_job_args)),
    "features": (
        "MIR features (loudness, tempo, vocals, key...) of existing audio on Apache Beam.",
        (_features_shared, functools.partial(add_feature_args, corpus=False), add_report_arg, add_job_args),
    ),
    "evaluate": (
        "Separate a dataset with ground-truth stems (or read existing estimates) and score it with museval (BSS Eval v4, 1 s windows). "
        "A manifest is given as --dataset. Spleeter's flags work too: -p MODEL (--model), --mus_dir DIR (--dataset), -o OUT (--output).",
        (add_evaluate_args, functools.partial(add_pipeline_args, corpus=False), add_job_args),
    ),
    "prepare-dataset": (
        "Training examples (TFRecords) from a dataset of isolated sources, as a Beam job.",
        (_prepare_shared, add_prepare_args, add_job_args),
    ),
}


def help_requested(argv, name: str) -> bool:
    """Print ``stembeam NAME``'s help when ``argv`` asks for it; True if it did."""
    if not any(a in ("-h", "--help") for a in argv):
        return False
    description, adders = JOB_HELP[name]
    parser = argparse.ArgumentParser(prog=f"stembeam {name}", description=description, epilog=BEAM_EPILOG)
    for add in adders:
        add(parser)
    parser.print_help()
    return True


def given_flags(argv, name: str) -> list:
    """The flags of ``stembeam NAME`` that ``argv`` sets to other values than their defaults, as
    ``--flag [value]`` strings (Beam's own options and the console's left out): what a report
    shows of the run's options."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    for add in JOB_HELP[name][1]:
        if add is not add_job_args:
            add(parser)
    given, defaults = parser.parse_known_args(list(argv))[0], parser.parse_known_args([])[0]
    shown = []
    for strings, dest in argparse_options(parser):
        value = getattr(given, dest, None)
        if value == getattr(defaults, dest, None):
            continue
        shown.append(strings[0] if isinstance(value, bool) else f"{strings[0]} {value}")
    return shown
