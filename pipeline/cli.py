"""The ``stembeam`` command: ``separate``, ``pipeline``, ``evaluate``, ``prepare-dataset``, ``train``, ``export``, ``report``."""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback

from stembeam.pipeline.startup import collector_paused, hide_keras_optionals
from stembeam.pipeline import console
from stembeam.pipeline.flags import (
    JOB_HELP, add_allow_failures_arg, add_console_args, add_decoding_args, add_precision_arg, add_stem_format_args, help_requested,
)

# Exit statuses: 0 every file or row done; 1 the command failed (a bad option, a model or job
# that failed: one "error:" line); 2 no such model; 3 it ran, but some files or rows failed.
ROWS_FAILED = 3



def _separate_problem(args) -> str | None:
    """What is wrong with ``stembeam separate``'s options, naming the option; None if nothing."""
    from stembeam.model.decode import check_span
    from stembeam.model.encode import check_bit_depth, check_bitrate
    from stembeam.model.separator import check_filename_format

    try:
        check_span(args.offset, args.duration, "-s/--offset", "-d/--duration")
    except ValueError as error:
        return str(error)
    if args.mwf_block_frames is not None and not 0 <= args.mwf_block_frames <= 512:
        return f"--mwf-block-frames {args.mwf_block_frames}: must be between 0 (the whole track) and 512"
    try:
        check_bit_depth(args.codec, args.bit_depth)
    except ValueError as error:
        return f"--bit_depth {args.bit_depth} with --codec {args.codec}: {error}"
    try:
        check_bitrate(args.codec, args.bitrate)
    except ValueError as error:
        return f"-b/--bitrate: {error}"
    if args.filename_format is not None:
        try:
            check_filename_format(args.filename_format)
        except ValueError as error:
            return f"-f/--filename_format: {error}"
    return None


def _separate(args) -> int:
    problem = _separate_problem(args)
    if problem is not None:
        print(f"error: stembeam separate: {problem}", file=sys.stderr)
        return 1
    from stembeam.model.decode_worker import start_tfio_worker

    start_tfio_worker(args.files)  # an MP3/Ogg decoder's TensorFlow import overlaps the command's own
    with _startup():
        from stembeam.pipeline.separate import DEFAULT_FILENAME_FORMAT, FilenameFormatError, SeparateSettings, separate_files

        if _TRICKS["on"]:
            import stembeam.model.load  # noqa: F401 - the model stack, while the collector is paused

    settings = SeparateSettings(
        model=args.params_filename, model_dir=args.model_dir, mwf=args.mwf, mwf_block_frames=args.mwf_block_frames,
        precision=args.precision, residual=args.residual, codec=args.codec, bitrate=args.bitrate,
        filename_format=args.filename_format or DEFAULT_FILENAME_FORMAT, bit_depth=args.bit_depth,
        offset=args.offset, duration=args.duration, strict=args.strict_decoding,
    )
    try:
        errors = separate_files(args.files, args.output_path, settings, progress=not args.no_progress)
    except FilenameFormatError as error:
        print(f"error: {error}; nothing written", file=sys.stderr)
        return 1
    done = len(args.files) - len(errors)
    print(f"separated {done} of {len(args.files)} files into {args.output_path}", file=sys.stderr)
    return ROWS_FAILED if errors and not args.allow_failures else 0


def _export(args) -> int:
    from stembeam.model.export import export_model
    from stembeam.model.load import load_model

    config, model = load_model(args.params_filename, args.model_dir)
    export_model(model, config, args.output_path)
    print(f"exported {config.name} to {args.output_path}", file=sys.stderr)
    return 0


def _write_report(args) -> int:
    from stembeam.pipeline.report import run

    return run(args)


def _job(module: str, argv, loads_model: bool) -> int:
    """Import a job's module as the command does (under its start-up tricks, with Keras and
    TensorFlow when the job loads a model and is not asked for --help), then run it."""
    import importlib

    with _startup():
        run = importlib.import_module(module).run
        if loads_model and _TRICKS["on"] and not {"-h", "--help"} & set(argv):
            importlib.import_module("stembeam.model.load")  # the model stack, while the collector is paused
    return run(argv)


