"""What the Beam job commands share: options (unknown ones refused), local parallelism, required
flags, progress while the job runs, the closing summary."""
from __future__ import annotations

import difflib
import os

from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions, SetupOptions, StandardOptions

from stembeam._compat import argparse_option_strings, beam_add_options, beam_argument_parser

from stembeam.pipeline.flags import JOB_HELP, help_requested  # noqa: F401 - re-exported for the jobs

# Runners that hand options Python does not know to a job server of another language (Flink's,
# Spark's, Prism's): there an unknown option may be the runner's own and is passed on.
FORWARDING_RUNNERS = ("PortableRunner", "FlinkRunner", "SparkRunner", "PrismRunner")
# How close (difflib ratio) an unknown option must be to a known one to be taken for its typo on
# those runners (Beam's own suggestions use 0.6, which any long option name reaches).
TYPO_CUTOFF = 0.85


class UsageError(SystemExit):
    """A command line (or manifest) the job cannot run with: one line, exit code 1 (a
    SystemExit, so ``python -m stembeam.pipeline`` prints it and exits 1 as well)."""


def _runner_name(argv) -> str:
    parser = beam_argument_parser()
    beam_add_options(StandardOptions, parser)
    runner = parser.parse_known_args(argv)[0].runner
    return (runner or "DirectRunner").rsplit(".", 1)[-1]


def _load_runner_options(runner: str) -> None:
    """A runner outside Beam's core registers its options when imported (e.g. DaskRunner)."""
    if runner in ("DirectRunner", "direct", "BundleBasedDirectRunner", "SwitchingDirectRunner"):
        return
    try:
        from apache_beam.runners.runner import create_runner

        create_runner(runner)
    except Exception:  # noqa: BLE001 - an unknown runner is reported by Beam when the job starts
        pass


def known_options(argv, name: str) -> list:
    """Every option the job ``name`` takes: its own (pipeline/flags.py) and Beam's (its options
    classes, the chosen runner's included)."""
    return argparse_option_strings(_job_parser(argv, name))


def _job_parser(argv, name: str):
    _load_runner_options(_runner_name(argv))
    parser = beam_argument_parser()
    classes = {str(c): c for c in PipelineOptions.__subclasses__() if c.__module__.startswith("apache_beam")}
    for cls in classes.values():
        beam_add_options(cls, parser)
    for add in JOB_HELP[name][1]:
        add(parser)
    return parser


def unknown_options(argv, name: str) -> list:
    """Messages for each argument neither the job ``name`` (pipeline/flags.py) nor Beam (its
    options classes, the chosen runner's included) knows, with Beam's own suggestion: the same
    parser and the same difflib match Beam logs as "Discarding unparseable args" / "Did you mean"."""
    runner = _runner_name(argv)
    parser = _job_parser(argv, name)
    _, unknown = parser.parse_known_args(argv)
    known = argparse_option_strings(parser)
    problems = []
    for arg in unknown:
        if arg == "--":
            break
        if not arg.startswith("-"):
            if not problems:
                problems.append(f"unexpected argument {arg!r}")
            continue
        flag = arg.split("=", 1)[0]
        match = difflib.get_close_matches(flag, known)
        if runner in FORWARDING_RUNNERS and not difflib.get_close_matches(flag, known, cutoff=TYPO_CUTOFF):
            continue  # not a typo of a known option: the job server's own (Beam passes it on)
        problems.append(f"unknown option {flag}" + (f" (did you mean {match[0]}?)" if match else ""))
    return problems


def parse(argv, name: str) -> PipelineOptions:
    """Beam options of ``stembeam NAME`` from ``argv`` (UsageError for an unknown option), local
    parallelism defaulted."""
    from stembeam.pipeline.spelling import respell

    argv = respell(list(argv), known_options(argv, name))
    problems = unknown_options(argv, name)
    if problems:
        raise UsageError(f"stembeam {name}: {'; '.join(problems)}")
    options = PipelineOptions(argv)
    options.view_as(SetupOptions).save_main_session = False
    default_local_parallelism(options, argv)
    return options


def wants_report(argv, name: str) -> bool:
    """Whether ``stembeam NAME argv`` asks for ``--report``; if so, that the report can be written
    (UsageError naming the missing extra now, not after the job)."""
    import argparse

    from stembeam.pipeline.flags import add_report_arg

    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    add_report_arg(parser)
    if not parser.parse_known_args(list(argv))[0].report:
        return False
    from stembeam.pipeline.report import ReportError, check_available

    try:
        check_available()
    except ReportError as error:
        raise UsageError(f"stembeam {name} --report: {error}") from None
    return True