def _pipeline(argv) -> int:
    # The model stack is left to the job: it starts its MP3/Ogg decode worker first, whose own
    # TensorFlow import then overlaps the job's (measured: about 1 s sooner on the example).
    return _job("stembeam.pipeline.corpus", argv, loads_model=False)


def _evaluate(argv) -> int:
    return _job("stembeam.pipeline.evaluation", argv, loads_model=True)


def _prepare(argv) -> int:
    return _job("stembeam.pipeline.prepare", argv, loads_model=False)


def _train(argv) -> int:
    return _job("stembeam.pipeline.train", argv, loads_model=True)


def _features(argv) -> int:
    return _job("stembeam.pipeline.features", argv, loads_model=False)


JOBS = {"features": _features, "pipeline": _pipeline, "evaluate": _evaluate, "prepare-dataset": _prepare, "train": _train}


def build_parser() -> argparse.ArgumentParser:
    from stembeam.model.encode import CODECS  # numpy only: --help stays quick

    from stembeam.pipeline.spelling import Parser  # both spellings of every option, "did you mean"

    parser = Parser(prog="stembeam", description="Music source separation (Spleeter models) on Apache Beam.")
    commands = parser.add_subparsers(dest="command", required=True)

    sep = commands.add_parser("separate", help="separate audio files (Spleeter-compatible)")
    sep.add_argument("files", nargs="+", metavar="FILE")
    sep.add_argument("-p", "--params_filename", "--model", default="spleeter:2stems", help="model name (spleeter:2stems|4stems|5stems, -16kHz: to 16 kHz), folder or CONFIG.json (default: spleeter:2stems)")
    sep.add_argument("--model-dir", default=None, help="folder holding the model (overrides the name's lookup)")
    sep.add_argument("-o", "--output_path", default="separated_audio", help="output folder")
    sep.add_argument("-c", "--codec", default="wav", choices=sorted(CODECS))
    sep.add_argument("-b", "--bitrate", default="128k")
    sep.add_argument(
        "-f", "--filename_format", default=None, help="keys: {filename} {instrument} {codec} {foldername} (default: {filename}/{instrument}.{codec})"
    )
    sep.add_argument("-s", "--offset", type=float, default=0.0, help="start offset in seconds")
    sep.add_argument("-d", "--duration", type=float, default=None, help="seconds to separate (default: the whole file)")
    sep.add_argument("--mwf", action="store_true", help="multichannel Wiener filtering (norbert)")
    sep.add_argument(
        "--mwf-block-frames", "--mwf_block_frames", type=int, default=None, metavar="FRAMES",
        help="frames per Wiener-filter block (default: one segment, 512; 0: the whole track at once, as Spleeter)",
    )
    sep.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_stem_format_args(sep)
    add_decoding_args(sep)
    add_precision_arg(sep)
    add_allow_failures_arg(sep)
    add_console_args(sep)
    sep.set_defaults(handler=_separate)

    exp = commands.add_parser("export", help="export a model as model.keras + SavedModel")
    exp.add_argument("-p", "--params_filename", "--model", default="spleeter:2stems")
    exp.add_argument("--model-dir", default=None)
    exp.add_argument("-o", "--output_path", required=True)
    add_console_args(exp)
    exp.set_defaults(handler=_export)

    rep = commands.add_parser(
        "report", help="write OUTPUT/report/: a web page of a finished output (runs, failures, corpus plots, every track's stems to hear)",
        description="Write OUTPUT/report/index.html (and its data) from the tables of a finished `stembeam pipeline` or `stembeam features` "
        "output, local or gs://. The folder opens in a browser from disk, with no server and no network; needs `pip install 'stembeam[report]'`.",
    )
    rep.add_argument("output", metavar="OUTPUT", help="the output folder (its metadata/ and/or features/ tables)")
    add_console_args(rep)
    rep.set_defaults(handler=_write_report)

    commands.add_parser("pipeline", help="the corpus job on Apache Beam (see `stembeam pipeline --help`)", add_help=False)
    commands.add_parser("evaluate", help="museval scores of a dataset with ground truth, as a Beam job (see `stembeam evaluate --help`)", add_help=False)
    commands.add_parser("prepare-dataset", help="training TFRecords from isolated sources, as a Beam job", add_help=False)
    commands.add_parser("features", help="MIR features (loudness, tempo, vocals, key...) of existing audio, as a Beam job", add_help=False)
    commands.add_parser("train", help="train or fine-tune a model on prepared records (resumable)", add_help=False)
    parser.commands = {"separate": sep, "export": exp, "report": rep}
    return parser