def require(prog: str, flags: dict) -> None:
    """UsageError naming every required flag (``{"--flag": value}``) that has no value."""
    missing = [flag for flag, value in flags.items() if not value]
    if missing:
        raise UsageError(f"{prog}: {' and '.join(missing)} required (see --help)")


def run_with_progress(pipeline, options: PipelineOptions, output: str, total: int, lengths: dict):
    """Run ``pipeline`` and wait for it, showing the progress of its marks under ``output``
    (transforms/progress.py; cleared first): ``(result, last progress Status)``."""
    from stembeam.pipeline.options import JobOptions
    from stembeam.pipeline.progress import Monitor
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    from stembeam.transforms import storage
    from stembeam.transforms.progress import progress_root, read_tally

    root = progress_root(output)
    storage.delete([root])
    interval = options.view_as(JobOptions).progress_interval
    if options.view_as(GoogleCloudOptions).template_location:
        interval = 0  # the job is only described, not run
    with Monitor(lambda: read_tally(root), total, lengths, interval) as monitor:
        result = pipeline.run()
        result.wait_until_finish()
    storage.delete([root])
    return result, monitor.status


def table_staging(output: str, run_id, options: PipelineOptions, check_only: bool = False):
    """Where the job's Beam file sinks write before their files are moved into ``output``
    (storage.staging_folder); UsageError naming --temp_location when a remote output with glob
    characters has none (or one with glob characters itself). ``check_only``: that check alone,
    nothing created (before the job takes its output)."""
    from apache_beam.options.pipeline_options import GoogleCloudOptions

    from stembeam.transforms import storage

    temp_location = options.view_as(GoogleCloudOptions).temp_location
    try:
        if check_only:
            return storage.check_staging(output, temp_location)
        return storage.staging_folder(output, run_id, temp_location)
    except ValueError as error:
        raise UsageError(str(error)) from None


def drop_staging(folder: str) -> None:
    """Remove a staging folder once the job's files were moved out of it (or the job failed)."""
    from stembeam.transforms import storage

    try:
        storage.delete([folder])
    except Exception:  # noqa: BLE001 - under _work/ the next run sweeps it; elsewhere it is temporary space
        pass


def dataset_tracks(dataset: str, split, limit, needs_references: str | None = None) -> int:
    """How many rows (tracks and unusable entries) the job over ``dataset`` will report, listed
    by the launcher before it starts; UsageError (one line) when there is nothing to read, or,
    for the job ``needs_references`` names, when no track has a reference stem."""
    from stembeam.transforms.dataset import DatasetTrack, list_dataset
    from stembeam.transforms.manifest import ManifestError

    try:
        found = list(list_dataset(dataset, split))
    except (ManifestError, ValueError) as error:
        raise UsageError(str(error)) from None
    tracks = [item for item in found if isinstance(item, DatasetTrack)]
    if not tracks and len(found) == 1:
        raise UsageError(found[0][2])
    if needs_references and tracks and not any(track.stems for track in tracks):
        raise UsageError(
            f"{needs_references}: {dataset} has no reference stems (folders <track>/{{vocals,drums,bass,other}}.*, or manifest columns "
            "vocals, drums, bass, other, piano, accompaniment): nothing to score; to separate it, run stembeam pipeline --manifest"
        )
    return min(len(tracks), limit if limit is not None else len(tracks)) + len(found) - len(tracks)


def in_process(options: PipelineOptions) -> bool:
    """Whether the workers run in this process (the local runner, unless multi_processing)."""
    from stembeam.launch.local import is_direct

    return is_direct(options) and options.view_as(DirectOptions).direct_running_mode != "multi_processing"


def default_local_parallelism(options: PipelineOptions, argv) -> None:
    """On the DirectRunner, unless told otherwise, overlap decoding and writing with inference
    (multi_threading, one worker per core): measured 0.50x vs 0.38x of the official graph's
    throughput with the DirectRunner's single-threaded default (tests/benchmarks/throughput.py)."""
    from stembeam.launch.local import is_direct

    if not is_direct(options):
        return
    direct = options.view_as(DirectOptions)
    if not any(a.startswith("--direct_running_mode") for a in argv):
        direct.direct_running_mode = "multi_threading"
    if not any(a.startswith("--direct_num_workers") for a in argv):
        direct.direct_num_workers = os.cpu_count() or 1