def _parse(argv: list):
    """The arguments of ``stembeam separate|export|report ...``, parsed by the command's own
    parser (so an unknown option gets that command's "did you mean"); argparse's exits (usage,
    --help) as argparse makes them."""
    parser = build_parser()
    command = parser.commands.get(argv[0]) if argv else None
    if command is None:
        return parser.parse_args(argv)
    args = command.parse_args(argv[1:])
    args.command = argv[0]
    return args


def main(argv=None) -> int:
    """Run a subcommand: 0 on success; 1 with one ``error:`` line for a bad command line, a bad
    manifest or a failed job (the traceback too with --verbose); 2 for a model not found; 3
    when it ran but some files or rows failed (0 with --allow_failures)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command, rest = (argv[0], argv[1:]) if argv else (None, [])
    if command in JOB_HELP and help_requested(rest, command):
        return 0  # before any import of TensorFlow or Beam: help is instant
    if command not in JOBS:
        args = _parse(argv)  # --help and usage errors exit here, as quickly
    console.setup(*console.wanted(argv))
    _precision_hint(command, rest)
    try:
        if command in JOBS:
            return JOBS[command](rest)
        return args.handler(args)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            raise  # argparse's own exits (usage printed already)
        _report(stop)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - one line for the user, the traceback with --verbose
        resolve = sys.modules.get("stembeam.model.resolve")  # imported by whatever loads a model (not by --help)
        if resolve is not None and isinstance(error, resolve.ModelNotFoundError):
            print(f"error: {error}", file=sys.stderr)
            return 2
        _report(error)
        return 1


def _precision_hint(command, rest) -> None:
    """One line for a person at a terminal who separates with the float32 default where
    bfloat16 is the fast path (a CPU with AMX); never in scripts or logs."""
    if command in ("separate", "pipeline", "evaluate") and not any(arg.startswith("--precision") for arg in rest) and sys.stderr.isatty():
        from stembeam.model.precision import faster_precision_hint

        hint = faster_precision_hint()
        if hint:
            print(hint, file=sys.stderr, flush=True)


def _report(error: BaseException) -> None:
    if console.verbose():
        traceback.print_exception(error)
    print(console.error_line(error), file=sys.stderr, flush=True)


def exit_now(code: int) -> None:
    """End the process with ``code`` once the command is done: atexit handlers run and the
    standard streams are flushed, but the interpreter's teardown is skipped (TensorFlow's and
    Beam's C++ state took about a second to tear down after every job; the OS frees it at once)."""
    import logging

    from stembeam._compat import run_exit_handlers

    run_exit_handlers()  # what a normal exit runs first
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# The start-up tricks (pipeline/startup.py) are the command's: main() called in a process of
# someone else's (a test, a notebook) leaves that process as it was.
_TRICKS = {"on": False}


def _startup():
    """While the command imports a job's modules: the collector paused, if this is the command."""
    return collector_paused() if _TRICKS["on"] else contextlib.nullcontext()


def enable_startup_tricks() -> None:
    """Make this process the ``stembeam`` command's own: Keras' optional imports hidden, the
    collector paused while modules import (pipeline/startup.py)."""
    _TRICKS["on"] = True
    hide_keras_optionals()


def entry() -> None:
    """The ``stembeam`` program (console script, ``python -m stembeam``): main() as the
    whole life of the process."""
    enable_startup_tricks()
    try:
        code = main()
    except SystemExit as stop:  # argparse's usage errors and --help
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if not isinstance(stop.code, (int, type(None))):
            print(stop.code, file=sys.stderr)
    exit_now(code)


if __name__ == "__main__":
    entry()
